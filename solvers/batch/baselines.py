"""Batch rules operators use today, on the same slots, deployments and costs as the optimiser.

- ``edf_fastest``: earliest deadline first, each job as soon as it is released, on the
  fastest deployment that can take it (least replica time per request), replicas switched on
  as the work needs them and off when it is done.
- ``fifo_all_devices``: first come first served, each job spread over every pool that can
  run it at once (race to idle): one more replica per pool in turn until the job's remaining
  work is covered or the fleet is full.
- ``alap_fewest_devices``: each job as late as possible before its deadline, on the
  deployment that needs the fewest devices for its work (maximum batch), with the fewest
  replicas that finish it in its window; latest deadlines placed first.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import numpy as np

from energy_models.registry import Registry
from solvers.batch.problem import BatchProblem, Schedule, schedule_energy
from solvers.errors import InfeasibleError

BatchBaseline = Callable[[BatchProblem], Schedule]
BATCH_BASELINES: Registry[BatchBaseline] = Registry("batch baseline")

DONE_REL = 1e-9
"""A job counts as done once what is left is below this fraction of its requests."""


def run_batch_baseline(name: str, problem: BatchProblem) -> Schedule:
    return BATCH_BASELINES.lookup(name)(problem)


def run_batch_baselines(problem: BatchProblem,
                        progress: Callable[[str], None] = lambda message: None,
                        ) -> dict[str, Schedule | str]:
    """Every rule's schedule, each passed by the independent checker, or why the rule
    misses a deadline."""
    from solvers.batch.checker import assert_valid_schedule

    results: dict[str, Schedule | str] = {}
    for number, name in enumerate(BATCH_BASELINES, start=1):
        progress(f"baseline {number}/{len(BATCH_BASELINES)}: {name}")
        try:
            schedule = run_batch_baseline(name, problem)
        except InfeasibleError as exc:
            results[name] = "; ".join(exc.reasons)
            continue
        assert_valid_schedule(problem, schedule, name)
        results[name] = schedule
    return results


def cheapest(results: dict[str, Schedule | str]) -> Schedule | None:
    """The least-cost schedule among ``results`` (None when no rule met every deadline)."""
    done = [s for s in results.values() if isinstance(s, Schedule)]
    return min(done, key=lambda s: s.objective_j) if done else None


class _Timeline:
    """A schedule being built: replicas on per slot, work placed, and what is left to place."""

    def __init__(self, problem: BatchProblem):
        base = problem.base
        self.problem = problem
        self.replicas = np.zeros((len(base.deployments), problem.n_slots), dtype=np.int64)
        self.busy_s = np.zeros(self.replicas.shape)
        self.served: dict[tuple[int, int, int], float] = {}
        self.left = np.array([c.count for c in base.classes], dtype=float)
        self.eligible = base.eligible()
        self.window = np.isfinite(problem.lateness_j())
        self.room_s = problem.slot_s * base.max_utilization
        deps = base.deployments
        self.tp = np.array([d.tp for d in deps])
        self.peak_w = np.array([d.peak_power_w for d in deps])
        self.idle_w = np.array([d.idle_power_w for d in deps])
        self.fits = np.array([d.memory_need_gb <= d.memory_gb for d in deps])
        self.pool_of = np.array([base.index("pools", d.pool) for d in deps])
        self.rack_of = np.array([base.index("racks", base.pool_of(d).rack) for d in deps])
        self.pool_count = np.array([p.count for p in base.pools], dtype=float)
        self.rack_cap_w = np.array([np.inf if r.power_cap_w is None else r.power_cap_w
                                    for r in base.racks])
        # Devices and rack power held in each slot by replicas on or loading.
        self.devices = np.zeros((len(base.pools), problem.n_slots))
        self.power_w = np.zeros((len(base.racks), problem.n_slots))

    def _changes(self, d: int, t: int) -> dict[int, tuple[int, int]]:
        """Per slot, (on change, loading change) of one more replica of ``d`` in slot ``t``:
        it is on in ``t``; it is a new start unless ``t-1`` had more replicas on, and then
        loads in the slots before; it takes away a start at ``t+1`` if that had more."""
        n, load_slots = self.replicas[d], int(self.problem.load_slots[d])
        changes = {t: (1, 0)}
        moves = []
        if t == 0 or n[t - 1] <= n[t]:
            moves += [(u, 1) for u in range(max(t - load_slots, 0), t)]
        if t + 1 < len(n) and n[t + 1] > n[t]:
            moves += [(u, -1) for u in range(max(t + 1 - load_slots, 0), t + 1)]
        for u, loading in moves:
            on, held = changes.get(u, (0, 0))
            changes[u] = (on, held + loading)
        return changes

    def can_open(self, d: int, t: int) -> bool:
        """Whether one more replica of ``d`` in slot ``t`` keeps devices and rack power."""
        if not self.fits[d]:
            return False
        pool, rack = self.pool_of[d], self.rack_of[d]
        for u, (on, loading) in self._changes(d, t).items():
            devices = self.tp[d] * (on + loading)
            power_w = self.peak_w[d] * on + self.idle_w[d] * loading
            if (devices > 0 and self.devices[pool, u] + devices > self.pool_count[pool]) or (
                    power_w > 0 and self.power_w[rack, u] + power_w
                    > self.rack_cap_w[rack] * (1 + 1e-9)):
                return False
        return True

    def open(self, d: int, t: int) -> None:
        pool, rack = self.pool_of[d], self.rack_of[d]
        for u, (on, loading) in self._changes(d, t).items():
            self.devices[pool, u] += self.tp[d] * (on + loading)
            self.power_w[rack, u] += self.peak_w[d] * on + self.idle_w[d] * loading
        self.replicas[d, t] += 1

    def fit(self, j: int, d: int, t: int) -> float:
        """Requests of job ``j`` that the replicas of ``d`` already on in slot ``t`` can take."""
        free_s = self.replicas[d, t] * self.room_s - self.busy_s[d, t]
        return max(free_s, 0.0) / self.problem.base.occupancy_s[j, d]

    def serve(self, j: int, d: int, t: int, requests: float) -> None:
        requests = min(requests, self.left[j])
        if requests <= 0:
            return
        self.busy_s[d, t] += requests * self.problem.base.occupancy_s[j, d]
        self.served[(j, d, t)] = self.served.get((j, d, t), 0.0) + requests
        self.left[j] -= requests

    def fill(self, j: int, d: int, t: int) -> None:
        """Put as much of job ``j`` as fits on the replicas of ``d`` on in slot ``t``."""
        self.serve(j, d, t, self.fit(j, d, t))

    def grow(self, j: int, d: int, t: int, limit: int | None = None) -> int:
        """Open replicas of ``d`` in slot ``t`` (at most ``limit``) while job ``j`` has work
        left; returns how many were opened."""
        opened = 0
        while not self.done(j) and (limit is None or opened < limit) and self.can_open(d, t):
            self.open(d, t)
            opened += 1
            self.fill(j, d, t)
        return opened

    def done(self, j: int) -> bool:
        return self.left[j] <= DONE_REL * max(self.problem.base.classes[j].count, 1.0)

    def options(self, j: int, t: int | None = None) -> np.ndarray:
        """Deployments job ``j`` may use (in slot ``t``, if given)."""
        ok = self.eligible[j] & self.fits
        if t is not None and not self.window[j, t]:
            return np.zeros(0, dtype=np.int64)
        return np.flatnonzero(ok)

    def finish(self, name: str, started_s: float) -> Schedule:
        problem = self.problem
        unserved = [j for j in range(len(self.left)) if not self.done(j)]
        if unserved:
            raise InfeasibleError([
                f"job {problem.base.classes[j].id} has {self.left[j]:.0f} of "
                f"{problem.base.classes[j].count:.0f} requests left at its deadline under this "
                f"rule" for j in unserved[:5]])
        keys = sorted(self.served)
        job, dep, slot = (np.array([k[i] for k in keys], dtype=np.int64) for i in range(3))
        served = np.array([self.served[k] for k in keys])
        # Rounding dust below the done threshold goes to the job's last entry.
        for j in range(len(self.left)):
            rows = np.flatnonzero(job == j)
            if len(rows):
                served[rows[-1]] += self.left[j]
        draft = Schedule(self.replicas.copy(), job, dep, slot, served, name, "heuristic", 0.0)
        cost = schedule_energy(problem, draft)
        return Schedule(self.replicas.copy(), job, dep, slot, served, name, "heuristic",
                        cost.energy_j + cost.penalty_j,
                        solve_time_s=time.perf_counter() - started_s)


@BATCH_BASELINES.register("edf_fastest")
def edf_fastest(problem: BatchProblem) -> Schedule:
    started = time.perf_counter()
    line = _Timeline(problem)
    occupancy = problem.base.occupancy_s
    order = sorted(range(len(problem.base.classes)),
                   key=lambda j: (problem.deadline_s[j], problem.release_s[j], j))
    for t in range(problem.n_slots):
        for j in order:
            if line.done(j):
                continue
            ranked = sorted(line.options(j, t), key=lambda d: (occupancy[j, d], d))
            for d in ranked:
                line.fill(j, d, t)
            for d in ranked:
                line.grow(j, d, t)
    return line.finish("edf_fastest", started)


@BATCH_BASELINES.register("fifo_all_devices")
def fifo_all_devices(problem: BatchProblem) -> Schedule:
    started = time.perf_counter()
    line = _Timeline(problem)
    occupancy = problem.base.occupancy_s
    order = sorted(range(len(problem.base.classes)),
                   key=lambda j: (problem.release_s[j], j))
    for t in range(problem.n_slots):
        for j in order:
            if line.done(j):
                continue
            options = line.options(j, t)
            for d in options:
                line.fill(j, d, t)
            # The fastest deployment of each pool, one replica per pool per round.
            best: dict[str, int] = {}
            for d in sorted(options, key=lambda d: (occupancy[j, d], d)):
                best.setdefault(line.pool_of[d], int(d))
            open_pools = list(best.values())
            while open_pools and not line.done(j):
                open_pools = [d for d in open_pools if line.grow(j, d, t, limit=1)]
    return line.finish("fifo_all_devices", started)


@BATCH_BASELINES.register("alap_fewest_devices")
def alap_fewest_devices(problem: BatchProblem) -> Schedule:
    started = time.perf_counter()
    line = _Timeline(problem)
    base = problem.base
    first, last = problem.first_slot, problem.last_slot
    order = sorted(range(len(base.classes)), key=lambda j: (-problem.deadline_s[j], j))
    on_time_last = np.minimum(
        np.floor(problem.deadline_s / problem.slot_s + 1e-9).astype(np.int64) - 1, last)
    for j in order:
        ranked = sorted(line.options(j), key=lambda d: (base.occupancy_s[j, d] * line.tp[d], d))
        end = int(on_time_last[j]) if on_time_last[j] >= first[j] else int(last[j])
        for d in ranked:
            slots = max(end - int(first[j]) + 1, 1)
            work_s = line.left[j] * base.occupancy_s[j, d]
            replicas = max(math.ceil(work_s / (slots * line.room_s) - 1e-9), 1)
            while not line.done(j) and replicas < 2 * _most(line, d):
                for t in range(end, int(first[j]) - 1, -1):
                    if line.done(j):
                        break
                    line.fill(j, d, t)
                    line.grow(j, d, t, limit=max(replicas - int(line.replicas[d, t]), 0))
                replicas *= 2
            if line.done(j):
                break
        # A soft deadline may spill past it, still as late as the horizon allows.
        for t in range(int(end) + 1, int(last[j]) + 1):
            for d in ranked:
                line.fill(j, d, t)
                line.grow(j, d, t)
    return line.finish("alap_fewest_devices", started)


def _most(line: _Timeline, d: int) -> int:
    """Replicas of ``d`` its pool could hold at once."""
    return int(line.pool_count[line.pool_of[d]]) // int(line.tp[d])
