from __future__ import annotations

import dataclasses

import pytest
import yaml

from energy_models.cost import default_chain
from scheduler.build import build_problem
from scheduler.capacity import RESOLUTION, capacity_multiple
from scheduler.inventory import load_fleet
from scheduler.pipeline import solver_for
from solvers.errors import InfeasibleError
from tests.test_stdout import SMALL_WORKLOAD
from workloads.spec import parse_workload


@pytest.fixture(scope="module")
def small_problem():
    fleet = load_fleet()
    workload = parse_workload(yaml.safe_load(SMALL_WORKLOAD), "small.yaml")
    return build_problem(fleet, workload, default_chain(fleet.defaults.engine)).problem


def _times(problem, multiple):
    return dataclasses.replace(problem, occupancy_s=problem.occupancy_s * multiple)


def test_capacity_is_the_largest_multiple_the_planner_can_serve(small_problem):
    solve = solver_for("highs", 30.0, 0.05)
    multiple = capacity_multiple(small_problem, solve)
    assert multiple > 1.0
    solve(_times(small_problem, multiple))
    with pytest.raises(InfeasibleError):
        solve(_times(small_problem, multiple * RESOLUTION ** 2))


def test_demand_the_fleet_cannot_serve_raises_the_solvers_reasons(small_problem):
    solve = solver_for("highs", 30.0, 0.05)
    too_much = _times(small_problem, capacity_multiple(small_problem, solve) * 2)
    with pytest.raises(InfeasibleError, match="infeasible"):
        capacity_multiple(too_much, solve)
