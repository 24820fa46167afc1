"""Exact routing on the replicas an operator already runs: an LP, built sparse for HiGHS.

With the replicas ``n`` fixed, the core MILP of DESIGN.md loses its integers::

    min   Σ e[c,d]·x[c,d]                     (+ the base energy of the replicas, a constant)
    s.t.  Σ_d x[c,d] = N[c]                   every request served once
          Σ_c s[c,d]·x[c,d] <= u·H·n[d]       capacity, each class at its own occupancy on d
          Σ q[d]·x[c,d] >= Q·Σ N[c]            mean quality, when set
          x[c,d] >= 0 on eligible pairs of deployments that have replicas

Capacity weighs each class by its own occupancy on each deployment, so this is a generalized
transportation problem, not a pure min-cost flow: a flow on it would be exact only where
``s[c,d]`` factors into a class size times a deployment speed. It is the sparse model of
``solvers.sparse`` with every ``n`` pinned (HiGHS's presolve removes them); inventory, memory
and rack power involve only ``n`` and are checked on the given replicas first, so that each
breach is named.
"""

from __future__ import annotations

import numpy as np

from solvers import sparse
from solvers.errors import InfeasibleError, SolverError
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

    replicas = np.asarray(replicas)
    if replicas.shape != (len(problem.deployments),):
        raise SolverError(f"replicas has shape {replicas.shape}, expected "
                          f"({len(problem.deployments)},)")
    broken = fixed_replica_violations(problem, replicas)
    if broken:
        raise InfeasibleError(broken)
    replicas = replicas.astype(np.int64)
    eligible = problem.eligible() & (replicas > 0)[None, :]
    unroutable = [demand.id for i, demand in enumerate(problem.classes)
                  if demand.count > 0 and not eligible[i].any()]
    if unroutable:
        raise InfeasibleError([f"class {c}: no replica it may use (SLO, quality or context) "
                               f"among the replicas given" for c in unroutable])
    model = sparse.build(problem, fixed_replicas=replicas)
    # With every n pinned, HiGHS's MIP presolve shrinks the model further than its LP
    # presolve and then solves the LP that is left (L: 1.8 s against 4.2-5.1 s as an LP).
    result = sparse.run(model, integer=True, time_limit_s=time_limit_s, gap_rel=0.0)
    if result.status == "infeasible":
        raise InfeasibleError(_capacity_shortfall(problem, replicas, eligible))
    if result.status != "optimal":
        raise SolverError(f"{SOLVER_NAME} stopped without a routing within {time_limit_s} s")
    _, routing = sparse.plan_arrays(problem, model, np.maximum(result.values, 0.0))
    active_j, base_j = problem.plan_energy_j(replicas, routing)
    return Solution(replicas=replicas, routing=routing, solver=SOLVER_NAME, status="optimal",
                    objective_j=active_j + base_j, bound_j=active_j + base_j, gap=0.0,
                    solve_time_s=result.solve_time_s)


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
