"""Baselines: the registry, and what each operator rule turns on and where it routes."""

from __future__ import annotations

import numpy as np
import pytest

from energy_models.registry import UnknownNameError
from solvers import baselines
from solvers.baselines import BASELINES, run_baseline, wilkins_threshold
from solvers.checker import assert_valid
from solvers.errors import InfeasibleError, ProblemError
from solvers.problem import DemandClass, Pool, Problem, Rack
from tests.test_solvers import dep, make_problem

LOW, SMALL, LARGE = 0, 1, 2  # deployment positions in ``fleet_problem``


def fleet_problem(**overrides) -> Problem:
    """A low-power pool (L4s) and a big pool (H100s); a short and a long class.

    ``l4_small`` is slow but frugal and packs densest (occupancy × tp); ``h100_small`` is the
    fastest; ``h100_large`` (tp 2) has the best quality. One replica of anything takes either
    class whole.
    """
    fields = {
        "pools": [Pool("p_low", "L4", 4, "r0"), Pool("p_big", "H100", 4, "r0")],
        "deployments": [
            dep("l4_small", "p_low", llm="small", quality=0.6, idle_power_w=30, peak_power_w=100),
            dep("h100_small", "p_big", llm="small", quality=0.6, peak_power_w=700),
            dep(
                "h100_large",
                "p_big",
                llm="large",
                quality=0.9,
                tp=2,
                idle_power_w=200,
                peak_power_w=1400,
            ),
        ],
        "classes": [DemandClass("short", 1000), DemandClass("long", 1000)],
        "energy_j": [[2.0, 3.0, 10.0], [8.0, 12.0, 40.0]],
        "occupancy_s": [[0.72, 0.8, 0.5], [0.72, 0.8, 0.5]],
        "e2e_s": [[2.0, 0.5, 1.0], [8.0, 2.0, 4.0]],
    }
    fields.update(overrides)
    return make_problem(**fields)


def _checked(name: str, problem: Problem):
    solution = run_baseline(name, problem)
    report = assert_valid(problem, solution, name)
    assert solution.solver == f"baseline:{name}"
    assert solution.status == "heuristic"
    assert solution.objective_j == pytest.approx(report.energy_active_j + report.energy_base_j)
    return solution


def test_registry_holds_the_operator_rules():
    assert set(BASELINES) == {
        "round_robin",
        "performance_first",
        "accuracy_first",
        "consolidation",
        "wilkins_threshold",
    }


def test_registry_refuses_duplicate_names():
    with pytest.raises(ValueError, match="'consolidation' is already registered"):
        BASELINES.register("consolidation")(lambda problem: None)


def test_unknown_baseline_lists_the_known_names():
    known = "known: performance_first, accuracy_first, consolidation, round_robin, wilkins"
    with pytest.raises(UnknownNameError, match=known):
        run_baseline("random_walk", fleet_problem())


def test_performance_first_takes_the_fastest_device():
    solution = _checked("performance_first", fleet_problem())
    assert solution.replicas.tolist() == [0, 1, 0]
    assert solution.routing[:, SMALL].tolist() == [1000.0, 1000.0]


def test_accuracy_first_takes_the_best_model():
    solution = _checked("accuracy_first", fleet_problem())
    assert solution.replicas.tolist() == [0, 0, 1]


def test_consolidation_packs_onto_the_fewest_device_seconds():
    solution = _checked("consolidation", fleet_problem())
    assert solution.replicas.tolist() == [1, 0, 0]


def test_wilkins_sends_short_work_to_the_low_power_pool_and_long_to_the_big_one():
    solution = _checked("wilkins_threshold", fleet_problem())
    assert solution.routing.tolist() == [[1000.0, 0.0, 0.0], [0.0, 1000.0, 0.0]]


def test_wilkins_with_explicit_tokens_and_threshold():
    # Reversed token counts send the "long" class to the low-power pool instead.
    solution = wilkins_threshold(fleet_problem(), class_tokens=[4000, 200], threshold=1000)
    assert solution.routing.tolist() == [[0.0, 1000.0, 0.0], [1000.0, 0.0, 0.0]]


def test_wilkins_spills_to_the_other_pool_when_the_low_power_one_is_full():
    problem = fleet_problem(
        pools=[Pool("p_low", "L4", 1, "r0"), Pool("p_big", "H100", 4, "r0")],
        classes=[DemandClass("short", 6000), DemandClass("long", 1000)],
    )
    solution = wilkins_threshold(problem, class_tokens=[100, 5000], threshold=1000)
    assert_valid(problem, solution, "wilkins_threshold")
    # One L4 replica takes 3600 / 0.72 = 5000 short requests; the rest spills to the H100s.
    np.testing.assert_allclose(solution.routing[0], [5000.0, 1000.0, 0.0])


def test_wilkins_rejects_tokens_of_the_wrong_length():
    with pytest.raises(ProblemError, match="class_tokens has shape"):
        wilkins_threshold(fleet_problem(), class_tokens=[1.0])


def test_round_robin_turns_everything_on_and_splits_per_replica():
    solution = _checked("round_robin", fleet_problem())
    # p_low: four l4_small; p_big: the higher-quality of two equally eligible LLMs, on tp 2.
    assert solution.replicas.tolist() == [4, 0, 2]
    np.testing.assert_allclose(solution.routing, [[4000 / 6, 0, 2000 / 6]] * 2)


def test_round_robin_prefers_the_llm_eligible_for_more_demand_then_small_tp_large_batch():
    problem = make_problem(
        pools=[Pool("p0", "gpuA", 8, "r0")],
        deployments=[
            dep("narrow", "p0", llm="B", quality=0.9),
            dep("wide_tp1", "p0", llm="A", quality=0.6, memory_need_gb=90.0),
            dep("wide_tp2_b8", "p0", llm="A", quality=0.6, tp=2, max_batch=8),
            dep("wide_tp2_b16", "p0", llm="A", quality=0.6, tp=2, max_batch=16),
            dep("wide_tp4", "p0", llm="A", quality=0.6, tp=4),
        ],
        classes=[DemandClass("fast", 100, slo_e2e_s=1.0), DemandClass("slow", 100)],
        energy_j=np.ones((2, 5)),
        occupancy_s=np.ones((2, 5)),
        e2e_s=[[5.0, 0.5, 0.5, 0.5, 0.5], [5.0, 0.5, 0.5, 0.5, 0.5]],
    )
    solution = _checked("round_robin", problem)
    assert solution.replicas.tolist() == [0, 0, 0, 4, 0]


def test_round_robin_moves_overflow_to_replicas_with_room():
    # 3000 requests split 1500/1500; "a" holds only 1000 (3.6 s each), so 500 move to "b".
    problem = make_problem(
        pools=[Pool("pa", "gpuA", 1, "r0"), Pool("pb", "gpuB", 1, "r0")],
        deployments=[dep("a", "pa"), dep("b", "pb")],
        classes=[DemandClass("chat", 3000)],
        energy_j=[[1.0, 1.0]],
        occupancy_s=[[3.6, 1.2]],
    )
    solution = _checked("round_robin", problem)
    np.testing.assert_allclose(solution.routing, [[1000.0, 2000.0]])


def test_round_robin_is_infeasible_when_every_replica_is_full():
    problem = make_problem(
        deployments=[dep("a", "p0")],
        classes=[DemandClass("chat", 5000)],
        energy_j=[[1.0]],
        occupancy_s=[[3.6]],
    )
    with pytest.raises(InfeasibleError, match="round_robin: class chat: 1000 of 5000"):
        run_baseline("round_robin", problem)


def test_greedy_spills_to_the_next_preference_when_inventory_runs_out():
    # One device for h100_small takes 3600 / 0.8 = 4500 requests; 1500 spill to h100_large.
    problem = fleet_problem(
        pools=[
            Pool("p_low", "L4", 4, "r0"),
            Pool("p_fast", "H100", 1, "r0"),
            Pool("p_big", "H100", 4, "r0"),
        ],
        deployments=[
            dep("l4_small", "p_low", llm="small", quality=0.6, peak_power_w=100),
            dep("h100_small", "p_fast", llm="small", quality=0.6, peak_power_w=700),
            dep("h100_large", "p_big", llm="large", quality=0.9, tp=2, peak_power_w=1400),
        ],
        classes=[DemandClass("short", 6000)],
        energy_j=[[2.0, 3.0, 10.0]],
        occupancy_s=[[0.72, 0.8, 0.5]],
        e2e_s=[[2.0, 0.5, 1.0]],
    )
    solution = _checked("performance_first", problem)
    assert solution.replicas.tolist() == [0, 1, 1]
    np.testing.assert_allclose(solution.routing, [[0.0, 4500.0, 1500.0]])


def test_greedy_respects_the_rack_power_cap():
    # 600 W fits two 300 W replicas of "a"; the third replica's worth goes to rack r1.
    problem = make_problem(
        racks=[Rack("r0", power_cap_w=600.0), Rack("r1")],
        pools=[Pool("p0", "gpuA", 4, "r0"), Pool("p1", "gpuB", 4, "r1")],
        deployments=[dep("a", "p0"), dep("b", "p1")],
        classes=[DemandClass("chat", 3000)],
        energy_j=[[1.0, 2.0]],
        occupancy_s=[[3.6, 3.6]],
    )
    for name in ("performance_first", "consolidation", "wilkins_threshold"):
        solution = _checked(name, problem)
        assert solution.replicas[0] <= 2, name


def test_baselines_never_route_to_ineligible_deployments():
    # "short" must finish within 1 s: only h100_small and h100_large qualify.
    problem = fleet_problem(
        classes=[DemandClass("short", 1000, slo_e2e_s=1.0), DemandClass("long", 1000)]
    )
    for name in BASELINES:
        solution = _checked(name, problem)
        assert solution.routing[0, LOW] == 0.0, name


def test_class_without_eligible_deployment_is_infeasible_for_every_baseline():
    problem = fleet_problem(
        classes=[DemandClass("short", 1000, slo_e2e_s=0.1), DemandClass("long", 1000)]
    )
    for name in BASELINES:
        with pytest.raises(InfeasibleError, match="class short"):
            run_baseline(name, problem)


def test_missing_the_mean_quality_target_is_infeasible():
    problem = fleet_problem(min_mean_quality=0.8)
    with pytest.raises(InfeasibleError, match=r"performance_first: mean quality 0\.6 below"):
        run_baseline("performance_first", problem)
    _checked("accuracy_first", problem)


def test_weighted_median_is_midway_between_the_middle_values():
    median = baselines._weighted_median
    assert median(np.array([0.0, 1.0]), np.array([5.0, 5.0])) == 0.5
    assert median(np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, 1.0])) == 1.0
    assert median(np.array([0.0, 1.0, 2.0]), np.array([10.0, 1.0, 1.0])) == 0.0
