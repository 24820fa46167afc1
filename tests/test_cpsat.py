"""CP-SAT against HiGHS on random small problems: the same optimum within 0.1 % beyond the
stated scaling error, both plans valid, infeasibility agreed on."""

from __future__ import annotations

import dataclasses
import json

import pytest
from hypothesis import given, settings

from solvers.checker import assert_valid
from solvers.cpsat import scaling_error_j, solve_cpsat
from solvers.errors import InfeasibleError
from solvers.milp import solve_milp
from solvers.problem import DemandClass, Pool
from tests.test_solvers import dep, knapsack_like_problem, make_problem
from tests.test_solvers_properties import PROPERTY_SETTINGS, problems
from tests.test_stdout import wattsched

AGREE_REL = 1e-3


@settings(PROPERTY_SETTINGS, max_examples=200)
@given(problems())
def test_cpsat_agrees_with_highs(problem):
    try:
        highs = solve_milp(problem, gap_rel=0.0, time_limit_s=30)
    except InfeasibleError:
        with pytest.raises(InfeasibleError):
            solve_cpsat(problem, gap_rel=0.0, time_limit_s=30)
        return
    cpsat = solve_cpsat(problem, gap_rel=0.0, time_limit_s=30)
    assert_valid(problem, highs, "highs")
    assert_valid(problem, cpsat, "cpsat")
    assert cpsat.solver == "cpsat"
    allowed = AGREE_REL * max(highs.objective_j, 1.0) + scaling_error_j(problem)
    assert abs(cpsat.objective_j - highs.objective_j) <= allowed, (
        cpsat.objective_j, highs.objective_j)


def test_an_exactly_full_split_off_the_routing_grid_is_found():
    # A third and two thirds of one request fill d0 and d1 exactly; on the grid of
    # thousandths one of them is over, so only the widened first model finds this plan.
    problem = make_problem(
        pools=[Pool("pa", "gpu-a", 1, "r0"), Pool("pb", "gpu-b", 1, "r0"),
               Pool("pc", "gpu-c", 1, "r0")],
        deployments=[dep("d0", "pa", idle_power_w=10.0), dep("d1", "pb", idle_power_w=10.0),
                     dep("d2", "pc", idle_power_w=100.0)],
        classes=[DemandClass("c0", 1.0)],
        energy_j=[[1.0, 1.0, 1.0]],
        occupancy_s=[[1800.0, 900.0, 100.0]],
        horizon_s=600.0,
    )
    cpsat = solve_cpsat(problem, gap_rel=0.0)
    assert_valid(problem, cpsat, "cpsat")
    assert cpsat.replicas.tolist() == [1, 1, 0]
    assert cpsat.objective_j == pytest.approx(solve_milp(problem, gap_rel=0.0).objective_j)


def test_a_load_just_over_one_replica_gets_a_second_from_the_strict_model():
    # 600.3 s of work on a 600 s replica: within the first model's one-unit widening, so
    # the exact routing fails on one replica and the strict model asks for two.
    problem = make_problem(
        pools=[Pool("pa", "gpu-a", 2, "r0")],
        deployments=[dep("d0", "pa")],
        classes=[DemandClass("c0", 1.0)],
        energy_j=[[1.0]],
        occupancy_s=[[600.3]],
        horizon_s=600.0,
    )
    cpsat = solve_cpsat(problem, gap_rel=0.0)
    assert_valid(problem, cpsat, "cpsat")
    assert cpsat.replicas.tolist() == [2]


def test_cpsat_is_deterministic_and_meets_the_mean_quality_target():
    problem = knapsack_like_problem()
    problem = dataclasses.replace(problem, min_mean_quality=0.6)
    first = solve_cpsat(problem, gap_rel=0.0)
    again = solve_cpsat(problem, gap_rel=0.0)
    assert_valid(problem, first, "cpsat")
    assert (first.replicas == again.replicas).all()
    assert (first.routing == again.routing).all()


def test_plan_solver_cpsat_on_the_command_line():
    result = wattsched("plan", "--solver", "cpsat", "--format", "json", "--time-limit", "5")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["solver"] == "cpsat"


def test_a_time_limit_before_any_plan_returns_the_checked_baseline_start():
    problem = knapsack_like_problem()
    solution = solve_cpsat(problem, time_limit_s=1e-9)
    assert solution.solver == "cpsat"
    assert solution.status == "feasible"
    assert solution.gap is None
    assert_valid(problem, solution, "cpsat")
