"""The MILP backend and the infeasibility diagnosis on hand-made problems with known answers.

``make_problem`` and ``dep`` are shared with the other ``test_solvers_*`` files.
"""

from __future__ import annotations

import math

import highspy
import numpy as np
import pulp
import pytest

from energy_models.registry import UnknownNameError
from solvers import formulation, milp
from solvers.baselines import run_baseline
from solvers.checker import assert_valid
from solvers.diagnose import explain_infeasibility
from solvers.errors import InfeasibleError, NoSolutionError
from solvers.milp import DEFAULT_GAP_REL, solve_milp
from solvers.problem import DemandClass, Deployment, Pool, Problem, Rack


def dep(dep_id: str, pool: str, **fields) -> Deployment:
    """A deployment with harmless defaults: fits memory, 100 W idle, 300 W peak."""
    values = {
        "llm": "m",
        "tp": 1,
        "max_batch": 8,
        "quality": 0.8,
        "idle_power_w": 100.0,
        "peak_power_w": 300.0,
        "memory_need_gb": 20.0,
        "memory_gb": 80.0,
    }
    values.update(fields)
    return Deployment(id=dep_id, pool=pool, **values)


def make_problem(
    *,
    deployments: list[Deployment],
    classes: list[DemandClass],
    energy_j,
    occupancy_s,
    pools: list[Pool] | None = None,
    racks: list[Rack] | None = None,
    e2e_s=None,
    ttft_s=None,
    itl_s=None,
    servable=None,
    horizon_s: float = 3600.0,
    max_utilization: float = 1.0,
    min_mean_quality: float | None = None,
) -> Problem:
    """A Problem from lists; latencies default to 0 and every pair to servable."""
    shape = (len(classes), len(deployments))

    def matrix(value, fill):
        return np.full(shape, fill, dtype=float) if value is None else np.asarray(value, float)

    return Problem(
        horizon_s=horizon_s,
        racks=tuple(racks or [Rack("r0")]),
        pools=tuple(pools or [Pool("p0", "gpuA", 4, "r0")]),
        deployments=tuple(deployments),
        classes=tuple(classes),
        energy_j=matrix(energy_j, 0.0),
        occupancy_s=matrix(occupancy_s, 0.0),
        ttft_s=matrix(ttft_s, 0.0),
        itl_s=matrix(itl_s, 0.0),
        e2e_s=matrix(e2e_s, 0.0),
        servable=np.ones(shape, bool) if servable is None else np.asarray(servable, bool),
        max_utilization=max_utilization,
        min_mean_quality=min_mean_quality,
    )


TWO_POOLS = [Pool("p0", "gpuA", 4, "r0"), Pool("p1", "gpuB", 4, "r0")]


def two_pool_problem(**overrides) -> Problem:
    """One class of 1000 requests; deployment ``b`` (pool p1) spends half the energy of ``a``."""
    fields = {
        "pools": TWO_POOLS,
        "deployments": [dep("a", "p0"), dep("b", "p1")],
        "classes": [DemandClass("chat", 1000)],
        "energy_j": [[10.0, 5.0]],
        "occupancy_s": [[1.0, 1.0]],
    }
    fields.update(overrides)
    return make_problem(**fields)


def test_picks_the_low_energy_pool():
    problem = two_pool_problem()
    solution = solve_milp(problem)
    assert solution.replicas.tolist() == [0, 1]
    assert solution.routing.tolist() == [[0.0, 1000.0]]
    assert solution.objective_j == pytest.approx(1000 * 5.0 + 100.0 * 3600.0)
    assert solution.status == "optimal"
    assert solution.solver == "milp:highs"
    assert solution.gap == pytest.approx(0.0, abs=1e-4)
    assert solution.bound_j <= solution.objective_j
    assert_valid(problem, solution, "milp")


@pytest.mark.parametrize(("horizon_s", "winner"), [(10.0, "b"), (3600.0, "a")])
def test_idle_energy_switches_the_choice_as_the_horizon_grows(horizon_s, winner):
    # a: 20 J/request, 50 W idle; b: 5 J/request, 300 W idle. 1000 requests:
    # b is cheaper while 15 kJ of active savings beat 250 W of extra idle, i.e. H < 60 s.
    problem = two_pool_problem(
        deployments=[dep("a", "p0", idle_power_w=50.0), dep("b", "p1", idle_power_w=300.0)],
        energy_j=[[20.0, 5.0]],
        occupancy_s=[[1e-3, 1e-3]],
        horizon_s=horizon_s,
    )
    solution = solve_milp(problem)
    chosen = [d.id for d, n in zip(problem.deployments, solution.replicas, strict=True) if n]
    assert chosen == [winner]
    assert_valid(problem, solution, "milp")


def test_rack_cap_forces_a_split_across_racks():
    # 3000 requests of 3.6 s: three replicas' worth. The cheap pool's rack takes two (600 W).
    problem = two_pool_problem(
        racks=[Rack("r0", power_cap_w=600.0), Rack("r1")],
        pools=[Pool("p0", "gpuA", 4, "r0"), Pool("p1", "gpuB", 4, "r1")],
        classes=[DemandClass("chat", 3000)],
        energy_j=[[5.0, 10.0]],
        occupancy_s=[[3.6, 3.6]],
    )
    solution = solve_milp(problem)
    assert solution.replicas.tolist() == [2, 1]
    assert solution.routing.tolist() == [[2000.0, 1000.0]]
    assert solution.objective_j == pytest.approx(2000 * 5 + 1000 * 10 + 3 * 100 * 3600)
    assert_valid(problem, solution, "milp")


def test_min_quality_excludes_the_cheap_deployment():
    problem = two_pool_problem(
        deployments=[dep("cheap", "p0", quality=0.7), dep("good", "p1", quality=0.9)],
        classes=[DemandClass("strict", 1000, min_quality=0.8)],
        energy_j=[[1.0, 50.0]],
    )
    solution = solve_milp(problem)
    assert solution.routing.tolist() == [[0.0, 1000.0]]
    assert solution.replicas.tolist() == [0, 1]


def test_mean_quality_target_buys_exactly_the_quality_needed():
    # No idle power: the only trade-off is active energy against the 0.75 mean-quality target.
    problem = two_pool_problem(
        deployments=[
            dep("low", "p0", quality=0.5, idle_power_w=0.0),
            dep("high", "p1", quality=1.0, idle_power_w=0.0),
        ],
        energy_j=[[1.0, 3.0]],
        min_mean_quality=0.75,
    )
    solution = solve_milp(problem)
    np.testing.assert_allclose(solution.routing, [[500.0, 500.0]])
    assert solution.objective_j == pytest.approx(500 * 1.0 + 500 * 3.0)
    assert_valid(problem, solution, "milp")


def test_memory_misfit_deployment_gets_no_replicas():
    problem = two_pool_problem(
        deployments=[dep("a", "p0"), dep("b", "p1", memory_need_gb=100.0)],
    )
    solution = solve_milp(problem)
    assert solution.replicas.tolist() == [1, 0]


def test_tensor_parallel_replicas_share_the_pool_inventory():
    # Pool of 4 devices, tp=2: at most 2 replicas; 1800 requests of 3.6 s need 2 (H=3600 s).
    problem = make_problem(
        deployments=[dep("big", "p0", tp=2)],
        classes=[DemandClass("chat", 1800)],
        energy_j=[[1.0]],
        occupancy_s=[[3.6]],
        max_utilization=0.9,
    )
    solution = solve_milp(problem)
    assert solution.replicas.tolist() == [2]


def test_cbc_agrees_with_highs_and_reports_a_bound():
    problem = two_pool_problem(
        racks=[Rack("r0", power_cap_w=600.0), Rack("r1")],
        pools=[Pool("p0", "gpuA", 4, "r0"), Pool("p1", "gpuB", 4, "r1")],
        classes=[DemandClass("chat", 3000)],
        energy_j=[[5.0, 10.0]],
        occupancy_s=[[3.6, 3.6]],
    )
    highs = solve_milp(problem, solver="highs")
    cbc = solve_milp(problem, solver="cbc")
    assert cbc.solver == "milp:cbc"
    assert cbc.objective_j == pytest.approx(highs.objective_j, rel=1e-9)
    assert cbc.bound_j <= cbc.objective_j
    assert 0.0 <= cbc.gap <= DEFAULT_GAP_REL


def test_falls_back_to_cbc_when_highs_is_missing(monkeypatch):
    monkeypatch.setattr(pulp.HiGHS, "available", lambda self: False)
    solution = solve_milp(two_pool_problem())
    assert solution.solver == "milp:cbc"
    assert solution.replicas.tolist() == [0, 1]


def test_unknown_solver_lists_the_known_ones():
    with pytest.raises(UnknownNameError, match="highs, cbc"):
        solve_milp(two_pool_problem(), solver="gurobi")


def _stop_at_incumbent(callback_type, message, data_out, data_in, user_data):
    if data_out.objective_function_value < highspy.kHighsInf:
        data_in.user_interrupt = True


class InterruptingHighs(highspy.Highs):
    """HiGHS that stops at its first incumbent, as a time limit would, but deterministically."""

    def run(self):
        self.setCallback(_stop_at_incumbent, None)
        self.startCallback(highspy.cb.HighsCallbackType.kCallbackMipInterrupt)
        return super().run()


def knapsack_like_problem(n_deps: int = 12, n_classes: int = 6) -> Problem:
    """Enough deployments and classes that HiGHS needs a search, not just presolve."""
    rng = np.random.default_rng(7)
    pools = [Pool(f"p{j}", f"gpu{j}", int(rng.integers(3, 9)), "r0") for j in range(4)]
    deployments = [
        dep(f"d{k}", f"p{k % 4}", idle_power_w=float(rng.uniform(50, 400)), tp=int(1 + k % 2))
        for k in range(n_deps)
    ]
    return make_problem(
        pools=pools,
        racks=[Rack("r0", power_cap_w=4000.0)],
        deployments=deployments,
        classes=[DemandClass(f"c{i}", float(rng.uniform(500, 3000))) for i in range(n_classes)],
        energy_j=rng.uniform(1, 50, (n_classes, n_deps)),
        occupancy_s=rng.uniform(0.5, 4.0, (n_classes, n_deps)),
        horizon_s=1800.0,
    )


def test_a_plan_kept_before_proof_is_feasible_with_a_real_gap(monkeypatch):
    monkeypatch.setattr(highspy, "Highs", InterruptingHighs)
    problem = knapsack_like_problem()
    solution = solve_milp(problem)
    assert solution.status == "feasible"
    assert solution.bound_j is not None
    assert solution.bound_j <= solution.objective_j
    assert solution.gap == pytest.approx(
        (solution.objective_j - solution.bound_j) / solution.objective_j
    )
    assert_valid(problem, solution, "milp")


def test_time_limit_before_any_solve_returns_the_baseline_start_with_its_gap():
    problem = knapsack_like_problem()
    solution = solve_milp(problem, time_limit_s=0.0)
    assert solution.status == "feasible"
    assert solution.solver == "milp:highs"
    assert_valid(problem, solution, "milp")
    baseline = run_baseline(milp.START_BASELINES[0], problem)
    assert solution.objective_j == pytest.approx(baseline.objective_j)


def test_time_limit_without_any_plan_raises_no_solution(monkeypatch):
    monkeypatch.setattr(milp, "START_BASELINES", ())
    with pytest.raises(NoSolutionError, match="time limit"):
        solve_milp(knapsack_like_problem(), time_limit_s=0.0)


@pytest.mark.parametrize(
    ("status", "sol_status", "expected"),
    [
        (pulp.LpStatusOptimal, pulp.LpSolutionOptimal, "optimal"),
        (pulp.LpStatusOptimal, pulp.LpSolutionIntegerFeasible, "feasible"),
        (pulp.LpStatusInfeasible, pulp.LpSolutionInfeasible, "infeasible"),
        (pulp.LpStatusInfeasible, pulp.LpSolutionNoSolutionFound, "infeasible"),
        (pulp.LpStatusUnbounded, pulp.LpSolutionUnbounded, "unbounded"),
        (pulp.LpStatusNotSolved, pulp.LpSolutionNoSolutionFound, "no_solution"),
        (pulp.LpStatusUndefined, pulp.LpSolutionNoSolutionFound, "no_solution"),
    ],
)
def test_every_pulp_status_pair_is_classified(status, sol_status, expected):
    assert formulation.classify_status(status, sol_status) == expected


def test_same_problem_gives_byte_identical_plans():
    problem = knapsack_like_problem()
    first, second = solve_milp(problem), solve_milp(problem)
    assert first.replicas.tobytes() == second.replicas.tobytes()
    assert first.routing.tobytes() == second.routing.tobytes()
    assert first.objective_j == second.objective_j


def test_zero_occupancy_work_still_needs_a_replica_on():
    problem = two_pool_problem(occupancy_s=[[0.0, 0.0]])
    solution = solve_milp(problem)
    assert solution.replicas.tolist() == [0, 1]
    assert_valid(problem, solution, "milp")


# --- infeasibility: the reasons name the class and the constraint -------------------------


def _reasons(problem: Problem) -> list[str]:
    with pytest.raises(InfeasibleError) as caught:
        solve_milp(problem)
    assert caught.value.reasons == explain_infeasibility(problem)
    return caught.value.reasons


def test_slo_no_deployment_meets_is_named_with_the_best_latency():
    problem = two_pool_problem(
        classes=[DemandClass("chat", 1000, slo_e2e_s=1.0), DemandClass("batch", 10)],
        energy_j=[[10.0, 5.0], [1.0, 1.0]],
        occupancy_s=[[1.0, 1.0], [1.0, 1.0]],
        e2e_s=[[2.0, 3.0], [2.0, 3.0]],
    )
    (reason,) = _reasons(problem)
    assert reason.startswith("class chat (1000 requests): no eligible deployment")
    assert "e2e SLO 1 s vs best 2 s on a, b" in reason


def test_each_filter_is_named_for_the_deployments_it_removed():
    problem = make_problem(
        pools=[Pool("p0", "gpuA", 8, "r0")],
        deployments=[
            dep("tiny", "p0", quality=0.4),
            dep("slowstart", "p0"),
            dep("stutter", "p0"),
            dep("nocontext", "p0"),
        ],
        classes=[DemandClass("rag", 50, min_quality=0.5, slo_ttft_s=0.2, slo_itl_s=0.05)],
        energy_j=[[1.0] * 4],
        occupancy_s=[[1.0] * 4],
        ttft_s=[[0.1, 0.9, 0.1, 0.1]],
        itl_s=[[0.01, 0.01, 0.08, 0.01]],
        servable=[[True, True, True, False]],
    )
    (reason,) = _reasons(problem)
    assert "class rag" in reason
    assert "not servable (e.g. context too long) on nocontext" in reason
    assert "quality below min_quality 0.5 (best 0.4) on tiny" in reason
    assert "TTFT SLO 0.2 s vs best 0.9 s on slowstart" in reason
    assert "ITL SLO 0.05 s vs best 0.08 s on stutter" in reason


def test_pool_inventory_shortfall_names_the_class_and_the_pool():
    # 6000 requests of 3.6 s need 6 replicas; the only pool has 4 devices.
    problem = make_problem(
        deployments=[dep("a", "p0")],
        classes=[DemandClass("bulk", 6000)],
        energy_j=[[1.0]],
        occupancy_s=[[3.6]],
    )
    (reason,) = _reasons(problem)
    assert reason == (
        "class bulk: 2000 of 6000 requests unmet; binding: pool inventory of p0 (4 devices)"
    )


def test_rack_cap_shortfall_names_the_rack():
    problem = make_problem(
        racks=[Rack("r0", power_cap_w=700.0)],
        deployments=[dep("a", "p0")],
        classes=[DemandClass("bulk", 3000)],
        energy_j=[[1.0]],
        occupancy_s=[[3.6]],
    )
    (reason,) = _reasons(problem)
    assert "class bulk: 1000 of 3000 requests unmet" in reason
    assert "rack power cap of r0 (700 W)" in reason


def test_memory_misfit_is_named_when_it_leaves_a_class_without_replicas():
    problem = make_problem(
        deployments=[dep("huge", "p0", memory_need_gb=120.0)],
        classes=[DemandClass("chat", 10)],
        energy_j=[[1.0]],
        occupancy_s=[[1.0]],
    )
    (reason,) = _reasons(problem)
    assert "class chat: 10 of 10 requests unmet" in reason
    assert "memory of huge (120 GB needed per device, 80 GB there)" in reason


def test_unreachable_mean_quality_target_is_named():
    problem = two_pool_problem(
        deployments=[dep("a", "p0", quality=0.5), dep("b", "p1", quality=0.7)],
        min_mean_quality=0.9,
    )
    (reason,) = _reasons(problem)
    assert reason.startswith("mean-quality target 0.9 unreachable: at most 0.7")


def test_mean_quality_capped_by_capacity_of_the_good_deployment():
    # The good deployment has one device: 1000 of the 2000 requests; best mean 0.75 < 0.8.
    problem = two_pool_problem(
        pools=[Pool("p0", "gpuA", 4, "r0"), Pool("p1", "gpuB", 1, "r0")],
        deployments=[dep("a", "p0", quality=0.5), dep("b", "p1", quality=1.0)],
        classes=[DemandClass("chat", 2000)],
        occupancy_s=[[3.6, 3.6]],
        min_mean_quality=0.8,
    )
    (reason,) = _reasons(problem)
    assert "at most 0.75" in reason


def test_diagnosis_is_never_empty():
    # Feasible problems have nothing to blame: the generic reason still comes back.
    reasons = explain_infeasibility(two_pool_problem())
    assert len(reasons) == 1
    assert "no single class or constraint" in reasons[0]


def test_no_candidate_deployments_at_all():
    problem = make_problem(
        deployments=[], classes=[DemandClass("chat", 5)], energy_j=None, occupancy_s=None
    )
    (reason,) = _reasons(problem)
    assert "class chat" in reason
    assert "no candidate deployments" in reason


def test_zero_demand_needs_nothing():
    problem = two_pool_problem(classes=[DemandClass("idle", 0)])
    solution = solve_milp(problem)
    assert solution.replicas.tolist() == [0, 0]
    assert solution.objective_j == 0.0
    assert solution.gap == 0.0
    assert math.isfinite(solution.bound_j)


def test_the_command_line_offers_exactly_the_registered_milp_backends():
    from solvers import MILP_SOLVERS
    from solvers.formulation import MILP_BACKENDS

    assert tuple(MILP_BACKENDS) == MILP_SOLVERS
