"""The core MILP of DESIGN.md: energy-optimal replicas and routing.

min   Σ e[c,d]·x[c,d] + Σ n[d]·P_base[d]·H
s.t.  demand, replica capacity, pool inventory, rack power caps, mean quality
      (see ``solvers.formulation`` for one builder per family); x only on eligible pairs.

HiGHS gets the model as one sparse matrix (``solvers.sparse``) and solves it in steps that
keep a proven bound: deployments dominated for every class are dropped (see
``dominated_deployments``); a baseline plan is the first incumbent (``START_BASELINES``); the
LP relaxation, by column generation, gives the bound; the MILP restricted to the deployments
the LP uses gives a plan, and only when that plan is not within the gap of the bound does
the whole MILP run, starting from it. CBC gets the PuLP model.
"""

from __future__ import annotations

import time

import numpy as np

from solvers import formulation, sparse
from solvers.baselines import BASELINES, run_baseline
from solvers.diagnose import explain_infeasibility
from solvers.errors import InfeasibleError, NoSolutionError, SolverError
from solvers.problem import Problem, Solution

ROUTING_ZERO_REL = 1e-9
"""Routed amounts below this fraction of their class's count are solver noise and become 0."""
DEFAULT_GAP_REL = 5e-3
"""Stop once the plan is proven within 0.5 % of the optimum: beyond that the solver spends
minutes proving what the energy numbers' own error cannot tell apart."""
GAP_SLACK = 1e-7
"""Relative slack on the gap test for the plan's cleaning (routing below ROUTING_ZERO_REL)
and HiGHS's feasibility tolerances."""
LP_GAP_SHARE = 0.25
"""Share of the gap asked for that the LP bound may leave (its column generation stops
there); the rest is for the MILP's integer replicas."""
LP_TIME_SHARE = 0.6
"""Most of the time limit the LP bound may take, so that the MILP keeps time for a plan."""
START_BASELINES = ("consolidation", "wilkins_threshold", "performance_first")
"""Baselines tried, in order, for a first plan: the first that can serve the demand seeds
the LP's columns, starts the MILP, and is returned if the time runs out before anything
better (status ``feasible``, with the LP bound when there is one)."""
DOMINANCE_CELLS = 50_000_000
"""Pairwise dominance checks (deployments in a pool squared x classes) above which a pool is
not pruned: the check would cost more than it saves."""


def solve_milp(
    problem: Problem,
    *,
    solver: str = "highs",
    time_limit_s: float = 30.0,
    gap_rel: float = DEFAULT_GAP_REL,
    threads: int = 1,
    fixed_replicas: np.ndarray | None = None,
) -> Solution:
    """The least-energy plan that meets every constraint of ``problem``.

    ``solver`` is ``"highs"`` (falls back to CBC when HiGHS is not installed) or ``"cbc"``;
    ``Solution.solver`` records the one that ran as ``milp:highs`` or ``milp:cbc``.
    Status is ``optimal`` (proven within ``gap_rel``) or ``feasible`` (``time_limit_s`` hit with a
    plan in hand, at worst the baseline start). ``bound_j`` is the best proven lower bound in
    joules (HiGHS: the LP's, by column generation, or the MIP dual bound; CBC: its MIP bound)
    and ``gap`` is (objective_j − bound_j) / objective_j; ``bound_j`` and ``gap`` are None
    only when the time ran out before any bound. ``objective_j`` is recomputed from the
    returned (rounded, cleaned) plan.

    ``fixed_replicas`` (D,) pins every deployment's replica count, leaving only the routing
    to the solver (``solvers.routing`` is the entry point for that case: it checks the
    replicas first and explains what they cannot carry).

    Runs are deterministic: one thread by default, HiGHS with a fixed seed on columns in
    problem order, and PuLP hands variables to CBC sorted by name, so the same problem gives
    the same arrays.

    Raises:
        InfeasibleError: no plan exists; ``reasons`` come from ``explain_infeasibility``.
        NoSolutionError: the solver stopped before it found any plan.
        UnknownNameError: ``solver`` is neither ``highs`` nor ``cbc``.
    """
    if formulation.resolve_solver(solver) == "highs":
        return _solve_sparse(problem, time_limit_s=time_limit_s, gap_rel=gap_rel,
                             threads=threads, fixed_replicas=fixed_replicas)
    model = formulation.build_variables(problem, "wattsched_milp")
    if fixed_replicas is not None:
        for dep, count in zip(problem.deployments, fixed_replicas, strict=True):
            model.n[dep.id].lowBound = model.n[dep.id].upBound = int(count)
    formulation.add_demand(problem, model)
    formulation.add_capacity(problem, model)
    formulation.add_inventory(problem, model)
    formulation.add_rack_power(problem, model)
    formulation.add_mean_quality(problem, model)
    model.prob.setObjective(formulation.energy_kj(problem, model))

    outcome = formulation.solve(
        model.prob, solver=solver, time_limit_s=time_limit_s, gap_rel=gap_rel, threads=threads
    )
    if outcome.status == "infeasible":
        raise InfeasibleError(explain_infeasibility(problem))
    if outcome.status == "unbounded":
        # Every variable is bounded (n by inventory, x by demand), so this is a solver fault.
        raise SolverError(f"{outcome.solver} reports an unbounded model, which cannot happen")
    if outcome.status == "no_solution":
        raise NoSolutionError(
            f"milp:{outcome.solver}", f"no plan within the {time_limit_s} s time limit"
        )

    replicas, routing = _plan_arrays(problem, model)
    active_j, base_j = problem.plan_energy_j(replicas, routing)
    objective_j = active_j + base_j
    bound_j = None if outcome.bound is None else outcome.bound * formulation.OBJECTIVE_SCALE_J
    return Solution(
        replicas=replicas,
        routing=routing,
        solver=f"milp:{outcome.solver}",
        status=outcome.status,
        objective_j=objective_j,
        bound_j=bound_j,
        gap=relative_gap(objective_j, bound_j),
        solve_time_s=outcome.solve_time_s,
    )


def _plan_arrays(problem: Problem, model: formulation.Model) -> tuple[np.ndarray, np.ndarray]:
    """Integer replicas and routing without solver noise, in problem order."""
    replicas = np.array(
        [round(model.n[dep.id].varValue) for dep in problem.deployments], dtype=np.int64
    )
    routing = np.zeros((len(problem.classes), len(problem.deployments)))
    for (c, d), var in model.x.items():
        routing[problem.index("classes", c), problem.index("deployments", d)] = var.varValue
    # Clips tiny negatives too: the threshold is >= 0.
    routing[routing <= ROUTING_ZERO_REL * problem.demand[:, None]] = 0.0
    return replicas, routing


def relative_gap(objective_j: float, bound_j: float | None) -> float | None:
    """(objective − bound) / |objective|, 0 when both are 0; None without a bound."""
    if bound_j is None:
        return None
    slack_j = max(objective_j - bound_j, 0.0)
    if slack_j == 0.0:
        return 0.0
    return slack_j / abs(objective_j) if objective_j != 0 else float("inf")


def dominated_deployments(problem: Problem, costs: np.ndarray | None = None) -> np.ndarray:
    """(D,) True where another deployment of the same pool is at least as good in every way.

    ``costs`` (D, k) adds per-deployment numbers that must be no higher too (e.g. the
    seconds a batch schedule spends loading a replica).

    ``a`` dominates ``d`` when, with ``tp``, base and peak power no higher and quality no
    lower, ``a`` may serve every class ``d`` may, each with no more energy and no more replica
    time (ties go to the lower index). Swapping each replica of ``d`` for one of ``a`` then
    keeps every constraint (pool devices, rack power, capacity, mean quality) and costs no
    more energy, so some optimal plan uses no dominated deployment and dropping them keeps
    the optimum and every bound.
    """
    deps = problem.deployments
    dominated = np.zeros(len(deps), dtype=bool)
    if not deps:
        return dominated
    eligible = problem.eligible()
    fits = formulation.replica_upper_bounds(problem) > 0
    pool_of = np.array([d.pool for d in deps], dtype=object)
    scalars = np.array([[d.tp, d.base_power_w, d.peak_power_w, -d.quality] for d in deps])
    if costs is not None:
        scalars = np.hstack([scalars, np.asarray(costs, dtype=float).reshape(len(deps), -1)])
    energy = np.where(eligible, problem.energy_j, np.inf)
    occupancy = np.where(eligible, problem.occupancy_s, np.inf)
    for pool in problem.pools:
        members = np.flatnonzero((pool_of == pool.id) & fits)
        if len(members) < 2 or len(members) ** 2 * len(problem.classes) > DOMINANCE_CELLS:
            continue
        for d in members:
            others = members[members != d]
            no_worse = (
                np.all(scalars[others] <= scalars[d], axis=1)
                & np.all(energy[:, others] <= energy[:, [d]], axis=0)
                & np.all(occupancy[:, others] <= occupancy[:, [d]], axis=0)
            )
            strictly = (
                np.any(scalars[others] < scalars[d], axis=1)
                | np.any(energy[:, others] < energy[:, [d]], axis=0)
                | np.any(occupancy[:, others] < occupancy[:, [d]], axis=0)
            )
            dominated[d] = bool(np.any(no_worse & (strictly | (others < d))))
    return dominated


def _solve_sparse(problem: Problem, *, time_limit_s: float, gap_rel: float, threads: int,
                  fixed_replicas: np.ndarray | None) -> Solution:
    started = time.perf_counter()

    def left_s() -> float:
        return max(time_limit_s - (time.perf_counter() - started), 0.0)

    options = {"gap_rel": gap_rel, "threads": threads}
    if fixed_replicas is not None:
        model = sparse.build(problem, fixed_replicas=fixed_replicas)
        best = sparse.run(model, integer=True, time_limit_s=left_s(), **options)
        return _finish(problem, model, best, best.bound_j, gap_rel, time_limit_s, started)
    kept = ~dominated_deployments(problem)
    seed = baseline_start(problem)
    relaxed = sparse.solve_relaxation(
        problem, kept, time_limit_s=left_s() * LP_TIME_SHARE, threads=threads,
        start_pairs=None if seed is None else seed.routing > 0,
        stop_gap_rel=gap_rel * LP_GAP_SHARE)
    if relaxed.status == "infeasible":
        raise InfeasibleError(explain_infeasibility(problem))
    bound_j = relaxed.bound_j
    best = model = None

    def improve(candidate: sparse.SparseModel, start_plan: Solution | None) -> sparse.HighsResult:
        """Run the MILP on ``candidate`` from the best plan so far (else ``start_plan``) and
        keep its plan where it is no worse."""
        nonlocal best, model
        if best is not None:
            start = _values_in(candidate, *sparse.plan_arrays(problem, model, best.values))
        elif start_plan is not None:
            start = _values_in(candidate, start_plan.replicas, start_plan.routing)
        else:
            start = None
        tried = sparse.run(candidate, integer=True, time_limit_s=left_s(), start_values=start,
                           **options)
        if tried.values is not None and (best is None or tried.objective_j <= best.objective_j):
            best, model = tried, candidate
        return tried

    def short_of_target() -> bool:
        return (best is None or relative_gap(best.objective_j, bound_j) > gap_rel) and left_s() > 0

    if relaxed.replicas is not None:
        used = kept & (relaxed.replicas > 0)
        seeded = seed is not None and relaxed.status != "optimal"
        if seeded:
            # The LP was cut short: the baseline's deployments join and the MILP starts from
            # its plan, so that the time left improves a plan rather than looks for one.
            used |= seed.replicas > 0
        # First the columns the LP generated (they hold its optimum and the baseline's
        # pairs): at XL 77 k columns and 5 s for a plan 0.11 % above the bound, where every
        # pair of the same deployments took 45-66 s.
        if relaxed.pairs is not None:
            improve(sparse.build(problem, used, pairs=relaxed.pairs), seed if seeded else None)
        if short_of_target():
            improve(sparse.build(problem, used), seed if seeded else None)
    if short_of_target():
        whole = improve(sparse.build(problem, kept if seed is None else kept | (seed.replicas > 0)),
                        seed)
        if whole.status == "infeasible":
            raise InfeasibleError(explain_infeasibility(problem))
        if whole.bound_j is not None:
            bound_j = max(bound_j or -np.inf, whole.bound_j)
    if best is None and seed is not None:
        return _seed_plan(seed, bound_j, gap_rel, started)
    return _finish(problem, model, best, bound_j, gap_rel, time_limit_s, started)


def _values_in(model: sparse.SparseModel, replicas: np.ndarray,
               routing: np.ndarray) -> np.ndarray:
    """A plan as column values of ``model``."""
    return np.concatenate([replicas, routing[model.pair_class, model.pair_deployment]])


def _finish(problem: Problem, model: sparse.SparseModel, best: sparse.HighsResult | None,
            bound_j: float | None, gap_rel: float, time_limit_s: float,
            started: float) -> Solution:
    if best is None or best.values is None:
        if best is not None and best.status == "infeasible":
            raise InfeasibleError(explain_infeasibility(problem))
        raise NoSolutionError("milp:highs", f"no plan within the {time_limit_s} s time limit")
    replicas, routing = sparse.plan_arrays(problem, model, best.values)
    routing[routing <= ROUTING_ZERO_REL * problem.demand[:, None]] = 0.0
    active_j, base_j = problem.plan_energy_j(replicas, routing)
    objective_j = active_j + base_j
    gap = relative_gap(objective_j, bound_j)
    return Solution(replicas=replicas, routing=routing, solver="milp:highs",
                    status=status_for_gap(gap, gap_rel), objective_j=objective_j, bound_j=bound_j,
                    gap=gap, solve_time_s=time.perf_counter() - started)


def status_for_gap(gap: float | None, gap_rel: float) -> str:
    """``optimal`` when proven within the gap asked for (the slack absorbs the plan's cleaning
    and rounding), else ``feasible``."""
    return "optimal" if gap is not None and gap <= gap_rel + GAP_SLACK else "feasible"


def baseline_start(problem: Problem) -> Solution | None:
    """The plan of the first START_BASELINES baseline that serves the demand, if any."""
    for name in START_BASELINES:
        if name not in BASELINES:
            continue
        try:
            return run_baseline(name, problem)
        except InfeasibleError:
            continue
    return None


def _seed_plan(seed: Solution, bound_j: float | None, gap_rel: float,
               started: float) -> Solution:
    """The baseline plan, when the time ran out before the MILP found a better one."""
    gap = relative_gap(seed.objective_j, bound_j)
    return Solution(replicas=seed.replicas, routing=seed.routing, solver="milp:highs",
                    status=status_for_gap(gap, gap_rel), objective_j=seed.objective_j,
                    bound_j=bound_j, gap=gap, solve_time_s=time.perf_counter() - started)
