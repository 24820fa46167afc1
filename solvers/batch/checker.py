"""The independent schedule checker: every schedule, optimised or baseline, goes through it.

It recomputes from the problem's raw arrays: windows from release and deadline, starts and
loading from the replica counts, energy from the served requests; it shares no helper with
the solvers, so a bug in one is not a bug in both.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from solvers.batch.problem import BatchProblem, Schedule
from solvers.errors import PlanRejected

SHOWN = 5
"""Violations of one kind listed before the rest are counted."""


@dataclass(frozen=True)
class ScheduleCheck:
    ok: bool
    violations: list[str]
    energy_j: float
    """Recomputed active + idle + switching energy."""
    penalty_j: float
    """Recomputed lateness penalties."""


def _capped(kind: str, messages: list[str]) -> list[str]:
    if len(messages) <= SHOWN:
        return messages
    return [*messages[:SHOWN], f"... and {len(messages) - SHOWN} more {kind} violations"]


def check_schedule(problem: BatchProblem, schedule: Schedule, tol: float = 1e-6) -> ScheduleCheck:
    """Check every constraint at every slot; never raises on a bad schedule."""
    base = problem.base
    deps, n_slots, slot_s = base.deployments, problem.n_slots, problem.slot_s
    replicas = np.asarray(schedule.replicas, dtype=float)
    if replicas.shape != (len(deps), n_slots):
        return ScheduleCheck(False, [f"replicas has shape {replicas.shape}, expected "
                                     f"{(len(deps), n_slots)}"], math.nan, math.nan)
    job, dep, slot = (np.asarray(a, dtype=np.int64) for a in
                      (schedule.job, schedule.deployment, schedule.slot))
    served = np.asarray(schedule.served, dtype=float)
    bad_index = ((job < 0) | (job >= len(base.classes)) | (dep < 0) | (dep >= len(deps))
                 | (slot < 0) | (slot >= n_slots))
    if np.any(bad_index) or not (len(job) == len(dep) == len(slot) == len(served)):
        return ScheduleCheck(False, ["served entries name jobs, deployments or slots outside "
                                     "the problem"], math.nan, math.nan)
    violations: list[str] = []
    if np.any(~np.isfinite(served)) or np.any(served < 0):
        violations.append("served holds negative or non-finite request counts")
        served = np.where(np.isfinite(served), np.maximum(served, 0.0), 0.0)
    if np.any(replicas < 0) or np.any(replicas != np.round(replicas)):
        violations.append("replica counts must be whole numbers >= 0")

    counts = np.array([c.count for c in base.classes])
    got = np.bincount(job, weights=served, minlength=len(counts))
    violations += _capped("demand", [
        f"job {base.classes[j].id}: {got[j]:.6g} of {counts[j]:.6g} requests served"
        for j in np.flatnonzero(np.abs(got - counts) > tol * np.maximum(counts, 1.0))])

    quality = np.array([d.quality for d in deps])
    floors = np.array([c.min_quality for c in base.classes])
    used = served > tol
    wrong = used & (~base.servable[job, dep] | (quality[dep] < floors[job]))
    violations += _capped("eligibility", [
        f"job {base.classes[job[k]].id} on {deps[dep[k]].id}: the deployment cannot serve it "
        f"(context or quality)" for k in np.flatnonzero(wrong)])

    slot_start = slot * slot_s
    slot_end = (slot + 1) * slot_s
    early = used & (slot_start < problem.release_s[job] - tol * slot_s)
    hard = np.isnan(problem.penalty_j_per_s[job])
    late = used & hard & (slot_end > problem.deadline_s[job] + tol * slot_s)
    violations += _capped("release", [
        f"job {base.classes[job[k]].id} served in slot {slot[k]} (from {slot_start[k]:g} s), "
        f"before its release" for k in np.flatnonzero(early)])
    violations += _capped("deadline", [
        f"job {base.classes[job[k]].id} served in slot {slot[k]} (to {slot_end[k]:g} s), after "
        f"its deadline {problem.deadline_s[job[k]]:g} s" for k in np.flatnonzero(late)])

    busy_s = np.zeros((len(deps), n_slots))
    np.add.at(busy_s, (dep, slot), served * base.occupancy_s[job, dep])
    room_s = replicas * slot_s * base.max_utilization
    over = np.argwhere(busy_s > room_s + tol * np.maximum(room_s, slot_s))
    violations += _capped("capacity", [
        f"{deps[d].id} in slot {t}: {busy_s[d, t]:.6g} replica-seconds of work on "
        f"{replicas[d, t]:g} replica(s) ({room_s[d, t]:.6g} s usable)" for d, t in over])

    on_before = np.concatenate([np.zeros((len(deps), 1)), replicas[:, :-1]], axis=1)
    starts = np.maximum(replicas - on_before, 0.0)
    loading = np.zeros_like(replicas)
    for d in range(len(deps)):
        for k in range(1, math.ceil(problem.load_s[d] / slot_s - 1e-9) + 1):
            loading[d, :n_slots - k] += starts[d, k:]
    holding = replicas + loading
    tp = np.array([d.tp for d in deps])
    pool_of = np.array([d.pool for d in deps], dtype=object)
    for pool in base.pools:
        members = pool_of == pool.id
        devices = tp[members] @ holding[members]
        violations += _capped("inventory", [
            f"pool {pool.id} in slot {t}: {devices[t]:g} devices on or loading, "
            f"{pool.count} exist" for t in np.flatnonzero(devices > pool.count)])
    memory = [d.id for d, on in zip(deps, replicas.max(axis=1) > 0, strict=True)
              if on and d.memory_need_gb > d.memory_gb * (1 + tol)]
    violations += _capped("memory", [f"{d} does not fit in its devices' memory" for d in memory])
    peak_w = np.array([d.peak_power_w for d in deps])
    idle_w = np.array([d.idle_power_w for d in deps])
    rack_of = np.array([base.pool_of(d).rack for d in deps], dtype=object)
    for rack in base.racks:
        if rack.power_cap_w is None:
            continue
        members = rack_of == rack.id
        power_w = peak_w[members] @ replicas[members] + idle_w[members] @ loading[members]
        violations += _capped("rack power", [
            f"rack {rack.id} in slot {t}: {power_w[t]:.0f} W peak over its "
            f"{rack.power_cap_w:.0f} W cap" for t in np.flatnonzero(
                power_w > rack.power_cap_w * (1 + tol))])

    active_j = float(np.sum(served * np.where(used, base.energy_j[job, dep], 0.0)))
    idle_j = float(np.sum(idle_w @ replicas)) * slot_s
    switch_j = float(np.sum((idle_w * problem.load_s) @ starts))
    late_s = np.maximum(slot_end - problem.deadline_s[job], 0.0)
    penalty = np.where(hard, 0.0, np.nan_to_num(problem.penalty_j_per_s[job]))
    penalty_j = float(np.sum(served * penalty * late_s))
    energy_j = active_j + idle_j + switch_j
    total_j = energy_j + penalty_j
    if abs(schedule.objective_j - total_j) > tol * max(abs(total_j), 1.0):
        violations.append(f"objective {schedule.objective_j:.6g} J differs from the recomputed "
                          f"{total_j:.6g} J")
    return ScheduleCheck(not violations, violations, energy_j, penalty_j)


def assert_valid_schedule(problem: BatchProblem, schedule: Schedule, source: str) -> ScheduleCheck:
    report = check_schedule(problem, schedule)
    if not report.ok:
        raise PlanRejected(source, report.violations)
    return report
