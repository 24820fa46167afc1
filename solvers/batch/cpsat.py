"""The batch schedule on OR-Tools CP-SAT, with interval variables: for small problems.

Each replica ``k`` a deployment could hold gets, per slot, an optional interval that is
present when it is on, and, per start, an optional loading interval over the
``load_slots`` slots before it (cut at the schedule's start). Every pool is a cumulative
resource of its devices over both kinds (demand ``tp``), every capped rack one of its power
(peak power while on, idle power while loading), and each replica's intervals are in one
NoOverlap: a replica cannot load while it is still on, so one switched off waits out its
load time before it comes back (where a load fits in one slot this never binds, and the
model then has the optimum of the MILP in ``solvers.batch.milp``, which counts loading
replicas apart from the ones on).

Integer scaling: requests served in thousandths (``REQUEST_UNITS``; jobs have whole
requests, so every job's total is exact); replica time in a unit chosen so the smallest
replica time of one routing unit is ``TIME_PRECISION`` units, rounded to nearest (under
5e-7 of any replica's usage); power in nanowatts, each rack cap widened by the most its
rounding can take off (so replicas exactly at a cap are not lost); energy and penalties in
microjoules,
rounded to nearest, so the objective is within ``scaling_error_j`` (0.5 mJ per request and
1 uJ per replica-slot) of the exact cost of the same schedule. The routing is then solved
again exactly, as an LP on the replicas CP-SAT chose (``route_on_replicas``): never
costlier, and the returned ``objective_j`` is that schedule's exact cost. Where a
thousandth of a request cannot split a slot as exactly as the LP's fractions (an exact tie),
CP-SAT may need one replica-slot more than the MILP.
"""

from __future__ import annotations

import math
import time

import numpy as np

from solvers.batch.milp import kept_deployments, route_on_replicas, usable
from solvers.batch.problem import BatchProblem, Schedule
from solvers.cpsat import (
    ENERGY_UNITS_PER_J,
    INT_LIMIT,
    POWER_UNITS_PER_W,
    REQUEST_UNITS,
    TIME_PRECISION,
    configured_solver,
)
from solvers.errors import InfeasibleError, NoSolutionError, ProblemError


def scaling_error_j(problem: BatchProblem) -> float:
    """Most the scaled objective can differ from the exact cost of the same schedule."""
    requests = sum(c.count for c in problem.base.classes)
    replica_slots = problem.n_slots * sum(
        problem.base.pool_of(d).count // d.tp for d in problem.base.deployments)
    return 0.5 / ENERGY_UNITS_PER_J * (requests * REQUEST_UNITS + 2 * replica_slots)


def solve_batch_cpsat(problem: BatchProblem, *, time_limit_s: float = 60.0,
                      gap_rel: float = 0.02, start: Schedule | None = None,
                      workers: int = 1) -> Schedule:
    """The least-energy schedule by CP-SAT; ``start`` (a checked schedule) is its hint."""
    from ortools.sat.python import cp_model

    started = time.perf_counter()
    base = problem.base
    counts = np.array([c.count for c in base.classes])
    if np.any(counts != np.round(counts)):
        raise ProblemError("CP-SAT schedules whole requests; job counts must be integers")
    pairs, window = usable(problem)
    kept = kept_deployments(problem, pairs)
    if start is not None:
        kept |= start.replicas.max(axis=1) > 0
    n_slots = problem.n_slots
    deps = base.deployments
    lateness = problem.lateness_j()
    per_unit_s = base.occupancy_s[pairs & kept[None, :]] / REQUEST_UNITS
    positive = per_unit_s[per_unit_s > 0]
    units_per_s = TIME_PRECISION / positive.min() if len(positive) else 1.0
    usable_units = round(problem.slot_s * base.max_utilization * units_per_s)
    if per_unit_s.max(initial=0.0) * units_per_s * counts.sum() * REQUEST_UNITS > INT_LIMIT:
        raise NoSolutionError("cpsat", "replica times span too many orders of magnitude for "
                                       "CP-SAT's 64-bit integers; use the MILP")

    most_of = problem.most_replicas(pairs)
    if start is not None:
        most_of = np.maximum(most_of, start.replicas.max(axis=1))
    model = cp_model.CpModel()
    on: dict[tuple[int, int, int], cp_model.IntVar] = {}
    pool_items: dict[str, list[tuple[cp_model.IntervalVar, int]]] = {}
    rack_items: dict[str, list[tuple[cp_model.IntervalVar, int]]] = {}
    cost = []
    # Replica k on only where k-1 is: sound while a load fits in one slot; beyond that a
    # fresh replica may start where one just switched off could not (NoOverlap).
    stacked = bool(problem.load_slots.max(initial=0) <= 1)
    for d in np.flatnonzero(kept):
        d = int(d)
        dep = deps[d]
        pool = base.pool_of(dep)
        rack = base.racks[base.index("racks", pool.rack)]
        most = int(most_of[d])
        load_slots = int(problem.load_slots[d])
        idle_cost = round(dep.idle_power_w * problem.slot_s * ENERGY_UNITS_PER_J)
        start_cost = round(dep.idle_power_w * problem.load_s[d] * ENERGY_UNITS_PER_J)
        peak = round(dep.peak_power_w * POWER_UNITS_PER_W)
        idle = round(dep.idle_power_w * POWER_UNITS_PER_W)
        for k in range(most):
            own: list[cp_model.IntervalVar] = []
            for t in range(n_slots):
                var = model.new_bool_var(f"on{d}_{k}_{t}")
                on[d, k, t] = var
                if k > 0 and stacked:
                    model.add_implication(var, on[d, k - 1, t])
                interval = model.new_optional_fixed_size_interval_var(t, 1, var,
                                                                      f"i{d}_{k}_{t}")
                own.append(interval)
                pool_items.setdefault(pool.id, []).append((interval, dep.tp))
                rack_items.setdefault(rack.id, []).append((interval, peak))
                begins = model.new_bool_var(f"s{d}_{k}_{t}")
                model.add_implication(begins, var)
                if t > 0:
                    model.add_bool_or([begins, var.Not(), on[d, k, t - 1]])
                    model.add_implication(begins, on[d, k, t - 1].Not())
                else:
                    model.add_implication(var, begins)
                cost.append(idle_cost * var + start_cost * begins)
                first = max(t - load_slots, 0)
                if t - first > 0:
                    loading = model.new_optional_fixed_size_interval_var(
                        first, t - first, begins, f"l{d}_{k}_{t}")
                    own.append(loading)
                    pool_items[pool.id].append((loading, dep.tp))
                    rack_items[rack.id].append((loading, idle))
            model.add_no_overlap(own)
    for pool in base.pools:
        items = pool_items.get(pool.id, [])
        if items:
            model.add_cumulative([i for i, _ in items], [w for _, w in items], pool.count)
    for rack in base.racks:
        items = rack_items.get(rack.id, [])
        if rack.power_cap_w is not None and items:
            # Half a unit of rounding per replica that can be on or loading, and half for
            # the cap.
            members = [d for d in np.flatnonzero(kept)
                       if base.pool_of(deps[d]).rack == rack.id]
            rounding = 0.5 * (sum(int(most_of[d]) for d in members) + 1)
            model.add_cumulative([i for i, _ in items], [w for _, w in items],
                                 math.floor(rack.power_cap_w * POWER_UNITS_PER_W + rounding))

    x: dict[tuple[int, int, int], cp_model.IntVar] = {}
    for j in range(len(base.classes)):
        for d in np.flatnonzero(pairs[j] & kept):
            for t in np.flatnonzero(window[j]):
                x[j, int(d), int(t)] = model.new_int_var(0, int(counts[j]) * REQUEST_UNITS,
                                                         f"x{j}_{d}_{t}")
    for j in range(len(base.classes)):
        model.add(sum(var for (jj, _, _), var in x.items() if jj == j)
                  == int(counts[j]) * REQUEST_UNITS)
    for d in np.flatnonzero(kept):
        d = int(d)
        most = int(most_of[d])
        for t in range(n_slots):
            work = [(round(base.occupancy_s[j, d] / REQUEST_UNITS * units_per_s), var)
                    for (j, dd, tt), var in x.items() if dd == d and tt == t]
            if work:
                model.add(sum(w * var for w, var in work)
                          <= usable_units * sum(on[d, k, t] for k in range(most)))
    for (j, d, t), var in x.items():
        cost.append(round((base.energy_j[j, d] + lateness[j, t]) * ENERGY_UNITS_PER_J
                          / REQUEST_UNITS) * var)
    model.minimize(sum(cost))
    if start is not None:
        _hint(model, on, x, start)

    solver = configured_solver(time_limit_s - (time.perf_counter() - started), gap_rel,
                               workers)
    status = solver.solve(model)
    if status == cp_model.INFEASIBLE:
        raise InfeasibleError(["the jobs cannot all meet their deadlines on this fleet "
                               "(CP-SAT proved it)"])
    if status not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        if start is not None:
            return _kept_start(start, started)
        raise NoSolutionError("cpsat", f"no schedule within {time_limit_s:g} s "
                                       f"({solver.status_name(status)})")
    replicas = np.zeros((len(deps), n_slots), dtype=np.int64)
    for (d, _, t), var in on.items():
        replicas[d, t] += solver.value(var)
    bound_j = solver.best_objective_bound / ENERGY_UNITS_PER_J
    # The bound is the scaled model's: a gap within its scaling error is no gap.
    slack_rel = scaling_error_j(problem) / max(solver.objective_value / ENERGY_UNITS_PER_J,
                                               1e-300)
    exact = route_on_replicas(problem, replicas, solver="cpsat", bound_j=bound_j,
                              gap_rel=gap_rel + slack_rel, started=started)
    if exact is not None:
        return exact
    if start is not None:
        return _kept_start(start, started)
    raise NoSolutionError("cpsat", "the replicas CP-SAT chose cannot carry the work once "
                                   "requests split exactly; use the MILP")


def _kept_start(start: Schedule, started: float) -> Schedule:
    return Schedule(start.replicas, start.job, start.deployment, start.slot, start.served,
                    "cpsat", "feasible", start.objective_j, None, None,
                    time.perf_counter() - started)


def _hint(model, on: dict, x: dict, start: Schedule) -> None:
    """The start schedule as a hint: replicas ``0..n-1`` on; each job's routing units
    rounded down, the ones left given to its largest remainders, so its total is exact."""
    for (d, k, t), var in on.items():
        model.add_hint(var, int(k < start.replicas[d, t]))
    units = start.served * REQUEST_UNITS
    whole = np.floor(units + 1e-9)
    rest = units - whole
    for j in np.unique(start.job):
        rows = np.flatnonzero(start.job == j)
        missing = round(float(units[rows].sum() - whole[rows].sum()))
        whole[rows[np.argsort(-rest[rows], kind="stable")[:missing]]] += 1
    served = {}
    for j, d, t, amount in zip(start.job.tolist(), start.deployment.tolist(),
                               start.slot.tolist(), whole.tolist(), strict=True):
        served[j, d, t] = served.get((j, d, t), 0.0) + amount
    for key, var in x.items():
        model.add_hint(var, round(served.get(key, 0.0)))
