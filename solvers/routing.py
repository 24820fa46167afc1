"""Exact routing on the replicas an operator already runs: an LP, built sparse for HiGHS.

With the replicas ``n`` fixed, the core MILP of DESIGN.md loses its integers::

    min   Σ e[c,d]·x[c,d]                     (+ the idle energy of the replicas, a constant)
    s.t.  Σ_d x[c,d] = N[c]                   every request served once
          Σ_c s[c,d]·x[c,d] <= u·H·n[d]       capacity, each class at its own occupancy on d
          Σ q[d]·x[c,d] >= Q·Σ N[c]            mean quality, when set
          x[c,d] >= 0 on eligible pairs of deployments that have replicas

Capacity weighs each class by its own occupancy on each deployment, so this is a generalized
transportation problem, not a pure min-cost flow: a flow on it would be exact only where
``s[c,d]`` factors into a class size times a deployment speed. The matrix goes to highspy
column-wise in one piece, so no Python object per term is made; inventory, memory and rack
power involve only ``n`` and are checked on the given replicas before the LP is built.
"""

from __future__ import annotations

import time

import numpy as np

from solvers.errors import InfeasibleError, SolverError
from solvers.formulation import native_stdout_silenced
from solvers.problem import Problem, Solution

SOLVER_NAME = "lp:highs"


def fixed_replica_violations(problem: Problem, replicas: np.ndarray) -> list[str]:
    """Why ``replicas`` (D,) cannot run at all: negative or fractional counts, a deployment
    that does not fit its device's memory, a pool or a rack power cap exceeded."""
    reasons = []
    for k, dep in enumerate(problem.deployments):
        count = replicas[k]
        if count < 0 or count != int(count):
            reasons.append(f"deployment {dep.id}: {count} replicas is not a count")
        elif count > 0 and dep.memory_need_gb > dep.memory_gb:
            reasons.append(f"deployment {dep.id}: needs {dep.memory_need_gb:.1f} GB per device, "
                           f"the device has {dep.memory_gb:.1f} GB")
    for pool in problem.pools:
        used = sum(dep.tp * replicas[k] for k, dep in enumerate(problem.deployments)
                   if dep.pool == pool.id)
        if used > pool.count:
            reasons.append(f"pool {pool.id}: the replicas use {used:g} devices, it has "
                           f"{pool.count}")
    for rack in problem.racks:
        if rack.power_cap_w is None:
            continue
        peak_w = sum(dep.peak_power_w * replicas[k]
                     for k, dep in enumerate(problem.deployments)
                     if problem.pool_of(dep).rack == rack.id)
        if peak_w > rack.power_cap_w:
            reasons.append(f"rack {rack.id}: the replicas peak at {peak_w:.0f} W, the cap is "
                           f"{rack.power_cap_w:.0f} W")
    return reasons


def solve_routing(problem: Problem, replicas: np.ndarray, *,
                  time_limit_s: float = 60.0) -> Solution:
    """The least-energy routing of ``problem``'s demand over the given ``replicas`` (D,).

    The LP is solved to optimality, so ``bound_j`` equals ``objective_j`` and ``gap`` is 0.

    Raises:
        InfeasibleError: the replicas break a limit themselves, or cannot serve the demand
            (with the classes and deployments involved).
        SolverError: HiGHS stopped without an optimal solution for another reason.
    """
    import highspy

    replicas = np.asarray(replicas)
    if replicas.shape != (len(problem.deployments),):
        raise SolverError(f"replicas has shape {replicas.shape}, expected "
                          f"({len(problem.deployments)},)")
    broken = fixed_replica_violations(problem, replicas)
    if broken:
        raise InfeasibleError(broken)
    replicas = replicas.astype(np.int64)
    eligible = problem.eligible() & (replicas > 0)[None, :]
    classes, deployments = np.nonzero(eligible)  # row-major: columns grouped by class
    demand = problem.demand
    unroutable = [problem.classes[i].id for i in range(len(problem.classes))
                  if demand[i] > 0 and not eligible[i].any()]
    if unroutable:
        raise InfeasibleError([f"class {c}: no replica it may use (SLO, quality or context) "
                               f"among the replicas given" for c in unroutable])

    n_classes, n_deps = len(problem.classes), len(problem.deployments)
    columns = len(classes)
    # Rows: demand per class, capacity per deployment, then the mean-quality row if set.
    quality = np.array([dep.quality for dep in problem.deployments])
    occupancy = problem.occupancy_s[classes, deployments]
    rows_per_column = [classes, n_classes + deployments]
    values_per_column = [np.ones(columns), occupancy]
    row_lower = [demand, np.full(n_deps, -np.inf)]
    row_upper = [demand, problem.horizon_s * problem.max_utilization * replicas]
    if problem.min_mean_quality is not None:
        rows_per_column.append(np.full(columns, n_classes + n_deps))
        values_per_column.append(quality[deployments])
        row_lower.append([problem.min_mean_quality * float(demand.sum())])
        row_upper.append([np.inf])
    index = np.stack(rows_per_column, axis=1)
    value = np.stack(values_per_column, axis=1)
    # Zero occupancy needs no capacity entry (the link row of the MILP holds: n > 0 here).
    keep = value != 0
    per_column = keep.sum(axis=1)

    lp = highspy.HighsLp()
    lp.num_col_ = columns
    lp.num_row_ = len(np.concatenate(row_lower))
    lp.col_cost_ = problem.energy_j[classes, deployments].astype(float)
    lp.col_lower_ = np.zeros(columns)
    lp.col_upper_ = np.full(columns, np.inf)
    lp.row_lower_ = np.concatenate(row_lower).astype(float)
    lp.row_upper_ = np.concatenate(row_upper).astype(float)
    lp.a_matrix_.format_ = highspy.MatrixFormat.kColwise
    lp.a_matrix_.start_ = np.concatenate([[0], np.cumsum(per_column)]).astype(np.int32)
    lp.a_matrix_.index_ = index[keep].astype(np.int32)
    lp.a_matrix_.value_ = value[keep].astype(float)

    started = time.perf_counter()
    with native_stdout_silenced():
        highs = highspy.Highs()
        highs.setOptionValue("output_flag", False)
        highs.setOptionValue("time_limit", float(time_limit_s))
        highs.setOptionValue("threads", 1)
        highs.passModel(lp)
        highs.run()
    elapsed_s = time.perf_counter() - started
    status = highs.getModelStatus()
    if status in (highspy.HighsModelStatus.kInfeasible,
                  highspy.HighsModelStatus.kUnboundedOrInfeasible):
        raise InfeasibleError(_capacity_shortfall(problem, replicas, eligible))
    if status != highspy.HighsModelStatus.kOptimal:
        raise SolverError(f"{SOLVER_NAME} stopped without a routing: "
                          f"{highs.modelStatusToString(status)}")

    routing = np.zeros((n_classes, n_deps))
    routing[classes, deployments] = np.maximum(np.asarray(highs.getSolution().col_value), 0.0)
    active_j, idle_j = problem.plan_energy_j(replicas, routing)
    return Solution(replicas=replicas, routing=routing, solver=SOLVER_NAME, status="optimal",
                    objective_j=active_j + idle_j, bound_j=active_j + idle_j, gap=0.0,
                    solve_time_s=elapsed_s)


def _capacity_shortfall(problem: Problem, replicas: np.ndarray,
                        eligible: np.ndarray) -> list[str]:
    """Why the given replicas cannot carry the demand: per class, the requests it brings and
    the most the replicas it may use could take if they served it alone."""
    usable_s = problem.horizon_s * problem.max_utilization * replicas
    reasons = []
    for i, demand in enumerate(problem.classes):
        with np.errstate(divide="ignore"):
            alone = np.where(eligible[i], usable_s / problem.occupancy_s[i], 0.0)
        if alone.sum() < demand.count:
            reasons.append(f"class {demand.id}: {demand.count:g} requests, the replicas it may "
                           f"use hold at most {alone.sum():.0f} on their own")
    if not reasons:
        reasons.append("the replicas given cannot carry every class at once (capacity shared "
                       "between classes, or the mean-quality target); add replicas or plan "
                       "without --replicas")
    return reasons
