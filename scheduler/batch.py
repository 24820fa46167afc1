"""The batch job: fleet + jobs -> a checked least-energy schedule and checked baselines."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from energy_models.cost import CostChain, default_chain
from energy_models.memory import model_load_s
from scheduler.build import price_classes, solver_id
from scheduler.errors import InputError
from scheduler.inventory import Fleet
from solvers.batch.baselines import cheapest, run_batch_baselines
from solvers.batch.checker import assert_valid_schedule
from solvers.batch.problem import BatchProblem, Schedule, finish_s, schedule_energy, slots_for
from solvers.errors import InfeasibleError
from solvers.problem import DemandClass
from workloads.jobs import Jobs

DEFAULT_SLOT_S = 300.0
DEFAULT_GAP_REL = 0.02


@dataclass(frozen=True)
class BuiltBatch:
    problem: BatchProblem
    jobs: Jobs
    deployments: pd.DataFrame
    """One row per deployment: ``deployment``, pool, device, llm, tp, batch, load_s, ..."""


def build_batch(fleet: Fleet, jobs: Jobs, chain: CostChain, slot_s: float) -> BuiltBatch:
    """Every job as a demand class priced on every candidate deployment, over slots."""
    table = jobs.table
    ids = [solver_id(job) for job in table.job]
    if len(set(ids)) != len(ids):
        raise InputError(jobs.where, "jobs", "two job ids differ only in characters other "
                                             "than letters, digits, '_' and '.'; rename one")
    named = [llm for llm in table.llm if llm is not None]
    llms = tuple(dict.fromkeys([*fleet.llms, *named]))
    classes = pd.DataFrame({
        "class_id": table.job, "kind": "batch", "count": table.requests.astype(float),
        "input_tokens": table.input_tokens, "output_tokens": table.output_tokens,
        "input_p90": table.input_p90, "output_p90": table.output_p90,
        "context_max": table.context_max})
    floor = fleet.defaults.min_quality
    demand = []
    for row, job_id in zip(table.itertuples(), ids, strict=True):
        if row.llm is not None:
            min_quality, origin = -math.inf, f"llm = {row.llm} from {jobs.where}"
        elif not math.isnan(row.min_quality):
            min_quality, origin = row.min_quality, f"min_quality = {row.min_quality:g} from " \
                                                   f"{jobs.where}"
        else:
            min_quality = -math.inf if floor is None else floor
            origin = f"defaults.min_quality from {fleet.where}"
        demand.append(DemandClass(id=job_id, count=float(row.requests),
                                  min_quality=min_quality, origins={"min_quality": origin}))
    n_slots = slots_for(jobs.horizon_s, slot_s)
    # An offline queue keeps every replica's batch full: plan replicas at full utilisation.
    base, candidates = price_classes(fleet, llms, classes, demand, chain,
                                     horizon_s=n_slots * slot_s, max_utilization=1.0,
                                     where=jobs.where, latency_at_p90=False,
                                     continuous_batching=False)
    wanted = table.llm.to_numpy(dtype=object)[:, None]
    named_ok = (wanted == None) | (wanted == candidates.llm.to_numpy()[None, :])  # noqa: E711
    base = dataclasses.replace(base, servable=base.servable & named_ok)
    load_s = np.array([model_load_s(w) for w in candidates.weights_gb])
    problem = BatchProblem(
        base=base, slot_s=slot_s, n_slots=n_slots,
        release_s=table.release_s.to_numpy(float), deadline_s=table.deadline_s.to_numpy(float),
        penalty_j_per_s=table.lateness_penalty_j_per_s.to_numpy(float), load_s=load_s)
    return BuiltBatch(problem, jobs, candidates.assign(load_s=load_s))


@dataclass(frozen=True)
class BatchOutcome:
    built: BuiltBatch
    schedule: Schedule
    baselines: dict[str, Schedule | str]
    """Each baseline's checked schedule, or why its rule misses a deadline."""


def run_schedule(fleet: Fleet, jobs: Jobs, *, solver: str = "milp", slot_s: float = DEFAULT_SLOT_S,
                 time_limit_s: float = 60.0, gap_rel: float = DEFAULT_GAP_REL,
                 chain: CostChain | None = None,
                 progress: Callable[[str], None] = lambda message: None) -> BatchOutcome:
    """Price, run the baselines, solve (seeded with the best baseline), check everything.

    ``solver`` is ``milp`` (HiGHS) or ``cpsat`` (OR-Tools CP-SAT)."""
    from solvers.batch.milp import solve_batch_milp, usable

    chain = chain or default_chain(fleet.defaults.engine, None)
    progress("pricing every job on every candidate deployment")
    built = build_batch(fleet, jobs, chain, slot_s)
    problem = built.problem
    usable(problem)  # a job no deployment or slot can take is named before anything runs
    baselines = run_batch_baselines(problem, progress)
    start = cheapest(baselines)
    progress(f"solving ({solver}): {len(problem.base.classes)} jobs x "
             f"{len(problem.base.deployments)} deployments x {problem.n_slots} slots")
    solve = solve_batch_milp
    if solver == "cpsat":
        from solvers.batch.cpsat import solve_batch_cpsat as solve
    try:
        schedule = solve(problem, time_limit_s=time_limit_s, gap_rel=gap_rel, start=start)
    except InfeasibleError as exc:
        # What each rule could not finish names the jobs at fault.
        found = [f"{name}: {reason}" for name, reason in baselines.items()
                 if isinstance(reason, str)]
        raise InfeasibleError([*found, *exc.reasons]) from None
    progress("checking the schedule")
    assert_valid_schedule(problem, schedule, schedule.solver)
    return BatchOutcome(built, schedule, baselines)


def _summary(built: BuiltBatch, schedule: Schedule) -> dict[str, Any]:
    problem = built.problem
    cost = schedule_energy(problem, schedule)
    finish = finish_s(problem, schedule)
    deps = built.deployments
    jobs = []
    for j, job in enumerate(built.jobs.table.itertuples()):
        mine = schedule.job == j
        ran_on = []
        for d in sorted(set(schedule.deployment[mine].tolist())):
            rows = mine & (schedule.deployment == d)
            ran_on.append({"deployment": deps.deployment[d], "pool": deps.pool[d],
                           "llm": deps.llm[d], "tp": int(deps.tp[d]),
                           "max_batch": int(deps.max_num_seqs[d]),
                           "requests": round(float(schedule.served[rows].sum()), 3),
                           "start_s": float(schedule.slot[rows].min() * problem.slot_s),
                           "end_s": float((schedule.slot[rows].max() + 1) * problem.slot_s)})
        jobs.append({"id": job.job, "requests": int(job.requests),
                     "release_s": float(job.release_s), "finish_s": float(finish[j]),
                     "deadline_s": float(job.deadline_s),
                     "deadline_met": bool(finish[j] <= job.deadline_s + 1e-9),
                     "ran_on": ran_on})
    return {
        "energy_j": round(cost.energy_j, 3),
        "active_energy_j": round(cost.active_j, 3),
        "idle_energy_j": round(cost.idle_j, 3),
        "switch_energy_j": round(cost.switch_j, 3),
        "lateness_penalty_j": round(cost.penalty_j, 3),
        "deadlines_met": all(job["deadline_met"] for job in jobs),
        "peak_replicas": int(schedule.replicas.sum(axis=0).max()),
        "status": schedule.status,
        "gap": None if schedule.gap is None else round(schedule.gap, 6),
        "solve_time_s": round(schedule.solve_time_s, 3),
        "solver": schedule.solver,
        "jobs": jobs,
    }


def schedule_document(outcome: BatchOutcome, *, fleet: str, timing: bool = True) -> dict:
    """The JSON document of ``wattsched schedule``; ``timing`` False leaves out wall-clock
    times, so that equal inputs give equal bytes."""
    problem = outcome.built.problem
    doc = {"fleet": fleet, "jobs_file": outcome.built.jobs.where,
           "slot_s": problem.slot_s, "slots": problem.n_slots,
           **_summary(outcome.built, outcome.schedule)}
    baselines: dict[str, Any] = {}
    savings: dict[str, float | None] = {}
    for name, result in outcome.baselines.items():
        if isinstance(result, str):
            baselines[name] = {"feasible": False, "reason": result}
            savings[name] = None
            continue
        baselines[name] = {"feasible": True, **_summary(outcome.built, result)}
        energy = baselines[name]["energy_j"]
        savings[name] = round(100 * (energy - doc["energy_j"]) / energy, 3) if energy else None
    doc["baselines"] = baselines
    doc["saving_pct"] = savings
    if not timing:
        for summary in (doc, *baselines.values()):
            summary.pop("solve_time_s", None)
    return doc
