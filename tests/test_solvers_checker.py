"""The independent checker: a valid plan passes, and each kind of violation is named."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from solvers.checker import assert_valid, check_plan
from solvers.errors import PlanRejected
from solvers.problem import DemandClass, Pool, Problem, Rack, Solution
from tests.test_solvers import dep, make_problem


@pytest.fixture
def problem() -> Problem:
    """Two classes on three deployments in two pools of one 1000 W rack.

    ``fast`` serves everything; ``weak`` has quality 0.5 and a 2 s TTFT; ``short`` cannot take
    the ``long`` class. Each replica has 3600 replica-s; a request takes 3.6 s.
    """
    return make_problem(
        racks=[Rack("r0", power_cap_w=1000.0)],
        pools=[Pool("p0", "gpuA", 2, "r0"), Pool("p1", "gpuB", 2, "r0")],
        deployments=[
            dep("fast", "p0"),
            dep("weak", "p1", quality=0.5),
            dep("short", "p1"),
        ],
        classes=[
            DemandClass("long", 1500, min_quality=0.6, slo_ttft_s=1.0),
            DemandClass("chat", 500),
        ],
        energy_j=[[4.0, 1.0, np.nan], [2.0, 1.0, 1.0]],
        occupancy_s=[[3.6, 3.6, np.inf], [3.6, 3.6, 3.6]],
        ttft_s=[[0.5, 2.0, np.nan], [0.5, 2.0, 0.5]],
        servable=[[True, True, False], [True, True, True]],
    )


def plan(problem: Problem, replicas, routing, objective_j: float | None = None) -> Solution:
    """A Solution whose objective is the true energy unless ``objective_j`` overrides it."""
    replicas, routing = np.asarray(replicas), np.asarray(routing, float)
    if objective_j is None:
        active_j, idle_j = problem.plan_energy_j(replicas, routing)
        objective_j = active_j + idle_j
    return Solution(replicas, routing, solver="test", status="heuristic", objective_j=objective_j)


GOOD_REPLICAS = [2, 0, 1]
GOOD_ROUTING = [[1500.0, 0.0, 0.0], [250.0, 0.0, 250.0]]


def test_a_valid_plan_passes_with_its_energy(problem):
    report = assert_valid(problem, plan(problem, GOOD_REPLICAS, GOOD_ROUTING), "test")
    assert report.ok
    assert report.violations == []
    assert report.energy_active_j == pytest.approx(1500 * 4 + 250 * 2 + 250 * 1)
    assert report.energy_base_j == pytest.approx(3 * 100 * 3600)
    assert report.served_fraction == 1.0
    assert report.slo_ok_fraction == 1.0


def _violations(problem, replicas=GOOD_REPLICAS, routing=GOOD_ROUTING, **options) -> str:
    report = check_plan(problem, plan(problem, replicas, routing), **options)
    assert not report.ok
    return "\n".join(report.violations)


def test_wrong_shapes(problem):
    report = check_plan(problem, plan(problem, [1, 1], np.zeros((2, 2)), objective_j=0.0))
    assert report.violations == [
        "replicas has shape (2,), expected (3,)",
        "routing has shape (2, 2), expected (2, 3)",
    ]


def test_fractional_and_negative_replicas(problem):
    found = _violations(problem, replicas=[2.5, -1, 1])
    assert "replicas of fast is 2.5, not a non-negative integer" in found
    assert "replicas of weak is -1, not a non-negative integer" in found


def test_negative_and_non_finite_routing(problem):
    found = _violations(problem, routing=[[1500.0, 0.0, 0.0], [270.0, -20.0, np.nan]])
    assert "routing of class chat to weak is negative (-20)" in found
    assert "routing of class chat to short is not finite (nan)" in found


def test_class_not_served_exactly(problem):
    found = _violations(problem, routing=[[1400.0, 0.0, 0.0], [250.0, 0.0, 250.0]])
    assert "demand of class long: routed 1400 of 1500 requests" in found


def test_routing_to_a_pair_that_cannot_be_served(problem):
    found = _violations(problem, replicas=[2, 0, 2], routing=[[1000, 0, 500], [500, 0, 0]])
    assert "class long routed to short, which cannot serve it" in found


def test_routing_to_a_deployment_with_zero_replicas(problem):
    found = _violations(problem, routing=[[1500.0, 0.0, 0.0], [250.0, 250.0, 0.0]])
    assert "class chat routed to weak, which has zero replicas" in found


def test_over_capacity(problem):
    found = _violations(problem, replicas=[1, 0, 1])
    assert "capacity of fast: 6300 replica-s routed, 3600 replica-s usable on 1 replicas" in found


def test_over_inventory(problem):
    found = _violations(problem, replicas=[3, 0, 1])
    assert "inventory of pool p0: 3 devices used of 2" in found


def test_memory_misfit_with_replicas(problem):
    tight = dataclasses.replace(problem.deployments[0], memory_need_gb=90.0)
    bad = dataclasses.replace(problem, deployments=(tight, *problem.deployments[1:]), _index={})
    found = _violations(bad)
    assert "memory of fast: needs 90 GB per device, device has 80 GB, yet 2 replicas" in found


def test_per_class_quality(problem):
    found = _violations(problem, replicas=[2, 1, 0], routing=[[1000, 500, 0], [500, 0, 0]])
    assert "quality of class long: routed to weak of quality 0.5 below its min_quality 0.6" in found


def test_mean_quality_target(problem):
    strict = dataclasses.replace(problem, min_mean_quality=0.85, _index={})
    assert "mean quality 0.8 below the target 0.85" in _violations(strict)


def test_slo_breach_is_a_violation_unless_slos_are_not_enforced(problem):
    lenient = dataclasses.replace(
        problem, classes=(DemandClass("long", 1500, slo_ttft_s=1.0), problem.classes[1]), _index={}
    )
    replicas, routing = [2, 1, 0], [[1000.0, 500.0, 0.0], [500.0, 0.0, 0.0]]
    assert "SLO of class long on weak: TTFT 2 s > 1 s" in _violations(lenient, replicas, routing)
    report = check_plan(lenient, plan(lenient, replicas, routing), enforce_slo=False)
    assert report.ok
    assert report.slo_ok_fraction == pytest.approx(1500 / 2000)


def test_rack_power_cap(problem):
    found = _violations(problem, replicas=[2, 0, 2])
    assert "rack power cap of r0: 1200 W peak placed, cap 1000 W" in found


def test_objective_that_does_not_match_the_plan(problem):
    truth_j = 1500 * 4 + 250 * 2 + 250 * 1 + 3 * 100 * 3600
    solution = plan(problem, GOOD_REPLICAS, GOOD_ROUTING, objective_j=truth_j + 100.0)
    (found,) = check_plan(problem, solution).violations
    assert found.startswith(f"objective: reported {truth_j + 100:.9g} J, recomputed {truth_j} J")
    assert "off by +100 J" in found


def test_objective_within_relative_tolerance_passes(problem):
    truth_j = 1500 * 4 + 250 * 2 + 250 * 1 + 3 * 100 * 3600
    solution = plan(problem, GOOD_REPLICAS, GOOD_ROUTING, objective_j=truth_j * (1 + 1e-8))
    assert check_plan(problem, solution).ok


def test_assert_valid_names_the_source(problem):
    with pytest.raises(PlanRejected, match="plan from baseline:x rejected: capacity of fast"):
        assert_valid(problem, plan(problem, [1, 0, 1], GOOD_ROUTING), "baseline:x")
