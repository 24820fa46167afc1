"""CP-SAT against HiGHS on random small batch problems: the same optimum within 0.1 % beyond
the stated scaling error, both schedules passing the independent checker."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from solvers.batch.baselines import cheapest, run_batch_baselines
from solvers.batch.checker import check_schedule
from solvers.batch.cpsat import scaling_error_j, solve_batch_cpsat
from solvers.batch.milp import solve_batch_milp
from solvers.batch.problem import BatchProblem
from solvers.errors import InfeasibleError
from solvers.problem import DemandClass, Deployment, Pool, Problem, Rack

AGREE_REL = 1e-3


def batch_problem(seed: int) -> BatchProblem:
    """1-3 jobs of 200-5,000 requests, each needing 0.2-3 replica-slots of work, on 1-2
    deployments in 1-2 pools of 1-3 devices, over 3-6 slots; loads within one slot, racks
    capped or not, deadlines hard or soft. Drawn from a seeded generator, not shrunk towards
    round numbers: at an exact tie (a job's work filling whole replica-slots to the request)
    whole requests cannot split a slot as the MILP's fractions do, see test_exact_tie_*."""
    rng = np.random.default_rng(seed)
    slot_s = float(rng.choice([300.0, 600.0]))
    n_slots = int(rng.integers(3, 7))
    rack = Rack("r0", None if rng.random() < 0.5 else float(rng.uniform(800.0, 4000.0)))
    pools = [Pool(f"p{i}", f"gpu{i}", int(rng.integers(1, 4)), "r0")
             for i in range(int(rng.integers(1, 3)))]
    deployments = []
    for k in range(int(rng.integers(1, 3))):
        idle_w = float(rng.uniform(50.0, 300.0))
        deployments.append(Deployment(
            id=f"d{k}", pool=pools[int(rng.integers(len(pools)))].id, llm="llm",
            tp=int(rng.integers(1, 3)), max_batch=8, quality=1.0, idle_power_w=idle_w,
            peak_power_w=idle_w * float(rng.uniform(1.5, 3.0)), memory_need_gb=10.0,
            memory_gb=80.0))
    n_jobs = int(rng.integers(1, 4))
    counts = rng.integers(200, 5001, n_jobs)
    shape = (n_jobs, len(deployments))
    occupancy = rng.uniform(0.2, 3.0, shape) * slot_s / counts[:, None]
    base = Problem(
        horizon_s=slot_s * n_slots, racks=(rack,), pools=tuple(pools),
        deployments=tuple(deployments),
        classes=tuple(DemandClass(f"j{j}", float(c)) for j, c in enumerate(counts)),
        energy_j=rng.uniform(5.0, 200.0, shape), occupancy_s=occupancy, ttft_s=np.ones(shape),
        itl_s=np.ones(shape), e2e_s=np.ones(shape), servable=np.ones(shape, dtype=bool),
        max_utilization=1.0)
    first = rng.integers(0, n_slots, n_jobs)
    last = np.array([rng.integers(f + 1, n_slots + 1) for f in first])
    penalty = np.where(rng.random(n_jobs) < 0.5, math.nan, rng.uniform(0.0, 0.05, n_jobs))
    return BatchProblem(base=base, slot_s=slot_s, n_slots=n_slots, release_s=first * slot_s,
                        deadline_s=last * slot_s, penalty_j_per_s=penalty,
                        load_s=rng.uniform(10.0, slot_s, len(deployments)))


def _best_start(problem: BatchProblem):
    """The cheapest schedule of today's rules (each must pass the checker, or
    ``run_batch_baselines`` raises PlanRejected)."""
    return cheapest(run_batch_baselines(problem))


@pytest.mark.parametrize("seed", range(200))
def test_cpsat_and_highs_agree_on_batch_schedules(seed):
    problem = batch_problem(seed)
    start = _best_start(problem)
    try:
        highs = solve_batch_milp(problem, gap_rel=0.0, time_limit_s=30, start=start)
    except InfeasibleError:
        try:
            solve_batch_cpsat(problem, gap_rel=0.0, time_limit_s=30)
        except InfeasibleError:
            return
        raise AssertionError("CP-SAT found a schedule where HiGHS proved none exists") from None
    cpsat = solve_batch_cpsat(problem, gap_rel=0.0, time_limit_s=30, start=start)
    for schedule in (highs, cpsat):
        report = check_schedule(problem, schedule)
        assert report.ok, (schedule.solver, report.violations)
    assert highs.status == "optimal"
    allowed = AGREE_REL * max(highs.objective_j, 1.0) + scaling_error_j(problem)
    assert abs(cpsat.objective_j - highs.objective_j) <= allowed, (
        cpsat.objective_j, highs.objective_j)


def test_exact_tie_still_gives_a_checked_schedule():
    """Two jobs of 200 requests x 1.5 s fill one 300 s replica-slot each, exactly."""
    problem = batch_problem(0)
    base = dataclasses.replace(
        problem.base, pools=(Pool("p0", "gpu0", 1, "r0"),), racks=(Rack("r0", None),),
        deployments=(dataclasses.replace(problem.base.deployments[0], pool="p0", tp=1),),
        classes=(DemandClass("j0", 200.0), DemandClass("j1", 200.0)),
        energy_j=np.full((2, 1), 5.0), occupancy_s=np.full((2, 1), 1.5),
        ttft_s=np.ones((2, 1)), itl_s=np.ones((2, 1)), e2e_s=np.ones((2, 1)),
        servable=np.ones((2, 1), dtype=bool), _index={})
    tie = BatchProblem(base=base, slot_s=300.0, n_slots=3, release_s=np.zeros(2),
                       deadline_s=np.array([300.0, 300.0]),
                       penalty_j_per_s=np.array([math.nan, 0.03125]), load_s=np.array([10.0]))
    schedule = solve_batch_cpsat(tie, gap_rel=0.0, time_limit_s=10, start=_best_start(tie))
    assert check_schedule(tie, schedule).ok
