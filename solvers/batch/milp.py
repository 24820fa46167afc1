"""The batch schedule as a time-indexed MILP on HiGHS, built column-wise as sparse arrays.

Columns: ``n[d, t]`` replicas on (integer), ``s[d, t]`` replicas switched on (continuous:
at an optimum it equals the positive part of ``n[d, t] - n[d, t-1]``, an integer), and
``x[j, d, t]`` requests of job ``j`` served (only where the job may run on ``d`` in ``t``).
Rows: each job's requests served; each replica's time in each slot; starts; devices on or
loading per pool and slot; peak power per capped rack and slot. The objective is active +
idle + switching energy plus lateness penalties, in kJ.

Deployments that serve no job, do not fit in memory or are dominated for every job (see
``solvers.milp.dominated_deployments``, with the load time as one more cost) get no columns.
Past ``MAX_ROUTING_COLUMNS`` routing columns each job keeps only its cheapest deployments;
the bound reported is then ``request_bound_j`` (every request at its cheapest full energy),
which holds for the whole problem, not the restricted model's.
The best baseline schedule is handed to HiGHS as its start, so a time limit always returns a
checked schedule.
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np
from scipy import sparse as sp

from solvers.batch.problem import BatchProblem, Schedule, schedule_energy, starts_of
from solvers.errors import InfeasibleError, NoSolutionError
from solvers.formulation import OBJECTIVE_SCALE_J
from solvers.milp import dominated_deployments, relative_gap, status_for_gap
from solvers.sparse import SparseModel, run

SERVED_ZERO_REL = 1e-9
MAX_ROUTING_COLUMNS = 150_000
"""Job x deployment x slot columns beyond which each job keeps only its cheapest
deployments (by full energy per request, ``cheapest_pairs``) and those its start uses."""
MAX_DEPLOYMENTS_PER_JOB = 8
"""At most this many cheapest deployments per job in a restricted model: beyond them HiGHS
spends its time on the LP instead of the search (50 jobs over a day: 8% gap at 60 s with 35,
see benchmarks/batch_scale.py)."""
"""Served amounts below this fraction of a job's requests are solver noise."""


def usable(problem: BatchProblem) -> tuple[np.ndarray, np.ndarray]:
    """(J, D) pairs a job may use and (J, T) slots it may run in; InfeasibleError naming
    every job with none."""
    base = problem.base
    fits = np.array([d.memory_need_gb <= d.memory_gb for d in base.deployments])
    pairs = base.eligible() & fits[None, :]
    window = np.isfinite(problem.lateness_j())
    reasons = []
    for j, job in enumerate(base.classes):
        if not pairs[j].any():
            reasons.append(f"job {job.id}: no deployment of the fleet can run it (its LLM or "
                           f"quality floor, or its context, fits none)")
        elif not window[j].any():
            reasons.append(f"job {job.id}: no whole {problem.slot_s:g} s slot lies between its "
                           f"release ({problem.release_s[j]:g} s) and deadline "
                           f"({problem.deadline_s[j]:g} s); use a shorter --slot")
    if reasons:
        raise InfeasibleError(reasons)
    return pairs, window


def full_energy_j(problem: BatchProblem, pairs: np.ndarray) -> np.ndarray:
    """(J, D) least energy one request can cost on each deployment: its active energy plus
    the idle power of the replica time it takes (inf where the pair is not allowed)."""
    base = problem.base
    idle_w = np.array([d.idle_power_w for d in base.deployments])
    per_request = base.energy_j + idle_w[None, :] * base.occupancy_s / base.max_utilization
    return np.where(pairs, per_request, np.inf)


def request_bound_j(problem: BatchProblem, pairs: np.ndarray) -> float:
    """A lower bound on every schedule: each request at its cheapest full energy.

    Every request takes its replica time on a replica that draws at least idle power
    meanwhile, and switching and lateness cost nothing less than zero."""
    counts = np.array([c.count for c in problem.base.classes])
    return float(np.sum(counts * full_energy_j(problem, pairs).min(axis=1)))


def cheapest_pairs(problem: BatchProblem, pairs: np.ndarray, per_job: int) -> np.ndarray:
    """(J, D) each job's ``per_job`` deployments of least full energy per request."""
    full = full_energy_j(problem, pairs)
    order = np.argsort(full, axis=1, kind="stable")[:, :per_job]
    kept = np.zeros_like(pairs)
    np.put_along_axis(kept, order, True, axis=1)
    return kept & pairs


def kept_deployments(problem: BatchProblem, pairs: np.ndarray) -> np.ndarray:
    """(D,) deployments that get columns: some job may use them and none dominates them."""
    dominated = dominated_deployments(problem.base, costs=problem.load_s[:, None])
    return pairs.any(axis=0) & ~dominated


def build(problem: BatchProblem, kept: np.ndarray, pairs: np.ndarray,
          window: np.ndarray) -> tuple[SparseModel, np.ndarray, np.ndarray, np.ndarray]:
    """The MILP over the deployments in ``kept``; returns it with the (job, deployment, slot)
    of each x column. Its ``n_deployments`` integer columns are the ``n[d, t]``."""
    base = problem.base
    n_slots, slot_s = problem.n_slots, problem.slot_s
    deps = np.flatnonzero(kept)
    n_kept = len(deps)
    n_cols = n_kept * n_slots
    tp = np.array([d.tp for d in base.deployments], dtype=float)
    idle_w = np.array([d.idle_power_w for d in base.deployments])
    peak_w = np.array([d.peak_power_w for d in base.deployments])
    lateness = problem.lateness_j()

    job_x, dep_x, slot_x = [], [], []
    for j in range(len(base.classes)):
        slots = np.flatnonzero(window[j])
        for d in deps[pairs[j, deps]]:
            job_x.append(np.full(len(slots), j))
            dep_x.append(np.full(len(slots), d))
            slot_x.append(slots)
    job_x, dep_x, slot_x = (np.concatenate(a).astype(np.int64) if a else np.zeros(0, np.int64)
                            for a in (job_x, dep_x, slot_x))
    position = np.full(len(base.deployments), -1)
    position[deps] = np.arange(n_kept)

    def n_col(k: np.ndarray, t: np.ndarray) -> np.ndarray:
        return k * n_slots + t

    def s_col(k: np.ndarray, t: np.ndarray) -> np.ndarray:
        return n_cols + k * n_slots + t

    x_col = 2 * n_cols + np.arange(len(job_x))
    rows, cols, values = [], [], []
    row_lower, row_upper = [], []
    next_row = 0

    def add(r: np.ndarray, c: np.ndarray, v: np.ndarray) -> None:
        rows.append(np.asarray(r, dtype=np.int64))
        cols.append(np.asarray(c, dtype=np.int64))
        values.append(np.asarray(v, dtype=float))

    # Demand: each job's requests, all served.
    counts = np.array([c.count for c in base.classes])
    add(next_row + job_x, x_col, np.ones(len(job_x)))
    row_lower.append(counts)
    row_upper.append(counts)
    next_row += len(counts)
    # Capacity: replica-seconds of work within the replicas on.
    k_all = np.repeat(np.arange(n_kept), n_slots)
    t_all = np.tile(np.arange(n_slots), n_kept)
    cap_row = next_row + position[dep_x] * n_slots + slot_x
    add(cap_row, x_col, base.occupancy_s[job_x, dep_x])
    add(next_row + k_all * n_slots + t_all, n_col(k_all, t_all),
        np.full(n_cols, -slot_s * base.max_utilization))
    row_lower.append(np.full(n_cols, -np.inf))
    row_upper.append(np.zeros(n_cols))
    next_row += n_cols
    # Starts: n[t] - n[t-1] - s[t] <= 0.
    start_row = next_row + k_all * n_slots + t_all
    add(start_row, n_col(k_all, t_all), np.ones(n_cols))
    later = t_all > 0
    add(start_row[later], n_col(k_all[later], t_all[later] - 1), -np.ones(int(later.sum())))
    add(start_row, s_col(k_all, t_all), -np.ones(n_cols))
    row_lower.append(np.full(n_cols, -np.inf))
    row_upper.append(np.zeros(n_cols))
    next_row += n_cols
    # Devices and rack power per slot: replicas on, plus those loading for later starts.
    load_slots = problem.load_slots[deps]
    held_k, held_t, held_s = [], [], []
    for k in range(n_kept):
        for ahead in range(1, int(load_slots[k]) + 1):
            t = np.arange(n_slots - ahead)
            held_k.append(np.full(len(t), k))
            held_t.append(t)
            held_s.append(s_col(np.full(len(t), k), t + ahead))
    held_k, held_t, held_s = (np.concatenate(a) if a else np.zeros(0, np.int64)
                              for a in (held_k, held_t, held_s))
    groups = [([base.index("pools", base.deployments[d].pool) for d in deps], tp[deps], tp[deps],
               np.array([p.count for p in base.pools], dtype=float))]
    rack_caps = np.array([np.inf if r.power_cap_w is None else r.power_cap_w
                          for r in base.racks])
    rack_of = [base.index("racks", base.pool_of(base.deployments[d]).rack) for d in deps]
    groups.append((rack_of, peak_w[deps], idle_w[deps], rack_caps))
    for group_of, on_weight, loading_weight, limit in groups:
        group_of = np.asarray(group_of, dtype=np.int64)
        capped = np.isfinite(limit)
        row_of = np.full(len(limit), -1)
        row_of[capped] = np.arange(int(capped.sum()))
        on = capped[group_of[k_all]] if n_kept else np.zeros(0, bool)
        add(next_row + row_of[group_of[k_all[on]]] * n_slots + t_all[on],
            n_col(k_all[on], t_all[on]), on_weight[k_all[on]])
        if len(held_k):
            loading = capped[group_of[held_k]]
            add(next_row + row_of[group_of[held_k[loading]]] * n_slots + held_t[loading],
                held_s[loading], loading_weight[held_k[loading]])
        row_lower.append(np.full(int(capped.sum()) * n_slots, -np.inf))
        row_upper.append(np.repeat(limit[capped], n_slots))
        next_row += int(capped.sum()) * n_slots

    matrix = sp.csc_matrix((np.concatenate(values), (np.concatenate(rows),
                                                      np.concatenate(cols))),
                           shape=(next_row, 2 * n_cols + len(job_x)))
    matrix.sum_duplicates()
    most = problem.most_replicas(pairs)[deps].astype(float)
    cost = np.concatenate([
        np.repeat(idle_w[deps] * slot_s, n_slots),
        np.repeat(idle_w[deps] * problem.load_s[deps], n_slots),
        base.energy_j[job_x, dep_x] + lateness[job_x, slot_x],
    ]) / OBJECTIVE_SCALE_J
    model = SparseModel(
        cost=cost,
        col_lower=np.zeros(len(cost)),
        col_upper=np.concatenate([np.repeat(most, n_slots), np.repeat(most, n_slots),
                                  np.full(len(job_x), np.inf)]),
        row_lower=np.concatenate(row_lower), row_upper=np.concatenate(row_upper),
        start=matrix.indptr.astype(np.int32), index=matrix.indices.astype(np.int32),
        value=matrix.data, n_deployments=n_cols, bound_rhs=np.zeros(next_row), links=0,
        quality_row=None, pair_class=job_x, pair_deployment=dep_x)
    return model, job_x, dep_x, slot_x


def _values_of(kept: np.ndarray, model: SparseModel,
               job_x: np.ndarray, dep_x: np.ndarray, slot_x: np.ndarray,
               schedule: Schedule) -> np.ndarray | None:
    """A schedule as column values of ``model``; None where it uses columns the model lacks."""
    deps = np.flatnonzero(kept)
    if np.any(schedule.replicas[~kept] > 0):
        return None
    on = schedule.replicas[deps].astype(float)
    lookup = {key: i for i, key in enumerate(zip(job_x.tolist(), dep_x.tolist(),
                                                 slot_x.tolist(), strict=True))}
    x = np.zeros(len(job_x))
    for j, d, t, amount in zip(schedule.job.tolist(), schedule.deployment.tolist(),
                               schedule.slot.tolist(), schedule.served.tolist(), strict=True):
        if (j, d, t) not in lookup:
            return None
        x[lookup[(j, d, t)]] += amount
    return np.concatenate([on.ravel(), starts_of(on).ravel(), x])


def solve_batch_milp(problem: BatchProblem, *, time_limit_s: float = 60.0,
                     gap_rel: float = 0.02, start: Schedule | None = None,
                     threads: int = 1,
                     max_columns: int | None = MAX_ROUTING_COLUMNS) -> Schedule:
    """The least-energy schedule within ``gap_rel`` of the bound, or the best found in
    ``time_limit_s`` with its gap; ``start`` (a checked schedule) seeds HiGHS. Past
    ``max_columns`` routing columns each job keeps its cheapest deployments (None: never);
    where that restricted model has no schedule, the whole model is solved."""
    started = time.perf_counter()
    pairs, window = usable(problem)
    columns = pairs & kept_deployments(problem, pairs)[None, :]
    cells = int(np.sum(columns.sum(axis=1) * window.sum(axis=1)))
    restricted = max_columns is not None and cells > max_columns
    if restricted:
        per_job = min(max(max_columns // max(int(window.sum()), 1), 1), MAX_DEPLOYMENTS_PER_JOB)
        columns = cheapest_pairs(problem, columns, per_job)
    if start is not None:
        used = np.zeros_like(pairs)
        used[start.job, start.deployment] = True
        columns |= used
    kept = columns.any(axis=0)
    model, job_x, dep_x, slot_x = build(problem, kept, columns, window)
    seed = None if start is None else _values_of(kept, model, job_x, dep_x, slot_x,
                                                 start)
    left_s = max(time_limit_s - (time.perf_counter() - started), 0.0)
    result = run(model, integer=True, time_limit_s=left_s, gap_rel=gap_rel, threads=threads,
                 start_values=seed)
    if result.status == "infeasible" and restricted:
        # The cheapest deployments alone cannot do it; only the whole model can say more.
        return solve_batch_milp(problem, time_limit_s=max(
            time_limit_s - (time.perf_counter() - started), 1.0), gap_rel=gap_rel, start=start,
            threads=threads, max_columns=None)
    if result.status == "infeasible":
        raise InfeasibleError(["the jobs cannot all meet their deadlines on this fleet: the "
                               "devices, rack power or windows are too small for the work"])
    if result.values is None:
        if start is not None:
            return Schedule(start.replicas, start.job, start.deployment, start.slot,
                            start.served, "milp:highs", "feasible", start.objective_j,
                            None, None, time.perf_counter() - started)
        raise NoSolutionError("milp:highs", f"no schedule within {time_limit_s:g} s")
    # A restricted model's bound holds for it alone; the request bound holds for all.
    bound_j = request_bound_j(problem, pairs)
    if not restricted and result.bound_j is not None:
        bound_j = max(bound_j, result.bound_j)
    return _schedule(problem, kept, model, (job_x, dep_x, slot_x), result.values,
                     "milp:highs", bound_j, gap_rel, started)


def _schedule(problem: BatchProblem, kept: np.ndarray, model: SparseModel,
              columns: tuple[np.ndarray, np.ndarray, np.ndarray], values: np.ndarray,
              solver: str, bound_j: float | None, gap_rel: float, started: float) -> Schedule:
    """A Schedule from the column values of ``model``, its cost recomputed."""
    job_x, dep_x, slot_x = columns
    n_cols = model.n_deployments
    replicas = np.zeros((len(problem.base.deployments), problem.n_slots), dtype=np.int64)
    replicas[np.flatnonzero(kept)] = np.rint(values[:n_cols]).astype(np.int64).reshape(
        -1, problem.n_slots)
    served = values[2 * n_cols:]
    counts = np.array([c.count for c in problem.base.classes])
    keep = served > SERVED_ZERO_REL * np.maximum(counts[job_x], 1.0)
    draft = Schedule(replicas, job_x[keep], dep_x[keep], slot_x[keep], served[keep], solver,
                     "feasible", 0.0)
    cost = schedule_energy(problem, draft)
    objective_j = cost.energy_j + cost.penalty_j
    gap = relative_gap(objective_j, bound_j)
    return Schedule(replicas, draft.job, draft.deployment, draft.slot, draft.served, solver,
                    status_for_gap(gap, gap_rel), objective_j, bound_j, gap,
                    time.perf_counter() - started)


def route_on_replicas(problem: BatchProblem, replicas: np.ndarray, *, solver: str,
                      bound_j: float | None, gap_rel: float, started: float,
                      time_limit_s: float = 60.0) -> Schedule | None:
    """The exact least-energy routing of every job on the replicas given (D, T), an LP;
    None where they cannot carry the work."""
    pairs, window = usable(problem)
    kept = replicas.max(axis=1) > 0
    model, job_x, dep_x, slot_x = build(problem, kept, pairs, window)
    fixed = replicas[kept].ravel().astype(float)
    lower, upper = model.col_lower.copy(), model.col_upper.copy()
    lower[:model.n_deployments] = upper[:model.n_deployments] = fixed
    model = dataclasses.replace(model, col_lower=lower, col_upper=upper)
    result = run(model, integer=False, time_limit_s=time_limit_s, gap_rel=0.0)
    if result.status != "optimal" or result.values is None:
        return None
    return _schedule(problem, kept, model, (job_x, dep_x, slot_x), result.values, solver,
                     bound_j, gap_rel, started)
