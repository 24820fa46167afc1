"""The independent plan checker: every plan from every backend and baseline goes through it.

It trusts nothing but the problem's raw arrays and records: eligibility, energy and
capacities are recomputed here, separately from ``Problem.eligible`` and
``Problem.plan_energy_j`` and from the solvers, so a bug in one is not a bug in both.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from solvers.errors import PlanRejected
from solvers.problem import Problem, Solution


@dataclass(frozen=True)
class CheckReport:
    """What the checker found; ``ok`` is True exactly when ``violations`` is empty."""

    ok: bool
    violations: list[str]
    energy_active_j: float
    """Recomputed energy of the routed work above the replicas' base power."""
    energy_base_j: float
    """Recomputed base energy of the replicas that are on, over the horizon."""
    slo_ok_fraction: float
    """Request-weighted fraction of routed requests on servable pairs that meet their SLOs."""
    served_fraction: float
    """Routed requests over demanded requests (1.0 when nothing is demanded)."""


def check_plan(
    problem: Problem, solution: Solution, *, enforce_slo: bool = True, tol: float = 1e-6
) -> CheckReport:
    """Check ``solution`` against every constraint of ``problem``; never raises on a bad plan.

    ``tol`` is relative: amounts are compared with ``tol`` times their scale (a class's count,
    a deployment's usable time, a rack's cap, the recomputed energy that ``objective_j`` must
    match). Device counts are integers and compared exactly. With ``enforce_slo`` False,
    SLO breaches are not violations (``slo_ok_fraction`` still reports them).
    """
    n_classes, n_deps = len(problem.classes), len(problem.deployments)
    replicas = np.asarray(solution.replicas, dtype=float)
    routing = np.asarray(solution.routing, dtype=float)
    shape_errors = []
    if replicas.shape != (n_deps,):
        shape_errors.append(f"replicas has shape {replicas.shape}, expected {(n_deps,)}")
    if routing.shape != (n_classes, n_deps):
        shape_errors.append(f"routing has shape {routing.shape}, expected {(n_classes, n_deps)}")
    if shape_errors:
        return CheckReport(False, shape_errors, float("nan"), float("nan"), 0.0, 0.0)

    violations: list[str] = []
    counts = np.array([demand.count for demand in problem.classes], dtype=float)
    # A routed amount counts as "something" only above the class's noise floor.
    noise = tol * np.maximum(counts, 1.0)[:, None]
    used = routing > noise
    servable = np.asarray(problem.servable, dtype=bool)

    violations += _check_values(problem, replicas, routing, noise)
    # Non-finite entries are reported above; as zeros they let every other check still run.
    replicas = np.where(np.isfinite(replicas), replicas, 0.0)
    routing = np.where(np.isfinite(routing), routing, 0.0)
    violations += _check_demand(problem, routing, counts, tol)
    violations += _check_routing_targets(problem, replicas, used, servable)
    violations += _check_capacity(problem, replicas, routing, servable, tol)
    violations += _check_inventory(problem, replicas)
    violations += _check_memory(problem, replicas)
    violations += _check_quality(problem, routing, used, counts, tol)
    slo_met = _slo_met(problem, servable)
    if enforce_slo:
        violations += _check_slo(problem, used & servable & ~slo_met)
    violations += _check_rack_power(problem, replicas, tol)

    active_j = float(np.sum(np.where(servable & (routing > 0), problem.energy_j, 0.0) * routing))
    base_w = np.array([dep.base_power_w for dep in problem.deployments], dtype=float)
    base_j = float(replicas @ base_w) * problem.horizon_s
    violations += _check_objective(solution.objective_j, active_j + base_j, tol)

    routed_total = float(routing.sum())
    slo_ok_routed = float(routing[servable & slo_met].sum())
    return CheckReport(
        ok=not violations,
        violations=violations,
        energy_active_j=active_j,
        energy_base_j=base_j,
        slo_ok_fraction=slo_ok_routed / routed_total if routed_total > 0 else 1.0,
        served_fraction=routed_total / float(counts.sum()) if counts.sum() > 0 else 1.0,
    )


def assert_valid(problem: Problem, solution: Solution, source: str) -> CheckReport:
    """``check_plan`` with SLOs enforced; a bad plan raises ``PlanRejected`` naming ``source``."""
    report = check_plan(problem, solution)
    if not report.ok:
        raise PlanRejected(source, report.violations)
    return report


def _check_values(
    problem: Problem, replicas: np.ndarray, routing: np.ndarray, noise: np.ndarray
) -> list[str]:
    found = []
    for dep, value in zip(problem.deployments, replicas, strict=True):
        if not (np.isfinite(value) and value >= 0 and float(value) == int(value)):
            found.append(f"replicas of {dep.id} is {value:g}, not a non-negative integer")
    for i, demand in enumerate(problem.classes):
        for k, dep in enumerate(problem.deployments):
            value = routing[i, k]
            if not np.isfinite(value):
                found.append(f"routing of class {demand.id} to {dep.id} is not finite ({value})")
            elif value < -noise[i, 0]:
                found.append(f"routing of class {demand.id} to {dep.id} is negative ({value:g})")
    return found


def _check_demand(
    problem: Problem, routing: np.ndarray, counts: np.ndarray, tol: float
) -> list[str]:
    routed = routing.sum(axis=1)
    return [
        f"demand of class {demand.id}: routed {routed[i]:.9g} of {counts[i]:.9g} requests"
        for i, demand in enumerate(problem.classes)
        if abs(routed[i] - counts[i]) > tol * max(counts[i], 1.0)
    ]


def _check_routing_targets(
    problem: Problem, replicas: np.ndarray, used: np.ndarray, servable: np.ndarray
) -> list[str]:
    found = []
    for i, k in zip(*np.nonzero(used), strict=True):
        demand, dep = problem.classes[i], problem.deployments[k]
        if not servable[i, k]:
            found.append(f"class {demand.id} routed to {dep.id}, which cannot serve it")
        if replicas[k] == 0:
            found.append(f"class {demand.id} routed to {dep.id}, which has zero replicas")
    return found


def _check_capacity(
    problem: Problem, replicas: np.ndarray, routing: np.ndarray, servable: np.ndarray, tol: float
) -> list[str]:
    occupancy_s = np.where(servable, problem.occupancy_s, 0.0)
    load_s = (occupancy_s * routing).sum(axis=0)
    usable_s = replicas * problem.horizon_s * problem.max_utilization
    per_replica_s = problem.horizon_s * problem.max_utilization
    return [
        f"capacity of {dep.id}: {load_s[k]:.6g} replica-s routed, "
        f"{usable_s[k]:.6g} replica-s usable on {int(replicas[k])} replicas"
        for k, dep in enumerate(problem.deployments)
        if load_s[k] > usable_s[k] + tol * max(usable_s[k], per_replica_s)
    ]


def _check_inventory(problem: Problem, replicas: np.ndarray) -> list[str]:
    found = []
    for pool in problem.pools:
        devices = sum(
            dep.tp * replicas[k] for k, dep in enumerate(problem.deployments) if dep.pool == pool.id
        )
        if devices > pool.count:
            found.append(f"inventory of pool {pool.id}: {devices:g} devices used of {pool.count}")
    return found


def _check_memory(problem: Problem, replicas: np.ndarray) -> list[str]:
    return [
        f"memory of {dep.id}: needs {dep.memory_need_gb:g} GB per device, "
        f"device has {dep.memory_gb:g} GB, yet {int(replicas[k])} replicas are on"
        for k, dep in enumerate(problem.deployments)
        if replicas[k] > 0 and dep.memory_need_gb > dep.memory_gb
    ]


def _check_quality(
    problem: Problem, routing: np.ndarray, used: np.ndarray, counts: np.ndarray, tol: float
) -> list[str]:
    quality = np.array([dep.quality for dep in problem.deployments], dtype=float)
    found = [
        f"quality of class {demand.id}: routed to {dep.id} of quality {quality[k]:g} "
        f"below its min_quality {demand.min_quality:g}"
        for i, demand in enumerate(problem.classes)
        for k, dep in enumerate(problem.deployments)
        if used[i, k] and quality[k] < demand.min_quality
    ]
    target = problem.min_mean_quality
    total = counts.sum()
    if target is not None and total > 0:
        mean = float((routing * quality).sum()) / total
        if mean < target - tol * max(abs(target), 1.0):
            found.append(f"mean quality {mean:.6g} below the target {target:g}")
    return found


def _slo_met(problem: Problem, servable: np.ndarray) -> np.ndarray:
    """(C, D) True where every latency of a servable pair is within its class's SLOs."""
    met = servable.copy()
    for latency_s, slo_name in (
        (problem.ttft_s, "slo_ttft_s"),
        (problem.itl_s, "slo_itl_s"),
        (problem.e2e_s, "slo_e2e_s"),
    ):
        slo_s = np.array([getattr(demand, slo_name) for demand in problem.classes])
        met &= np.where(servable, latency_s, np.inf) <= slo_s[:, None]
    return met


def _check_slo(problem: Problem, breached: np.ndarray) -> list[str]:
    found = []
    for i, k in zip(*np.nonzero(breached), strict=True):
        demand, dep = problem.classes[i], problem.deployments[k]
        over = [
            f"{label} {latency_s[i, k]:.3g} s > {slo_s:g} s"
            for label, latency_s, slo_s in (
                ("TTFT", problem.ttft_s, demand.slo_ttft_s),
                ("ITL", problem.itl_s, demand.slo_itl_s),
                ("e2e", problem.e2e_s, demand.slo_e2e_s),
            )
            if latency_s[i, k] > slo_s
        ]
        found.append(f"SLO of class {demand.id} on {dep.id}: {', '.join(over)}")
    return found


def _check_rack_power(problem: Problem, replicas: np.ndarray, tol: float) -> list[str]:
    pool_rack = {pool.id: pool.rack for pool in problem.pools}
    found = []
    for rack in problem.racks:
        if rack.power_cap_w is None:
            continue
        peak_w = sum(
            dep.peak_power_w * replicas[k]
            for k, dep in enumerate(problem.deployments)
            if pool_rack[dep.pool] == rack.id
        )
        if peak_w > rack.power_cap_w * (1 + tol):
            found.append(
                f"rack power cap of {rack.id}: {peak_w:.6g} W peak placed, "
                f"cap {rack.power_cap_w:g} W"
            )
    return found


def _check_objective(objective_j: float, recomputed_j: float, tol: float) -> list[str]:
    diff_j = objective_j - recomputed_j
    scale_j = max(abs(recomputed_j), 1.0)
    if np.isfinite(objective_j) and abs(diff_j) <= tol * scale_j:
        return []
    return [
        f"objective: reported {objective_j:.9g} J, recomputed {recomputed_j:.9g} J "
        f"(active + base), off by {diff_j:+.3g} J ({diff_j / scale_j:+.2e} relative)"
    ]
