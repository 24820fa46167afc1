"""The replay: the router sends each request to a replica up front, then each replica serves
its own arrivals on its own event heap until its work is done (replicas share nothing, so
they may run in parallel); what every request saw and what every replica drew is recorded."""

from __future__ import annotations

import functools
import multiprocessing
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

import numpy as np

from scheduler.replay.engine import Replica, ReplicaSpec
from scheduler.replay.engine import Sequence as Running
from scheduler.replay.events import ARRIVAL, STEP_END, EventQueue
from scheduler.replay.router import route


@dataclass(frozen=True)
class Requests:
    """Arrivals, one entry per request, sorted by ``arrival_s``."""

    arrival_s: np.ndarray
    request_class: np.ndarray
    input_tokens: np.ndarray
    output_tokens: np.ndarray

    def __len__(self) -> int:
        return len(self.arrival_s)


@dataclass(frozen=True)
class ReplayResult:
    """Per request (NaN where it was not served: no replica of its class, or longer than a
    replica's KV cache holds), per token gap and per replica."""

    replica: np.ndarray
    """Index of the replica (in ``replica_specs`` order) that served each request, -1 if
    none."""
    ttft_s: np.ndarray
    e2e_s: np.ndarray
    tpot_s: np.ndarray
    """Each request's mean inter-token gap (NaN with one output token)."""
    itl_s: np.ndarray
    """Inter-token gaps: each distinct gap of a step (or run of steps)..."""
    itl_count: np.ndarray
    """... and how many tokens had it."""
    replica_deployment: np.ndarray
    """Per replica, the index of the plan's deployment it belongs to."""
    steps: tuple[dict[str, np.ndarray], ...]
    """Per replica: ``start_s``, ``duration_s``, ``energy_j``, ``running``, ``waiting``,
    ``decode_batch``, ``prefill_tokens`` and ``steps`` of every step (or run of decode
    steps, ``engine``)."""
    idle_power_w: np.ndarray
    preemptions: np.ndarray
    end_s: float
    """End of the window energy is counted over: the horizon or the last step's end."""

    @property
    def busy_energy_j(self) -> np.ndarray:
        return np.array([steps["energy_j"].sum() for steps in self.steps])

    @property
    def busy_s(self) -> np.ndarray:
        return np.array([steps["duration_s"].sum() for steps in self.steps])

    @property
    def idle_energy_j(self) -> np.ndarray:
        return self.idle_power_w * (self.end_s - self.busy_s)

    @property
    def energy_j(self) -> float:
        return float(self.busy_energy_j.sum() + self.idle_energy_j.sum())


def simulate(replica_specs: Sequence[ReplicaSpec], shares: np.ndarray, requests: Requests,
             *, horizon_s: float = 0.0, workers: int = 1) -> ReplayResult:
    """Replay ``requests`` on ``replica_specs``, routed by ``shares`` (C, D): the plan's
    routing of each class over its deployments (``router.route``). Energy counts every
    replica from 0 to the later of ``horizon_s`` and the last step's end. Replicas run on
    their own once requests are routed: ``workers`` > 1 runs them in that many processes,
    with the same result."""
    replica_deployment = np.array([spec.deployment for spec in replica_specs], dtype=int)
    served_by = route(shares, replica_deployment, requests.request_class)
    tokens_in = np.asarray(requests.input_tokens, dtype=np.int64)
    tokens_out = np.maximum(np.asarray(requests.output_tokens, dtype=np.int64), 1)
    capacity = np.array([spec.kv_capacity_tokens for spec in replica_specs])
    # A request longer than its replica's KV cache can never run there.
    too_long = served_by >= 0
    too_long[too_long] = tokens_in[too_long] + tokens_out[too_long] > capacity[
        served_by[too_long]]
    served_by[too_long] = -1
    arrival_s = np.asarray(requests.arrival_s, dtype=float)
    members = [np.flatnonzero(served_by == k) for k in range(len(replica_specs))]
    jobs = [(spec, arrival_s[mine], tokens_in[mine], tokens_out[mine])
            for spec, mine in zip(replica_specs, members, strict=True)]
    if workers > 1 and sum(len(job[1]) > 0 for job in jobs) > 1:
        # Workers start from a clean server process: forking one that holds solver or BLAS
        # threads can hang the child.
        outcomes = list(_pool(workers).map(_replay_replica, *zip(*jobs, strict=True)))
    else:
        outcomes = [_replay_replica(*job) for job in jobs]

    n = len(requests)
    first_token_s = np.full(n, np.nan)
    done_s = np.full(n, np.nan)
    for mine, outcome in zip(members, outcomes, strict=True):
        first_token_s[mine] = outcome.first_token_s
        done_s[mine] = outcome.done_s
    e2e_s = done_s - arrival_s
    with np.errstate(invalid="ignore", divide="ignore"):
        tpot_s = np.where(tokens_out > 1, (done_s - first_token_s) / (tokens_out - 1), np.nan)
    return ReplayResult(
        replica=served_by, ttft_s=first_token_s - arrival_s, e2e_s=e2e_s, tpot_s=tpot_s,
        itl_s=np.concatenate([o.gaps_s for o in outcomes] + [np.empty(0)]),
        itl_count=np.concatenate([o.gap_count for o in outcomes]
                                 + [np.empty(0, dtype=np.int64)]),
        replica_deployment=replica_deployment,
        steps=tuple(o.steps for o in outcomes),
        idle_power_w=np.array([spec.costs.idle_power_w for spec in replica_specs]),
        preemptions=np.array([o.preemptions for o in outcomes], dtype=np.int64),
        end_s=max([horizon_s, *(o.end_s for o in outcomes)]))


@functools.cache
def _pool(workers: int) -> ProcessPoolExecutor:
    """One pool per worker count for the process's life: every replay reuses its workers."""
    return ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("forkserver"))


@dataclass(frozen=True)
class _ReplicaOutcome:
    first_token_s: np.ndarray
    done_s: np.ndarray
    gaps_s: np.ndarray
    gap_count: np.ndarray
    steps: dict[str, np.ndarray]
    preemptions: int
    end_s: float


def _replay_replica(spec: ReplicaSpec, arrival_s: np.ndarray, tokens_in: np.ndarray,
                    tokens_out: np.ndarray) -> _ReplicaOutcome:
    """One replica serving its own arrivals, on its own event heap."""
    replica = Replica(spec)
    n = len(arrival_s)
    first_token_s = np.full(n, np.nan)
    done_s = np.full(n, np.nan)
    gaps: dict[float, int] = {}
    queue = EventQueue()
    for i, time_s in enumerate(arrival_s.tolist()):
        queue.push(time_s, ARRIVAL, i)
    while queue:
        now_s, kind, i = queue.pop()
        if kind == ARRIVAL:
            replica.admit(Running(i, int(tokens_in[i]), int(tokens_out[i]),
                                  prefill_target=int(tokens_in[i])))
            if not replica.busy:
                if (duration_s := replica.start_step(now_s)) is not None:
                    queue.push(now_s + duration_s, STEP_END, 0)
            elif (cut_s := replica.cut(now_s)) is not None:
                queue.push(cut_s, STEP_END, 0)
            continue
        if not replica.busy or now_s != replica.step_end_s:
            continue  # the end of a run that was cut short
        finished, step_gaps = replica.end_step(now_s)
        for sequence in finished:
            first_token_s[sequence.request] = sequence.first_token_s
            done_s[sequence.request] = now_s
        for gap_s, count in step_gaps:
            gaps[gap_s] = gaps.get(gap_s, 0) + count
        duration_s = replica.start_step(now_s)
        if duration_s is not None:
            queue.push(now_s + duration_s, STEP_END, 0)
    return _ReplicaOutcome(first_token_s, done_s, np.array(list(gaps), dtype=float),
                           np.array(list(gaps.values()), dtype=np.int64),
                           _step_arrays(replica), replica.preemptions,
                           replica.steps[-1].start_s + replica.steps[-1].duration_s
                           if replica.steps else 0.0)


def _step_arrays(replica: Replica) -> dict[str, np.ndarray]:
    columns = ("start_s", "duration_s", "energy_j", "running", "waiting", "decode_batch",
               "prefill_tokens", "steps")
    return {column: np.array([getattr(step, column) for step in replica.steps], dtype=float)
            for column in columns}
