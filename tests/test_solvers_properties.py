"""Property tests on random small problems: every plan is valid, the MILP is optimal (against
brute force), never worse than a baseline, deterministic, and infeasibility is always explained.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from scipy.optimize import linprog

from solvers.baselines import BASELINES, run_baseline
from solvers.checker import assert_valid
from solvers.diagnose import explain_infeasibility
from solvers.errors import InfeasibleError
from solvers.milp import solve_milp
from solvers.problem import DemandClass, Deployment, Pool, Problem, Rack

PROPERTY_SETTINGS = settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.filter_too_much, HealthCheck.too_slow],
)


@st.composite
def problems(draw, max_devices: int = 4, max_deps: int = 4) -> Problem:
    """Small random problems: 1-2 racks, 1-3 pools, 1-``max_deps`` deployments, 1-3 classes.

    Each class's whole demand needs 0.05-1.5 replicas of a deployment (``occupancy_s`` is
    drawn as that load), so plans range from one replica to a full pool, and memory misfits,
    unservable pairs, e2e SLOs, per-class and mean quality targets all occur.
    """
    horizon_s = draw(st.floats(600.0, 3600.0))
    racks = [
        Rack(f"r{j}", draw(st.one_of(st.none(), st.floats(500.0, 5000.0))))
        for j in range(draw(st.integers(1, 2)))
    ]
    pools = [
        Pool(f"p{j}", f"gpu{j}", draw(st.integers(1, max_devices)), draw(st.sampled_from(racks)).id)
        for j in range(draw(st.integers(1, 3)))
    ]
    deployments = []
    for k in range(draw(st.integers(1, max_deps))):
        idle_power_w = draw(st.floats(10.0, 300.0))
        deployments.append(
            Deployment(
                id=f"d{k}",
                pool=draw(st.sampled_from(pools)).id,
                llm=draw(st.sampled_from(["llmA", "llmB"])),
                tp=draw(st.integers(1, 2)),
                max_batch=draw(st.integers(1, 16)),
                quality=draw(st.floats(0.3, 1.0)),
                idle_power_w=idle_power_w,
                peak_power_w=idle_power_w * draw(st.floats(1.2, 3.0)),
                memory_need_gb=draw(st.floats(10.0, 90.0)),
                memory_gb=80.0,
            )
        )
    classes = [
        DemandClass(
            id=f"c{i}",
            count=draw(st.floats(1.0, 3000.0)),
            min_quality=draw(st.one_of(st.just(-math.inf), st.floats(0.3, 0.7))),
            slo_e2e_s=draw(st.one_of(st.just(math.inf), st.floats(2.0, 10.0))),
        )
        for i in range(draw(st.integers(1, 3)))
    ]
    shape = (len(classes), len(deployments))
    size = shape[0] * shape[1]

    def matrix(low: float, high: float) -> np.ndarray:
        values = draw(st.lists(st.floats(low, high), min_size=size, max_size=size))
        return np.array(values).reshape(shape)

    counts = np.array([demand.count for demand in classes])[:, None]
    servable = np.array(
        draw(st.lists(st.sampled_from([True] * 5 + [False]), min_size=size, max_size=size))
    ).reshape(shape)
    return Problem(
        horizon_s=horizon_s,
        racks=tuple(racks),
        pools=tuple(pools),
        deployments=tuple(deployments),
        classes=tuple(classes),
        energy_j=matrix(0.1, 100.0),
        occupancy_s=matrix(0.05, 1.5) * horizon_s / counts,
        ttft_s=matrix(0.01, 1.0),
        itl_s=matrix(0.01, 0.1),
        e2e_s=matrix(0.1, 10.0),
        servable=servable,
        max_utilization=draw(st.floats(0.5, 1.0)),
        min_mean_quality=draw(st.one_of(st.none(), st.none(), st.floats(0.3, 0.7))),
    )


def solve_or_reject(problem: Problem, **options):
    """The MILP plan, or hypothesis rejects the example as infeasible."""
    try:
        return solve_milp(problem, **options)
    except InfeasibleError:
        assume(False)
        raise  # unreachable: assume(False) raises


@PROPERTY_SETTINGS
@given(problems())
def test_plans_are_valid_no_worse_than_baselines_and_deterministic(problem):
    solution = solve_or_reject(problem, gap_rel=1e-9)
    assert solution.status == "optimal"
    assert_valid(problem, solution, solution.solver)
    assert solution.bound_j <= solution.objective_j * (1 + 1e-9)
    for name in BASELINES:
        try:
            baseline = run_baseline(name, problem)
        except InfeasibleError:
            continue
        assert_valid(problem, baseline, name)
        assert solution.objective_j <= baseline.objective_j * (1 + 1e-7), name
    again = solve_milp(problem, gap_rel=1e-9)
    assert again.replicas.tobytes() == solution.replicas.tobytes()
    assert again.routing.tobytes() == solution.routing.tobytes()


@PROPERTY_SETTINGS
@given(problems())
def test_infeasible_problems_are_always_explained(problem):
    reasons = None
    try:
        solve_milp(problem)
    except InfeasibleError as exc:
        reasons = exc.reasons
    assume(reasons is not None)
    assert reasons
    assert all(reason.strip() for reason in reasons)
    assert reasons == explain_infeasibility(problem)


def brute_force_j(problem: Problem) -> float:
    """Least energy over every integer replica vector, routing each by an exact LP."""
    eligible = problem.eligible()
    pairs = list(zip(*np.nonzero(eligible), strict=True))
    n_classes, n_deps = len(problem.classes), len(problem.deployments)
    energy = np.array([problem.energy_j[i, k] for i, k in pairs])
    demand_rows = np.zeros((n_classes, len(pairs)))
    capacity_rows = np.zeros((n_deps, len(pairs)))
    quality_row = np.zeros((1, len(pairs)))
    for col, (i, k) in enumerate(pairs):
        demand_rows[i, col] = 1.0
        capacity_rows[k, col] = problem.occupancy_s[i, k]
        quality_row[0, col] = -problem.deployments[k].quality
    idle_j = np.array([dep.idle_power_w * problem.horizon_s for dep in problem.deployments])
    upper = [
        problem.pool_of(dep).count // dep.tp if dep.memory_need_gb <= dep.memory_gb else 0
        for dep in problem.deployments
    ]
    best_j = math.inf
    for replicas in itertools.product(*(range(u + 1) for u in upper)):
        if not _fits_inventory_and_racks(problem, replicas):
            continue
        a_ub = capacity_rows
        b_ub = np.array(replicas) * problem.horizon_s * problem.max_utilization
        if problem.min_mean_quality is not None:
            a_ub = np.vstack([capacity_rows, quality_row])
            b_ub = np.append(b_ub, -problem.min_mean_quality * problem.demand.sum())
        if not pairs:
            continue
        routed = linprog(
            energy,
            A_ub=a_ub,
            b_ub=b_ub,
            A_eq=demand_rows,
            b_eq=problem.demand,
            bounds=(0, None),
            method="highs",
        )
        if routed.status == 0:
            best_j = min(best_j, routed.fun + float(np.dot(replicas, idle_j)))
    return best_j


def _fits_inventory_and_racks(problem: Problem, replicas) -> bool:
    devices = dict.fromkeys((pool.id for pool in problem.pools), 0)
    peak_w = dict.fromkeys((rack.id for rack in problem.racks), 0.0)
    for dep, count in zip(problem.deployments, replicas, strict=True):
        devices[dep.pool] += dep.tp * count
        peak_w[problem.pool_of(dep).rack] += dep.peak_power_w * count
    return all(devices[pool.id] <= pool.count for pool in problem.pools) and all(
        rack.power_cap_w is None or peak_w[rack.id] <= rack.power_cap_w for rack in problem.racks
    )


@PROPERTY_SETTINGS
@given(problems(max_devices=3, max_deps=3))
def test_milp_optimum_equals_brute_force(problem):
    solution = solve_or_reject(problem, gap_rel=1e-9)
    assert solution.objective_j == pytest.approx(brute_force_j(problem), rel=1e-6)
