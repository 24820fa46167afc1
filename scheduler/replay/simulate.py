"""The replay loop: requests arrive, the router sends each to a replica, replicas step until
their work is done; what every request saw and what every replica drew is recorded."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from scheduler.replay.engine import Replica, ReplicaSpec
from scheduler.replay.engine import Sequence as Running
from scheduler.replay.events import ARRIVAL, STEP_END, EventQueue
from scheduler.replay.router import Router


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
             *, horizon_s: float = 0.0) -> ReplayResult:
    """Replay ``requests`` on ``replica_specs``, routed by ``shares`` (C, D): the plan's
    routing of each class over its deployments. Energy counts every replica from 0 to the
    later of ``horizon_s`` and the last step's end."""
    replicas = [Replica(spec) for spec in replica_specs]
    router = Router(shares, replicas)
    n = len(requests)
    served_by = np.full(n, -1)
    first_token_s = np.full(n, np.nan)
    done_s = np.full(n, np.nan)
    gaps_s: list[float] = []
    gap_count: list[int] = []
    queue = EventQueue()
    for i in range(n):
        queue.push(float(requests.arrival_s[i]), ARRIVAL, i)

    def start(index: int, now_s: float) -> None:
        duration_s = replicas[index].start_step(now_s)
        if duration_s is not None:
            queue.push(now_s + duration_s, STEP_END, index)

    index_of = {replica: k for k, replica in enumerate(replicas)}
    end_s = horizon_s
    while queue:
        now_s, kind, payload = queue.pop()
        if kind == ARRIVAL:
            request_class = int(requests.request_class[payload])
            if not router.routable(request_class):
                continue
            replica = router.pick(request_class)
            tokens_in = int(requests.input_tokens[payload])
            tokens_out = max(int(requests.output_tokens[payload]), 1)
            if tokens_in + tokens_out > replica.spec.kv_capacity_tokens:
                continue
            k = index_of[replica]
            served_by[payload] = k
            replica.admit(Running(payload, tokens_in, tokens_out, prefill_target=tokens_in))
            if not replica.busy:
                start(k, now_s)
            elif (end_cut_s := replica.cut(now_s)) is not None:
                queue.push(end_cut_s, STEP_END, k)
            continue
        replica = replicas[payload]
        if not replica.busy or now_s != replica.step_end_s:
            continue  # the end of a run that was cut short
        finished, gaps = replica.end_step(now_s)
        end_s = max(end_s, now_s)
        for sequence in finished:
            first_token_s[sequence.request] = sequence.first_token_s
            done_s[sequence.request] = now_s
        for gap_s, count in gaps:
            gaps_s.append(gap_s)
            gap_count.append(count)
        start(payload, now_s)

    arrival_s = np.asarray(requests.arrival_s, dtype=float)
    output_tokens = np.maximum(np.asarray(requests.output_tokens), 1)
    e2e_s = done_s - arrival_s
    with np.errstate(invalid="ignore", divide="ignore"):
        tpot_s = np.where(output_tokens > 1, (done_s - first_token_s) / (output_tokens - 1),
                          np.nan)
    return ReplayResult(
        replica=served_by, ttft_s=first_token_s - arrival_s, e2e_s=e2e_s, tpot_s=tpot_s,
        itl_s=np.asarray(gaps_s, dtype=float), itl_count=np.asarray(gap_count, dtype=np.int64),
        replica_deployment=np.array([spec.deployment for spec in replica_specs], dtype=int),
        steps=tuple(_step_arrays(replica) for replica in replicas),
        idle_power_w=np.array([spec.costs.idle_power_w for spec in replica_specs]),
        preemptions=np.array([replica.preemptions for replica in replicas]),
        end_s=float(end_s))


def _step_arrays(replica: Replica) -> dict[str, np.ndarray]:
    columns = ("start_s", "duration_s", "energy_j", "running", "waiting", "decode_batch",
               "prefill_tokens", "steps")
    return {column: np.array([getattr(step, column) for step in replica.steps], dtype=float)
            for column in columns}
