"""The core MILP as one sparse matrix for HiGHS: no Python object per term, so fleet-scale
problems build in a fraction of a second (PuLP: seconds to a minute).

Columns: ``n[d]`` for every deployment, then ``x[c, d]`` for every eligible pair, grouped by
class. Rows, in this order: demand per class (``= N[c]``), capacity per deployment
(``Σ_c s[c,d]·x[c,d] − u·H·n[d] <= 0``), a link row ``x[c,d] − N[c]·n[d] <= 0`` per pair that
takes no replica time, inventory per pool, power per capped rack, and the mean-quality row
when a target is set: the same model as ``solvers.formulation``, family for family. The
objective is in kJ (``formulation.OBJECTIVE_SCALE_J``).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np

from solvers.formulation import OBJECTIVE_SCALE_J, native_stdout_silenced, replica_upper_bounds
from solvers.problem import Problem

HIGHS_SEED = 0
"""HiGHS's random seed, fixed so that a run repeats byte for byte (one thread)."""


@dataclass(frozen=True)
class SparseModel:
    """Column-wise arrays of the MILP of ``problem`` over the deployments in ``kept``."""

    cost: np.ndarray
    col_lower: np.ndarray
    col_upper: np.ndarray
    row_lower: np.ndarray
    row_upper: np.ndarray
    start: np.ndarray
    index: np.ndarray
    value: np.ndarray
    n_deployments: int
    bound_rhs: np.ndarray
    """Per row, its right-hand side where a Lagrangian bound prices it (pool, rack and quality
    rows), else 0 (demand rows stay constraints; capacity and link rows have 0)."""
    links: int
    """Link rows (pairs that take no replica time)."""
    quality_row: int | None
    """Index of the mean-quality row, if the problem sets a target."""
    pair_class: np.ndarray
    """Class of each x column."""
    pair_deployment: np.ndarray
    """Deployment of each x column."""

    @property
    def columns(self) -> int:
        return len(self.cost)


@dataclass(frozen=True)
class HighsResult:
    status: str
    """``optimal``, ``feasible`` (stopped with a solution), ``infeasible`` or ``no_solution``."""
    values: np.ndarray | None
    objective_j: float | None
    bound_j: float | None
    solve_time_s: float
    row_dual: np.ndarray | None = None
    """The LP's row duals (HiGHS's sign: reduced cost = cost - A^T dual), LP runs only."""
    col_dual: np.ndarray | None = None
    """The LP's reduced costs, LP runs only."""


def build(problem: Problem, kept: np.ndarray | None = None,
          fixed_replicas: np.ndarray | None = None,
          pairs: np.ndarray | None = None, unmet_cost: float | None = None) -> SparseModel:
    """The MILP of ``problem`` with only the deployments where ``kept`` (D,) is True (all by
    default) allowed replicas; ``fixed_replicas`` (D,) pins every ``n``; ``pairs`` (C, D)
    limits the ``x`` columns to the eligible pairs it marks (column generation), and
    ``unmet_cost`` (kJ per request) adds a slack per class that leaves requests unserved at
    that price, so that a model with few columns is never infeasible."""
    n_deps = len(problem.deployments)
    n_upper = replica_upper_bounds(problem).astype(float)
    if kept is not None:
        n_upper = np.where(kept, n_upper, 0.0)
    n_lower = np.zeros(n_deps)
    if fixed_replicas is not None:
        n_lower = n_upper = np.asarray(fixed_replicas, dtype=float)
    eligible = problem.eligible() & (n_upper > 0)[None, :]
    if pairs is not None:
        eligible &= pairs
    pair_class, pair_deployment = np.nonzero(eligible)
    pairs = len(pair_class)
    demand = problem.demand
    n_classes = len(problem.classes)
    occupancy = problem.occupancy_s[pair_class, pair_deployment]
    linked = np.flatnonzero(occupancy == 0)

    pool_row = {pool.id: j for j, pool in enumerate(problem.pools)}
    capped = [rack for rack in problem.racks if rack.power_cap_w is not None]
    rack_row = {rack.id: j for j, rack in enumerate(capped)}
    capacity_row0 = n_classes
    link_row0 = capacity_row0 + n_deps
    pool_row0 = link_row0 + len(linked)
    rack_row0 = pool_row0 + len(problem.pools)
    quality_row = rack_row0 + len(capped)

    # n columns: capacity, links of its zero-occupancy pairs, pool, capped rack.
    usable_s = problem.horizon_s * problem.max_utilization
    n_entries: list[list[tuple[int, float]]] = [[(capacity_row0 + k, -usable_s)]
                                                for k in range(n_deps)]
    for row, p in enumerate(linked):
        n_entries[pair_deployment[p]].append((link_row0 + row, -demand[pair_class[p]]))
    for k, dep in enumerate(problem.deployments):
        n_entries[k].append((pool_row0 + pool_row[dep.pool], float(dep.tp)))
        rack = problem.pool_of(dep).rack
        if rack in rack_row:
            n_entries[k].append((rack_row0 + rack_row[rack], dep.peak_power_w))
    n_index = [np.array([r for r, _ in entries], dtype=np.int64) for entries in n_entries]
    n_value = [np.array([v for _, v in entries]) for entries in n_entries]

    # x columns: demand, capacity (when it takes time), link (when it does not), quality.
    x_rows = [pair_class, np.where(occupancy != 0, capacity_row0 + pair_deployment, -1)]
    x_values = [np.ones(pairs), occupancy]
    link_of_pair = np.full(pairs, -1)
    link_of_pair[linked] = link_row0 + np.arange(len(linked))
    x_rows.append(link_of_pair)
    x_values.append(np.ones(pairs))
    with_quality = problem.min_mean_quality is not None
    if with_quality:
        quality = np.array([dep.quality for dep in problem.deployments])
        x_rows.append(np.full(pairs, quality_row))
        x_values.append(quality[pair_deployment])
    x_index = np.stack(x_rows, axis=1)
    x_value = np.stack(x_values, axis=1)
    x_keep = (x_index >= 0) & (x_value != 0)

    # A slack column leaves a class's requests unserved, counted at the best quality any
    # deployment has, so that the mean-quality row never makes a restricted model infeasible.
    slack = np.arange(n_classes if unmet_cost is not None else 0)
    slack_rows = [slack] + ([np.full(len(slack), quality_row)] if with_quality else [])
    best_quality = max((dep.quality for dep in problem.deployments), default=0.0)
    slack_values = [np.ones(len(slack))] + ([np.full(len(slack), best_quality)]
                                            if with_quality else [])
    counts = np.concatenate([[len(i) for i in n_index], x_keep.sum(axis=1),
                             np.full(len(slack), len(slack_rows), dtype=np.int64)])
    index = np.concatenate([*n_index, x_index[x_keep],
                            np.stack(slack_rows, axis=1).ravel()]).astype(np.int32)
    value = np.concatenate([*n_value, x_value[x_keep], np.stack(slack_values, axis=1).ravel()])

    row_lower = np.concatenate([demand, np.full(n_deps + len(linked), -np.inf),
                                np.full(len(problem.pools) + len(capped), -np.inf)])
    row_upper = np.concatenate([demand, np.zeros(n_deps + len(linked)),
                                [float(pool.count) for pool in problem.pools],
                                [rack.power_cap_w for rack in capped]])
    if with_quality:
        row_lower = np.append(row_lower, problem.min_mean_quality * float(demand.sum()))
        row_upper = np.append(row_upper, np.inf)

    bound_rhs = np.where(np.isfinite(row_upper), row_upper, row_lower).astype(float)
    bound_rhs[:n_classes] = 0.0
    base_j = np.array([dep.base_power_w for dep in problem.deployments]) * problem.horizon_s
    cost = np.concatenate([base_j, problem.energy_j[pair_class, pair_deployment]])
    return SparseModel(
        cost=np.concatenate([cost / OBJECTIVE_SCALE_J, np.full(len(slack), unmet_cost or 0.0)]),
        col_lower=np.concatenate([n_lower, np.zeros(pairs + len(slack))]),
        col_upper=np.concatenate([n_upper, np.full(pairs + len(slack), np.inf)]),
        row_lower=row_lower.astype(float), row_upper=row_upper.astype(float),
        start=np.concatenate([[0], np.cumsum(counts)]).astype(np.int32),
        index=index, value=value.astype(float), n_deployments=n_deps, bound_rhs=bound_rhs,
        links=len(linked), quality_row=quality_row if with_quality else None, pair_class=pair_class,
        pair_deployment=pair_deployment)


def run(model: SparseModel, *, integer: bool, time_limit_s: float, gap_rel: float,
        threads: int = 1, start_values: np.ndarray | None = None) -> HighsResult:
    """Solve ``model`` with HiGHS, ``n`` integer or (``integer=False``) the LP relaxation;
    ``start_values`` is a full solution HiGHS may start from."""
    if model.columns == 0:
        # HiGHS reports an empty model as such, not as infeasible: every row reads 0.
        feasible = bool(np.all(model.row_lower <= 0) and np.all(model.row_upper >= 0))
        return (HighsResult("optimal", np.zeros(0), 0.0, 0.0, 0.0) if feasible
                else HighsResult("infeasible", None, None, None, 0.0))
    highs = _open(model, integer=integer, time_limit_s=time_limit_s, gap_rel=gap_rel,
                  threads=threads)
    if start_values is not None:
        import highspy

        start = highspy.HighsSolution()
        start.col_value = list(start_values)
        highs.setSolution(start)
    return _solve(highs, integer=integer)


def _open(model: SparseModel, *, integer: bool, time_limit_s: float, gap_rel: float,
          threads: int):
    """A HiGHS instance holding ``model``, options set, not yet run."""
    import highspy

    lp = highspy.HighsLp()
    lp.num_col_ = model.columns
    lp.num_row_ = len(model.row_lower)
    lp.col_cost_ = model.cost
    lp.col_lower_ = model.col_lower
    lp.col_upper_ = model.col_upper
    lp.row_lower_ = model.row_lower
    lp.row_upper_ = model.row_upper
    lp.a_matrix_.format_ = highspy.MatrixFormat.kColwise
    lp.a_matrix_.start_ = model.start
    lp.a_matrix_.index_ = model.index
    lp.a_matrix_.value_ = model.value
    if integer:
        lp.integrality_ = ([highspy.HighsVarType.kInteger] * model.n_deployments
                           + [highspy.HighsVarType.kContinuous] * (model.columns
                                                                   - model.n_deployments))
    with native_stdout_silenced():
        highs = highspy.Highs()
    for option, setting in (("output_flag", False), ("time_limit", float(time_limit_s)),
                            ("mip_rel_gap", float(gap_rel)), ("threads", int(threads)),
                            ("random_seed", HIGHS_SEED)):
        highs.setOptionValue(option, setting)
    highs.passModel(lp)
    return highs


def _solve(highs, *, integer: bool) -> HighsResult:
    """Run ``highs`` (from where it stands: a model extended since its last run restarts from
    the last basis) and read the outcome."""
    import highspy

    started = time.perf_counter()
    with native_stdout_silenced():
        highs.run()
    elapsed_s = time.perf_counter() - started
    status = highs.getModelStatus()
    info = highs.getInfo()
    has_solution = info.primal_solution_status == 2  # kSolutionStatusFeasible
    if status == highspy.HighsModelStatus.kOptimal:
        outcome = "optimal"
    elif status in (highspy.HighsModelStatus.kInfeasible,
                    highspy.HighsModelStatus.kUnboundedOrInfeasible):
        outcome = "infeasible"
    else:
        outcome = "feasible" if has_solution else "no_solution"
    if outcome not in ("optimal", "feasible"):
        return HighsResult(outcome, None, None, None, elapsed_s)
    objective_j = info.objective_function_value * OBJECTIVE_SCALE_J
    bound = info.mip_dual_bound if integer else info.objective_function_value
    bound_j = bound * OBJECTIVE_SCALE_J if math.isfinite(bound) else None
    solution = highs.getSolution()
    row_dual = None if integer else np.asarray(solution.row_dual)
    col_dual = None if integer else np.asarray(solution.col_dual)
    return HighsResult(outcome, np.asarray(solution.col_value), objective_j, bound_j, elapsed_s,
                       row_dual, col_dual)


def plan_arrays(problem: Problem, model: SparseModel,
                values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Replicas (D,) rounded to integers and routing (C, D) from a solution's column values."""
    replicas = np.rint(values[:model.n_deployments]).astype(np.int64)
    routing = np.zeros((len(problem.classes), model.n_deployments))
    pairs = len(model.pair_class)
    routing[model.pair_class, model.pair_deployment] = values[model.n_deployments:
                                                              model.n_deployments + pairs]
    return replicas, routing


PRICING_START_PER_CLASS = 1
"""Columns per class the column generation starts from (its cheapest eligible deployments,
besides the baseline plan's pairs)."""
PRICING_ADD_PER_CLASS = 1
"""At most this many priced-out columns per class join each round. Few and often keeps each
round's LP small: the XL LP took 45 s with 1 (start and add) against 105 s with 8."""
PRIMAL_SIMPLEX = 4
"""HiGHS's ``simplex_strategy`` value for the primal simplex."""
PRICING_TOL = 1e-9
"""Reduced cost (kJ per request) below minus this enters the LP."""


@dataclass(frozen=True)
class Relaxation:
    """The LP relaxation's outcome: status, replicas per deployment (fractional; from the last
    round that served every request when the time ran out) and a lower bound on the MILP
    (also from rounds cut short by the time limit)."""

    status: str
    replicas: np.ndarray | None
    bound_j: float | None
    pairs: np.ndarray | None = None
    """(C, D) the pairs that were columns of the last LP (column generation only)."""


def solve_relaxation(problem: Problem, kept: np.ndarray, *, time_limit_s: float,
                     threads: int = 1, start_pairs: np.ndarray | None = None,
                     stop_gap_rel: float = 0.0) -> Relaxation:
    """A lower bound on the MILP over the ``kept`` deployments from its LP relaxation, solved
    by column generation, and the LP's replicas.

    It starts from each class's cheapest pairs, the ``start_pairs`` (C, D) of a known plan,
    and every pair that takes no replica time (those bring a link row), with a slack per
    class that leaves requests unserved at a price above any way of serving them
    (``unmet_price_kj``), so every restricted LP is feasible. Every other eligible pair is
    priced with the duals (reduced cost = energy - demand dual - occupancy x capacity dual -
    quality x quality dual) and the most negative ones join the same HiGHS instance, which
    restarts from its last basis, until none is left: the bound is then the full LP's. Where
    the slack still carries requests at the end, the full LP without slack decides
    (infeasible, or its own optimum).

    Each round also gives a Lagrangian bound, valid whatever columns are in: with the demand
    rows kept (each class's requests go somewhere) and every other row priced at its dual,
    bound = Σ rhs x dual + Σ_c N_c min_d (reduced cost + demand dual) + Σ_d n_max min(0,
    reduced cost of n). Once the restricted LP (slack unused) is within ``stop_gap_rel`` of
    it, the rounds stop and that bound is kept (models with link rows run to the end)."""
    started = time.perf_counter()
    n_upper = np.where(kept, replica_upper_bounds(problem), 0)
    eligible = problem.eligible() & (n_upper > 0)[None, :]
    order = np.argsort(np.where(eligible, problem.effective_energy_j(), np.inf), axis=1,
                       kind="stable")
    chosen = np.zeros_like(eligible)
    rows = np.arange(len(problem.classes))[:, None]
    chosen[rows, order[:, :PRICING_START_PER_CLASS]] = True
    chosen |= problem.occupancy_s == 0
    if start_pairs is not None:
        chosen |= start_pairs
    chosen &= eligible
    quality = np.array([dep.quality for dep in problem.deployments])
    n_classes, n_deps = eligible.shape
    usable_s = problem.horizon_s * problem.max_utilization

    def left_s() -> float:
        return max(time_limit_s - (time.perf_counter() - started), 0.0)

    def serves_everyone(values: np.ndarray) -> bool:
        """The slack columns carry no requests beyond solver noise."""
        slack = values[n_slack_end - n_classes:n_slack_end]
        return not np.any(slack > UNMET_TOL * np.maximum(problem.demand, 1.0))

    model = build(problem, kept, pairs=chosen, unmet_cost=unmet_price_kj(problem))
    if model.columns == 0:
        return _relaxation(problem, kept, left_s(), threads)
    highs = _open(model, integer=False, time_limit_s=left_s(), gap_rel=0.0, threads=threads)
    # Entering columns leave the last basis primal feasible: primal simplex goes on from it
    # (at L, about half the time of HiGHS's default choice).
    highs.setOptionValue("simplex_strategy", PRIMAL_SIMPLEX)
    n_slack_end = model.columns
    bound_kj = -np.inf
    last_replicas = None
    while True:
        # HiGHS's time limit counts its run time since it was made, over every round.
        highs.setOptionValue("time_limit", highs.getRunTime() + left_s())
        result = _solve(highs, integer=False)
        if result.status != "optimal":
            # Out of time: the Lagrangian bound and the replicas of the last round still
            # hold (a restricted LP's plan is a plan: its slack unused, it serves everyone).
            return Relaxation(result.status, last_replicas, (
                bound_kj * OBJECTIVE_SCALE_J if np.isfinite(bound_kj) else None), chosen)
        if serves_everyone(result.values):
            last_replicas = result.values[:n_deps]
        dual = result.row_dual
        # A deployment with no replica has a degenerate capacity row: of its duals, take the
        # one that charges a request for the replica time it needs (its n column's reduced
        # cost spread over the capacity), which keeps the duals feasible and their objective.
        capacity_dual = dual[n_classes:n_classes + n_deps] - np.maximum(
            result.col_dual[:n_deps], 0.0) / usable_s
        reduced = (problem.energy_j / OBJECTIVE_SCALE_J - dual[:n_classes, None]
                   - problem.occupancy_s * capacity_dual[None, :])
        if model.quality_row is not None:
            reduced -= quality[None, :] * dual[model.quality_row]
        entering = eligible & ~chosen & (reduced < -PRICING_TOL)
        if not entering.any():
            break
        if model.links == 0 and stop_gap_rel > 0 and eligible.any(axis=1).all():
            cheapest = np.where(eligible, reduced + dual[:n_classes, None], np.inf).min(axis=1)
            bound_kj = max(bound_kj, float(
                model.bound_rhs @ dual + problem.demand @ cheapest
                + n_upper @ np.minimum(result.col_dual[:n_deps], 0.0)))
            objective_kj = result.objective_j / OBJECTIVE_SCALE_J
            if (serves_everyone(result.values)
                    and objective_kj - bound_kj <= stop_gap_rel * abs(objective_kj)):
                return Relaxation("optimal", result.values[:n_deps],
                                  bound_kj * OBJECTIVE_SCALE_J, chosen)
        best = np.argsort(np.where(entering, reduced, np.inf), axis=1,
                          kind="stable")[:, :PRICING_ADD_PER_CLASS]
        add = np.zeros_like(entering)
        add[rows, best] = True
        add &= entering
        chosen |= add
        classes, deployments = np.nonzero(add)
        entries = [classes, n_classes + deployments]
        values = [np.ones(len(classes)), problem.occupancy_s[classes, deployments]]
        if model.quality_row is not None:
            entries.append(np.full(len(classes), model.quality_row))
            values.append(quality[deployments])
        per_column = len(entries)
        highs.addCols(len(classes), problem.energy_j[classes, deployments] / OBJECTIVE_SCALE_J,
                      np.zeros(len(classes)), np.full(len(classes), np.inf),
                      per_column * len(classes),
                      np.arange(len(classes), dtype=np.int32) * per_column,
                      np.stack(entries, axis=1).ravel().astype(np.int32),
                      np.stack(values, axis=1).ravel())
    if not serves_everyone(result.values):
        return _relaxation(problem, kept, left_s(), threads)
    return Relaxation("optimal", result.values[:n_deps], result.objective_j, chosen)


def _relaxation(problem: Problem, kept: np.ndarray, time_limit_s: float,
                threads: int) -> Relaxation:
    """The full LP relaxation, every eligible pair a column."""
    model = build(problem, kept)
    result = run(model, integer=False, time_limit_s=time_limit_s, gap_rel=0.0, threads=threads)
    if result.status != "optimal":
        return Relaxation(result.status, None, None)
    return Relaxation("optimal", result.values[:model.n_deployments], result.objective_j)


UNMET_TOL = 1e-9
"""Requests left to the slack below this fraction of a class's count are solver noise."""


def unmet_price_kj(problem: Problem) -> float:
    """A price per unserved request (kJ) above any way of serving it: a thousand times the
    most energy one request can cost plus a whole replica on over the horizon for it."""
    eligible = problem.eligible()
    energy_j = float(problem.energy_j[eligible].max()) if eligible.any() else 0.0
    base_j = max((dep.base_power_w for dep in problem.deployments), default=0.0) * (
        problem.horizon_s)
    return 1e3 * (energy_j + base_j + 1.0) / OBJECTIVE_SCALE_J
