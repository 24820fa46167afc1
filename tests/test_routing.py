"""Exact routing on fixed replicas (``solvers.routing``): the LP equals the MILP with the
same replicas pinned, passes the checker, and explains replicas that cannot carry the load."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from solvers.checker import assert_valid
from solvers.errors import InfeasibleError
from solvers.formulation import replica_upper_bounds
from solvers.milp import solve_milp
from solvers.problem import DemandClass, Deployment, Pool, Problem, Rack
from solvers.routing import solve_routing
from tests.test_solvers_properties import PROPERTY_SETTINGS, problems


@st.composite
def problems_with_replicas(draw) -> tuple[Problem, np.ndarray]:
    """A random problem and replicas within each deployment's memory and pool limits; some
    carry the demand, some do not, some break a rack cap."""
    problem = draw(problems())
    limits = replica_upper_bounds(problem)
    replicas = np.array([draw(st.integers(0, int(limit))) for limit in limits], dtype=np.int64)
    return problem, replicas


def _milp_or_none(problem: Problem, replicas: np.ndarray):
    try:
        return solve_milp(problem, gap_rel=1e-9, fixed_replicas=replicas)
    except InfeasibleError:
        return None


@PROPERTY_SETTINGS
@given(problems_with_replicas())
def test_routing_lp_equals_the_milp_with_the_same_replicas(case):
    problem, replicas = case
    reference = _milp_or_none(problem, replicas)
    if reference is None:
        with pytest.raises(InfeasibleError):
            solve_routing(problem, replicas)
        return
    routed = solve_routing(problem, replicas)
    assert_valid(problem, routed, routed.solver)
    assert np.array_equal(routed.replicas, reference.replicas)
    assert routed.objective_j == pytest.approx(reference.objective_j, rel=1e-6, abs=1e-6)


@PROPERTY_SETTINGS
@given(problems())
def test_routing_on_the_milp_replicas_reproduces_the_milp_optimum(problem):
    try:
        planned = solve_milp(problem, gap_rel=1e-9)
    except InfeasibleError:
        assume(False)
        raise
    routed = solve_routing(problem, planned.replicas)
    assert_valid(problem, routed, routed.solver)
    assert routed.objective_j == pytest.approx(planned.objective_j, rel=1e-6, abs=1e-6)


def _two_deployment_problem(count: float, cap_w: float | None = None) -> Problem:
    """One class over two deployments of one 4-GPU pool: ``fast`` takes half the replica time
    of ``slow`` per request and more energy."""
    deployments = tuple(
        Deployment(id=name, pool="p0", llm="m", tp=1, max_batch=8, quality=0.8,
                   idle_power_w=100.0, peak_power_w=300.0, memory_need_gb=20.0, memory_gb=80.0)
        for name in ("fast", "slow"))
    return Problem(
        horizon_s=3600.0, racks=(Rack("r0", cap_w),), pools=(Pool("p0", "gpu", 4, "r0"),),
        deployments=deployments, classes=(DemandClass("c0", count),),
        energy_j=np.array([[20.0, 10.0]]), occupancy_s=np.array([[1.0, 2.0]]),
        ttft_s=np.full((1, 2), 0.1), itl_s=np.full((1, 2), 0.01), e2e_s=np.full((1, 2), 1.0),
        servable=np.ones((1, 2), dtype=bool))


def test_cheapest_replica_fills_first_then_the_rest_spills_over():
    problem = _two_deployment_problem(count=3000.0)
    routed = solve_routing(problem, np.array([1, 1]))
    # slow holds 3600 / 2 = 1800 requests; the other 1200 go to fast.
    assert routed.routing[0].tolist() == pytest.approx([1200.0, 1800.0])
    assert routed.objective_j == pytest.approx(1200 * 20 + 1800 * 10 + 2 * 100 * 3600)


def test_replicas_that_cannot_carry_the_demand_are_explained():
    problem = _two_deployment_problem(count=9000.0)
    with pytest.raises(InfeasibleError, match=r"class c0: 9000 requests, .* at most 5400"):
        solve_routing(problem, np.array([1, 1]))


def test_replicas_beyond_a_pool_or_a_rack_cap_are_refused_before_solving():
    problem = _two_deployment_problem(count=10.0, cap_w=500.0)
    with pytest.raises(InfeasibleError, match=r"pool p0: the replicas use 5 devices, it has 4"):
        solve_routing(problem, np.array([3, 2]))
    with pytest.raises(InfeasibleError, match=r"rack r0: the replicas peak at 600 W"):
        solve_routing(problem, np.array([1, 1]))


def test_infeasibility_at_fleet_scale_names_a_few_classes_and_limits_not_all():
    from solvers.diagnose import SHOWN_CLASSES, SHOWN_LIMITS, explain_infeasibility

    pools = tuple(Pool(f"p{j}", "gpu", 1, "r0") for j in range(12))
    deployments = tuple(
        Deployment(id=f"d{j}", pool=f"p{j}", llm="m", tp=1, max_batch=8, quality=0.8,
                   idle_power_w=100.0, peak_power_w=300.0, memory_need_gb=20.0,
                   memory_gb=80.0) for j in range(12))
    classes = tuple(DemandClass(f"c{i}", 10_000.0) for i in range(12))
    shape = (len(classes), len(deployments))
    problem = Problem(
        horizon_s=3600.0, racks=(Rack("r0"),), pools=pools, deployments=deployments,
        classes=classes, energy_j=np.ones(shape), occupancy_s=np.ones(shape),
        ttft_s=np.full(shape, 0.1), itl_s=np.full(shape, 0.01), e2e_s=np.ones(shape),
        servable=np.ones(shape, dtype=bool))
    reasons = explain_infeasibility(problem)
    named = [r for r in reasons if r.startswith("class ")]
    assert 1 <= len(named) <= SHOWN_CLASSES
    assert all(r.count("pool inventory") == SHOWN_LIMITS for r in named)
    assert all(r.endswith(f"and {12 - SHOWN_LIMITS} more") for r in named)
    # 120,000 requests, 12 replicas x 3,600 s hold 43,200: at least 8 classes fall short, the
    # ones not named are counted, and every unmet request is accounted for.
    assert len(named) == SHOWN_CLASSES
    shown = sum(float(r.split(":")[1].split(" of ")[0]) for r in named)
    hidden = reasons[-1]
    assert hidden.startswith("and ")
    assert " more classes short (" in hidden
    assert shown + float(hidden.split("(")[1].split(" ")[0]) == pytest.approx(120_000 - 43_200)
