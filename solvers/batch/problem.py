"""A batch-scheduling problem: jobs as demand classes of a placement Problem, over slots.

Time is cut into ``n_slots`` slots of ``slot_s`` seconds. A replica of deployment ``d`` is on
for whole slots; switching it on (a *start*: more replicas on in slot ``t`` than in ``t-1``)
loads the model for ``load_s[d]`` seconds just before the slot, at the replica's idle power,
holding its devices (and that power under its rack's cap) in the ``load_slots[d]`` slots
before. A job is served only in the slots that lie wholly inside ``[release, deadline]``
(``first_slot..last_slot``), or, where it has a lateness penalty, also later, at
``penalty_j_per_s`` joules per request per second its slot ends after the deadline.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from solvers.errors import ProblemError
from solvers.problem import Problem

SLOT_EPS_S = 1e-9
"""Release and deadline within this of a slot boundary count as on it."""


@dataclass(frozen=True)
class BatchProblem:
    """Rows of every per-job array follow ``base.classes`` (one class per job, ``count`` its
    requests); ``base.energy_j`` and ``base.occupancy_s`` price one request of a job on a
    replica kept at its maximum batch."""

    base: Problem
    slot_s: float
    n_slots: int
    release_s: np.ndarray
    """(J,) seconds."""
    deadline_s: np.ndarray
    """(J,) seconds."""
    penalty_j_per_s: np.ndarray
    """(J,) joules per request per second late; NaN where the deadline is hard."""
    load_s: np.ndarray
    """(D,) seconds to load a replica before it serves."""

    def __post_init__(self) -> None:
        jobs, deps = len(self.base.classes), len(self.base.deployments)
        for name, size in (("release_s", jobs), ("deadline_s", jobs),
                           ("penalty_j_per_s", jobs), ("load_s", deps)):
            value = np.asarray(getattr(self, name), dtype=float)
            if value.shape != (size,):
                raise ProblemError(f"{name} has shape {value.shape}, expected ({size},)")
            object.__setattr__(self, name, value)
        if not (self.slot_s > 0 and self.n_slots >= 1):
            raise ProblemError("slot_s must be positive and n_slots at least 1")
        if np.any(self.load_s < 0) or not np.all(np.isfinite(self.load_s)):
            raise ProblemError("load_s must be finite and >= 0")

    @property
    def first_slot(self) -> np.ndarray:
        """(J,) first slot that starts at or after the job's release."""
        return np.ceil(self.release_s / self.slot_s - SLOT_EPS_S).astype(np.int64)

    @property
    def last_slot(self) -> np.ndarray:
        """(J,) last slot a job may run in: the last that ends by its deadline, or the last
        of the horizon for a job with a lateness penalty."""
        on_time = np.floor(self.deadline_s / self.slot_s + SLOT_EPS_S).astype(np.int64) - 1
        soft = ~np.isnan(self.penalty_j_per_s)
        return np.where(soft, self.n_slots - 1, np.minimum(on_time, self.n_slots - 1))

    @property
    def load_slots(self) -> np.ndarray:
        """(D,) slots before a start during which the loading replica holds its devices."""
        return np.ceil(self.load_s / self.slot_s - SLOT_EPS_S).astype(np.int64)

    def lateness_j(self) -> np.ndarray:
        """(J, T) penalty per request served in each slot (0 on time, inf outside the window)."""
        slot_end = (np.arange(self.n_slots) + 1) * self.slot_s
        late_s = np.maximum(slot_end[None, :] - self.deadline_s[:, None], 0.0)
        penalty = np.where(np.isnan(self.penalty_j_per_s), 0.0, self.penalty_j_per_s)
        cost = penalty[:, None] * late_s
        t = np.arange(self.n_slots)[None, :]
        inside = (t >= self.first_slot[:, None]) & (t <= self.last_slot[:, None])
        return np.where(inside, cost, np.inf)

    def most_replicas(self, pairs: np.ndarray) -> np.ndarray:
        """(D,) replicas a deployment ever needs on at once: its pool's devices over ``tp``,
        and no more than carry, in one slot, all the work of every job it may serve in
        ``pairs`` (J, D) (more would only idle)."""
        base = self.base
        counts = np.array([c.count for c in base.classes])
        work_s = np.sum(np.where(pairs, base.occupancy_s * counts[:, None], 0.0), axis=0)
        needed = np.ceil(work_s / (self.slot_s * base.max_utilization) - 1e-9)
        devices = np.array([base.pool_of(d).count // d.tp for d in base.deployments])
        return np.minimum(devices, needed).astype(np.int64)


def starts_of(replicas: np.ndarray) -> np.ndarray:
    """(D, T) replicas switched on at each slot's start (all on at slot 0 are starts)."""
    before = np.concatenate([np.zeros((replicas.shape[0], 1), dtype=replicas.dtype),
                             replicas[:, :-1]], axis=1)
    return np.maximum(replicas - before, 0)


@dataclass(frozen=True)
class Schedule:
    """Which replicas are on in each slot and which requests they serve, in problem order.

    ``served`` lists nonzero entries only: request counts of job ``job[k]`` on deployment
    ``deployment[k]`` in slot ``slot[k]``.
    """

    replicas: np.ndarray
    """(D, T) integers."""
    job: np.ndarray
    deployment: np.ndarray
    slot: np.ndarray
    served: np.ndarray
    solver: str
    status: str
    """``optimal``, ``feasible`` (stopped at the time limit or the gap), ``heuristic``."""
    objective_j: float
    """Energy plus lateness penalties."""
    bound_j: float | None = None
    gap: float | None = None
    solve_time_s: float = 0.0


@dataclass(frozen=True)
class ScheduleEnergy:
    active_j: float
    idle_j: float
    switch_j: float
    penalty_j: float

    @property
    def energy_j(self) -> float:
        return self.active_j + self.idle_j + self.switch_j


def schedule_energy(problem: BatchProblem, schedule: Schedule) -> ScheduleEnergy:
    """Active, idle and switching energy of a schedule, and its lateness penalties."""
    base = problem.base
    idle_w = np.array([d.idle_power_w for d in base.deployments])
    active = float(np.sum(base.energy_j[schedule.job, schedule.deployment] * schedule.served))
    late = problem.lateness_j()[schedule.job, schedule.slot]
    penalty = float(np.sum(np.where(schedule.served > 0, late, 0.0) * schedule.served))
    idle = float(np.sum(schedule.replicas * idle_w[:, None]) * problem.slot_s)
    starts = starts_of(schedule.replicas)
    switch = float(np.sum(starts * (idle_w * problem.load_s)[:, None]))
    return ScheduleEnergy(active, idle, switch, penalty)


def finish_s(problem: BatchProblem, schedule: Schedule) -> np.ndarray:
    """(J,) end of the last slot each job is served in (its release for a job of no
    requests)."""
    finish = problem.release_s.copy()
    ends = (schedule.slot + 1) * problem.slot_s
    np.maximum.at(finish, schedule.job[schedule.served > 0], ends[schedule.served > 0])
    return finish


def slots_for(horizon_s: float, slot_s: float) -> int:
    return max(1, math.ceil(horizon_s / slot_s - SLOT_EPS_S))
