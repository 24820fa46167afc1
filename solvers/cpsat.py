"""The placement-and-routing problem on OR-Tools CP-SAT, which solves integer models only.

Integer scaling:

- routing ``x[c, d]`` in thousandths of a request (``REQUEST_UNITS``); each class's total
  lies between its count rounded down and up, and what the rounding left (under 1e-3
  request per class) is placed exactly, in the replica time left on the class's deployments;
- replica time in a unit chosen per problem so that the smallest nonzero replica time of a
  routing unit is ``TIME_PRECISION`` units (a rounding error below 5e-7 of any replica's
  usage);
- peak power in nanowatts; quality margins in units of 1e-7;
- sums that could overflow CP-SAT's 64-bit integers are refused with a pointer to HiGHS;
- energy in microjoules (``ENERGY_UNITS_PER_J``), rounded to nearest: the objective is off
  the exact energy of the same plan by at most ``scaling_error_j`` (0.5 mJ per request
  plus 0.5 uJ per replica, and what moving each routed class onto the grid can cost), and
  the plan's reported ``objective_j`` is recomputed exactly.

Two models. The first widens each rounded limit by the most its rounding can take off an
exact plan, and replica time and quality by one routing unit per pair besides, so it holds
every exact plan, those exactly at a limit or split between thousandths included; its
replicas are routed by the exact LP, and its bound is the one reported. Where that LP cannot
serve them (the widening let a replica take a little too much), the strict model, each
limit rounded to nearest so its plans hold every limit within 5e-7, runs in the time left.

Finer routing and energy units (millionths of a request, nanojoules) left CP-SAT with no
bound on the bundled default in 30 s; hundredths of a request gave the same plan and bound.
CP-SAT suits small problems: on the bundled default (24 classes x 350 deployments) it keeps
the baseline hint, 14 % above HiGHS's optimum, after 20 s.

The routing CP-SAT returns is then replaced by the exact routing LP on its replicas
(``solvers.routing.solve_routing``, as ``plan --replicas`` solves it), which costs no
more and holds every limit exactly; where that LP fails, the grid routing with the rest
placed is kept.

``bound_j`` is CP-SAT's bound on the scaled model: it bounds the plans CP-SAT can return,
within the scaling error of the exact optimum.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time

import numpy as np

from solvers.errors import InfeasibleError, NoSolutionError, SolverError
from solvers.formulation import replica_upper_bounds
from solvers.milp import (
    baseline_start,
    dominated_deployments,
    relative_gap,
    status_for_gap,
)
from solvers.problem import Problem, Solution
from solvers.routing import solve_routing

REQUEST_UNITS = 1000
"""Routing units per request."""
TIME_PRECISION = 10**6
"""Time units in the smallest nonzero replica time of one routing unit. At 10**7 CP-SAT
left M seed 1 at a 9.8 % gap after 60 s, where 10**6 proves 0.3 % in 13 s."""
INT_LIMIT = 2**62
"""Largest sum a CP-SAT linear expression may reach here (int64 with headroom)."""
ENERGY_UNITS_PER_J = 10**6
POWER_UNITS_PER_W = 10**9
QUALITY_UNITS = 10**7
CPSAT_SEED = 0
"""CP-SAT's random seed; with one worker a run repeats exactly."""


def scaling_error_j(problem: Problem) -> float:
    """Most CP-SAT's optimum can differ from the exact optimum through scaling: energy
    rounding, and moving each routed class by up to one routing unit per deployment onto
    the grid."""
    requests = float(problem.demand.sum())
    replicas = float(replica_upper_bounds(problem).sum())
    grid_j = float(np.where(problem.eligible(), problem.energy_j, 0.0).sum()) / REQUEST_UNITS
    return 0.5 / ENERGY_UNITS_PER_J * (requests * REQUEST_UNITS + replicas) + grid_j


def configured_solver(time_left_s: float, gap_rel: float, workers: int):
    """A CP-SAT solver with our limits, seed and hint repair (a hint that breaks a rounded
    limit is mended rather than dropped)."""
    from ortools.sat.python import cp_model

    solver = cp_model.CpSolver()
    solver.parameters.max_time_in_seconds = max(time_left_s, 0.0)
    solver.parameters.relative_gap_limit = gap_rel
    solver.parameters.num_workers = workers
    solver.parameters.random_seed = CPSAT_SEED
    solver.parameters.repair_hint = True
    # The LP relaxation at every node: with one worker, the default level left a
    # two-deployment plan at a 59 % gap after 30 s that level 2 proves optimal at once.
    solver.parameters.linearization_level = 2
    return solver


@dataclasses.dataclass(frozen=True)
class _Scaled:
    """The integer data both of CP-SAT's models share."""

    eligible: np.ndarray
    upper: np.ndarray
    kept: np.ndarray
    units: np.ndarray
    units_low: np.ndarray
    occupancy: np.ndarray
    usable: int
    usable_widened: int
    peak_power: np.ndarray
    quality_margin: np.ndarray | None


def solve_cpsat(problem: Problem, *, time_limit_s: float = 30.0, gap_rel: float = 5e-3,
                workers: int = 1) -> Solution:
    """The least-energy plan of ``problem`` by CP-SAT, within ``gap_rel`` of its bound or
    the best found in ``time_limit_s``; ``Solution.solver`` is ``cpsat``.

    The first model widens replica time and the quality row by one routing unit per pair
    (``grid_slack``), so it holds every exact plan, exactly-tight ones included (a replica
    split 1/3 : 2/3 at full use is off the grid of thousandths); its bound is the bound
    reported. Where the exact routing LP cannot serve its replicas, the strict model (every
    grid plan in it holds every limit) is solved in the time left."""
    from ortools.sat.python import cp_model

    started = time.perf_counter()
    scaled = _scale(problem)
    start = baseline_start(problem)

    def time_left_s() -> float:
        return time_limit_s - (time.perf_counter() - started)

    def baseline(status_name: str) -> Solution:
        if start is None:
            raise NoSolutionError("cpsat", f"no plan within {time_limit_s:g} s ({status_name})")
        # Like the MILP on a time limit: the baseline start, checked, with no bound.
        return dataclasses.replace(start, solver="cpsat", status="feasible", bound_j=None,
                                   gap=None, solve_time_s=time.perf_counter() - started)

    model, n, x = _model(problem, scaled, start, grid_slack=True)
    solver = configured_solver(time_left_s(), gap_rel, workers)
    status = solver.solve(model)
    if status == cp_model.INFEASIBLE:
        from solvers.diagnose import explain_infeasibility

        raise InfeasibleError(explain_infeasibility(problem))
    if status not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        return baseline(solver.status_name(status))
    bound_j = solver.best_objective_bound / ENERGY_UNITS_PER_J
    replicas = _replicas(problem, solver, n)
    try:
        routing = solve_routing(problem, replicas,
                                time_limit_s=max(time_left_s(), 1.0)).routing
    except (InfeasibleError, SolverError):
        model, n, x = _model(problem, scaled, start, grid_slack=False)
        strict = configured_solver(time_left_s(), gap_rel, workers)
        status = strict.solve(model)
        if status not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
            return baseline(strict.status_name(status))
        replicas = _replicas(problem, strict, n)
        routing = np.zeros((len(problem.classes), len(problem.deployments)))
        for (c, d), var in x.items():
            routing[c, d] = strict.value(var)
        routing /= REQUEST_UNITS
        _place_rounding_rest(problem, replicas, routing, scaled.eligible)
        # The exact routing LP: never costlier than the grid routing.
        with contextlib.suppress(InfeasibleError, SolverError):
            routing = solve_routing(problem, replicas,
                                    time_limit_s=max(time_left_s(), 1.0)).routing
    active_j, base_j = problem.plan_energy_j(replicas, routing)
    objective_j = active_j + base_j
    gap = relative_gap(objective_j, bound_j)
    # The bound is the scaled model's: a gap within the scaling error is no gap.
    slack_rel = scaling_error_j(problem) / max(objective_j, 1e-300)
    return Solution(replicas=replicas, routing=routing, solver="cpsat",
                    status=status_for_gap(gap, gap_rel + slack_rel), objective_j=objective_j,
                    bound_j=bound_j, gap=gap, solve_time_s=time.perf_counter() - started)


def _scale(problem: Problem) -> _Scaled:
    """The problem's limits as integers (see the module's docstring), or why they cannot be."""
    eligible = problem.eligible()
    upper = replica_upper_bounds(problem)
    kept = (upper > 0) & eligible.any(axis=0) & ~dominated_deployments(problem)
    units = np.ceil(problem.demand * REQUEST_UNITS - 1e-9).astype(np.int64)
    units_low = np.floor(problem.demand * REQUEST_UNITS + 1e-9).astype(np.int64)
    reasons = [f"class {problem.classes[c].id}: no deployment meets its quality and SLOs"
               for c in range(len(problem.classes))
               if units[c] > 0 and not (eligible[c] & kept).any()]
    if reasons:
        raise InfeasibleError(reasons)
    per_unit_s = problem.occupancy_s / REQUEST_UNITS
    positive = per_unit_s[eligible & (per_unit_s > 0)]
    units_per_s = TIME_PRECISION / positive.min() if len(positive) else 1.0
    usable_s = problem.horizon_s * problem.max_utilization
    peak_w = np.array([dep.peak_power_w for dep in problem.deployments])
    quality = np.array([dep.quality for dep in problem.deployments])
    margin = (quality - problem.min_mean_quality if problem.min_mean_quality is not None
              else None)
    # CP-SAT refuses a row whose terms at their bounds could overflow: the largest is a
    # deployment's replica time with every class routed to it in full.
    row_time = (np.where(eligible, per_unit_s, 0.0) * units[:, None]).sum(axis=0)
    if max(row_time.max(initial=0.0) * units_per_s * (1 + 1e-9),
           usable_s * units_per_s * upper.max(initial=0),
           float(peak_w @ upper) * POWER_UNITS_PER_W,
           (np.abs(margin).max(initial=0.0) if margin is not None else 0.0)
           * QUALITY_UNITS * units.sum()) > INT_LIMIT:
        raise NoSolutionError("cpsat", "the plan's times, powers or qualities span too many "
                                       "orders of magnitude for CP-SAT's 64-bit integers; "
                                       "use --solver highs")
    return _Scaled(
        eligible=eligible, upper=upper, kept=kept, units=units, units_low=units_low,
        occupancy=np.where(eligible, np.round(per_unit_s * units_per_s), 0).astype(np.int64),
        usable=round(usable_s * units_per_s),
        # Each term's time rounds by at most half a unit, 0.5 / TIME_PRECISION of itself.
        usable_widened=math.ceil(usable_s * units_per_s * (1 + 0.5 / TIME_PRECISION)),
        peak_power=np.round(peak_w * POWER_UNITS_PER_W).astype(np.int64),
        quality_margin=(np.round(margin * QUALITY_UNITS).astype(np.int64)
                        if margin is not None else None))


def _model(problem: Problem, scaled: _Scaled, start: Solution | None, *, grid_slack: bool):
    """CP-SAT's model: replica counts ``n[d]``, routing units ``x[c, d]``; with
    ``grid_slack`` each limit is widened by the most its rounding can take off an exact plan,
    each replica's time also by one routing unit of each pair of its deployment and the
    quality row by one unit of each pair; without, each limit is rounded to nearest."""
    from ortools.sat.python import cp_model

    model = cp_model.CpModel()
    units = scaled.units
    n = {d: model.new_int_var(0, int(scaled.upper[d]), f"n{d}")
         for d in np.flatnonzero(scaled.kept)}
    x: dict[tuple[int, int], cp_model.IntVar] = {}
    for c, d in zip(*np.nonzero(scaled.eligible & scaled.kept[None, :]), strict=True):
        x[int(c), int(d)] = model.new_int_var(0, int(units[c]), f"x{c}_{d}")
    for c in range(len(problem.classes)):
        model.add_linear_constraint(sum(x[c, d] for d in n if (c, d) in x),
                                    int(min(scaled.units_low[c], units[c])), int(units[c]))
    for d in n:
        routed = [(c, var) for (c, dd), var in x.items() if dd == d]
        occupancy = [int(scaled.occupancy[c, d]) for c, _ in routed]
        # Per replica, so that a deployment with no replica still serves nothing.
        usable = scaled.usable_widened + sum(occupancy) if grid_slack else scaled.usable
        model.add(sum(o * var for o, (_, var) in zip(occupancy, routed, strict=True))
                  <= usable * n[d])
        for (c, var), o in zip(routed, occupancy, strict=True):
            if o == 0:
                model.add(var <= int(units[c]) * n[d])
    for pool in problem.pools:
        members = [d for d in n if problem.deployments[d].pool == pool.id]
        if members:
            model.add(sum(problem.deployments[d].tp * n[d] for d in members) <= pool.count)
    for rack in problem.racks:
        members = [d for d in n if problem.pool_of(problem.deployments[d]).rack == rack.id]
        if rack.power_cap_w is not None and members:
            # Widened: half a unit of rounding per replica that can be on, and half for
            # the cap.
            rounding = (0.5 * (sum(int(scaled.upper[d]) for d in members) + 1)
                        if grid_slack else 0.0)
            model.add(sum(int(scaled.peak_power[d]) * n[d] for d in members)
                      <= math.floor(rack.power_cap_w * POWER_UNITS_PER_W + rounding + 0.5))
    if scaled.quality_margin is not None:
        margin = scaled.quality_margin
        # Widened: half a unit of rounding and one routing unit's margin per pair.
        slack = (int(units.sum()) // 2 + int(sum(abs(int(margin[d])) for _, d in x))
                 if grid_slack else 0)
        model.add(sum(int(margin[d]) * var for (_, d), var in x.items()) >= -slack)
    base = {d: round(problem.deployments[d].base_power_w * problem.horizon_s
                     * ENERGY_UNITS_PER_J) for d in n}
    model.minimize(
        sum(round(problem.energy_j[c, d] * ENERGY_UNITS_PER_J / REQUEST_UNITS) * var
            for (c, d), var in x.items())
        + sum(base[d] * n[d] for d in n))
    if start is not None:
        # The best baseline as a hint: CP-SAT starts from a plan instead of searching for one.
        for d, var in n.items():
            model.add_hint(var, int(start.replicas[d]))
        share = np.divide(start.routing, np.maximum(problem.demand, 1e-300)[:, None])
        for (c, d), var in x.items():
            model.add_hint(var, round(share[c, d] * units[c]))
    return model, n, x


def _replicas(problem: Problem, solver, n: dict) -> np.ndarray:
    replicas = np.zeros(len(problem.deployments), dtype=np.int64)
    for d, var in n.items():
        replicas[d] = solver.value(var)
    return replicas


def _place_rounding_rest(problem: Problem, replicas: np.ndarray, routing: np.ndarray,
                         eligible: np.ndarray) -> None:
    """Route what the unit rounding left of each class (below one unit) in exact arithmetic:
    a surplus comes off the deployments it is routed to, least spare replica time first; a
    shortfall goes into the spare replica time of the class's deployments that are on, most
    spare first."""
    free_s = replicas * problem.horizon_s * problem.max_utilization - np.sum(
        problem.occupancy_s * routing, axis=0)
    for c, count in enumerate(problem.demand):
        rest = count - routing[c].sum()
        if rest < 0:
            routed = np.flatnonzero(routing[c] > 0)
            for d in routed[np.argsort(free_s[routed], kind="stable")]:
                take = min(-rest, routing[c, d])
                routing[c, d] -= take
                free_s[d] += problem.occupancy_s[c, d] * take
                rest += take
                if rest >= 0:
                    break
            continue
        on = np.flatnonzero(eligible[c] & (replicas > 0))
        for d in on[np.argsort(-free_s[on], kind="stable")]:
            if rest <= 0:
                break
            occupancy = problem.occupancy_s[c, d]
            take = rest if occupancy == 0 else min(rest, max(free_s[d], 0.0) / occupancy)
            routing[c, d] += take
            free_s[d] -= occupancy * take
            rest -= take
        if rest > 0 and len(on):
            routing[c, on[0]] += rest
