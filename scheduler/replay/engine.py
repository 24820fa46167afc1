"""One replica as vLLM (V1) serves it, step by step.

Each step, the scheduler spends a budget of ``max_batched_tokens`` tokens: first one token for
every running sequence that is decoding, then the next prefill chunk of running sequences
whose prompt is not all in the cache, then new sequences from the waiting queue (first come,
first served) while fewer than ``max_batch`` run. KV blocks of ``BLOCK_TOKENS`` tokens are
allocated as a sequence's context grows; when a decoding sequence needs a block and none is
free, the sequence admitted last is preempted: its blocks are freed and it goes back to the
head of the queue, to recompute its prompt and the tokens it had generated (vLLM's
recompute preemption). A step's time and energy are its decode step (the decoding sequences
at their mean context, rounded to a whole token) plus each prefill chunk
(``energy_models.steps.StepCosts``); a sequence whose prompt completes in a step has its
first token at that step's end.

Steps that only decode, with nothing waiting that could join, repeat with the same batch
until its first sequence finishes: such a run is priced at once (its contexts grow a token a
step) and recorded as one ``StepRecord`` of ``steps`` steps. A request that arrives during a
run cuts it at the first step end after its arrival, where the step-by-step engine would
have admitted it, so runs change nothing but the speed.
"""

from __future__ import annotations

import collections
import itertools
import math
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from energy_models.catalog.specs import DeviceSpec
from energy_models.memory import BLOCK_TOKENS, serving_memory
from energy_models.steps import StepCosts

GIB = 2**30
CONTEXT_BLOCK = 1024
"""Mean contexts whose decode step costs are priced together (one array per batch)."""
MAX_RUN_STEPS = 4096
"""Longest run of decode steps priced at once (bounds the arrays a run holds)."""


def vllm_token_budget(device: DeviceSpec) -> int:
    """vLLM's default max_num_batched_tokens for its OpenAI server on ``device``
    (``EngineArgs.get_batch_defaults``): 8,192 on devices of 70 GiB or more other than A100
    (whose throughput drops with it, vLLM PR #17885), else 2,048."""
    large = device.memory_gb * 1e9 >= 70 * GIB and "a100" not in device.name.lower()
    return 8192 if large else 2048


@dataclass(frozen=True)
class ReplicaSpec:
    """A replica to simulate: its deployment, costs and vLLM's limits."""

    id: str
    deployment: int
    """Index of the plan's deployment this replica belongs to."""
    costs: StepCosts
    max_batch: int
    """max_num_seqs."""
    kv_capacity_tokens: int
    max_batched_tokens: int
    """Token budget per step (``vllm_token_budget`` unless the server sets it)."""


def vllm_replica(replica_id: str, deployment: int, costs: StepCosts, max_num_seqs: int,
                 token_budget: int | None = None) -> ReplicaSpec:
    """A replica as vLLM lays it out: KV capacity from the memory model of ``costs``'s LLM,
    device and TP at ``max_num_seqs``; the token budget vLLM's default unless given."""
    memory = serving_memory(costs.llm, costs.device, costs.tp, max_num_seqs, 1.0)
    return ReplicaSpec(replica_id, deployment, costs, max_num_seqs, memory.kv_capacity_tokens,
                       token_budget or vllm_token_budget(costs.device))


@dataclass(eq=False)
class Sequence:
    """A request inside a replica (compared by identity: the scheduler looks them up in its
    queues every step)."""

    request: int
    input_tokens: int
    output_tokens: int
    prefill_target: int
    """Tokens to have in the cache before the next token: the prompt, or after a preemption
    the prompt and the tokens generated before it."""
    prefilled: int = 0
    generated: int = 0
    blocks: int = 0
    active: bool = False
    """In the running batch (not waiting, preempted or finished)."""
    first_token_s: float | None = None
    last_token_s: float | None = None

    @property
    def context(self) -> int:
        return self.prefilled if self.prefilled < self.prefill_target else (
            self.input_tokens + self.generated)


@dataclass
class StepRecord:
    """What a replica did in one step."""

    start_s: float
    duration_s: float
    energy_j: float
    running: int
    waiting: int
    decode_batch: int
    prefill_tokens: int
    steps: int = 1
    """Decode steps of one run (see the module docstring); 1 for a step with prefill."""


@dataclass(eq=False)
class Replica:
    """A replica's state during the simulation."""

    spec: ReplicaSpec
    waiting: deque[Sequence] = field(default_factory=deque)
    running: list[Sequence] = field(default_factory=list)
    free_blocks: int = 0
    preemptions: int = 0
    steps: list[StepRecord] = field(default_factory=list)
    _in_step: list[tuple[Sequence, int]] = field(default_factory=list)
    """(sequence, prefill tokens this step; 0 for a decode token) of the step under way."""
    _run_ends_s: np.ndarray = field(default_factory=lambda: np.empty(0))
    """End time of each step of the run (or the one step) under way."""
    _run_energy_j: np.ndarray = field(default_factory=lambda: np.empty(0))
    """Energy of the run under way by the end of each of its steps."""
    _decode_costs: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = field(
        default_factory=dict)
    """(batch, block of CONTEXT_BLOCK contexts) -> decode step time and power over it."""

    def _decode_steps(self, batch: int, context_tokens: np.ndarray
                      ) -> tuple[np.ndarray, np.ndarray]:
        """Decode step (time_s, power_w) at ``batch`` and each whole-token mean context,
        looked up in blocks of contexts priced once per replica."""
        block = context_tokens // CONTEXT_BLOCK
        offset = context_tokens - block * CONTEXT_BLOCK
        first, last = int(block[0]), int(block[-1])
        tables = [self._decode_block(batch, b) for b in range(first, last + 1)]
        if len(tables) == 1:
            return tables[0][0][offset], tables[0][1][offset]
        times = np.concatenate([t for t, _ in tables])
        powers = np.concatenate([w for _, w in tables])
        index = (block - first) * CONTEXT_BLOCK + offset
        return times[index], powers[index]

    def _decode_block(self, batch: int, block: int) -> tuple[np.ndarray, np.ndarray]:
        key = (batch, block)
        if key not in self._decode_costs:
            contexts = block * CONTEXT_BLOCK + np.arange(CONTEXT_BLOCK)
            self._decode_costs[key] = self.spec.costs.decode_steps(batch, contexts)
        return self._decode_costs[key]

    def __post_init__(self) -> None:
        self.free_blocks = self.spec.kv_capacity_tokens // BLOCK_TOKENS

    @property
    def busy(self) -> bool:
        """A step is under way."""
        return bool(self._in_step)

    @property
    def step_end_s(self) -> float:
        """When the step or run under way ends."""
        return float(self._run_ends_s[-1])

    def admit(self, sequence: Sequence) -> None:
        self.waiting.append(sequence)

    def _grow(self, sequence: Sequence, tokens: int) -> bool:
        """Allocate the blocks ``sequence`` needs to hold ``tokens`` more; False if none left."""
        held = sequence.context + tokens
        if held <= sequence.blocks * BLOCK_TOKENS:
            return True
        need = math.ceil(held / BLOCK_TOKENS) - sequence.blocks
        if need > self.free_blocks:
            return False
        self.free_blocks -= need
        sequence.blocks += need
        return True

    def _release(self, sequence: Sequence) -> None:
        """Take ``sequence`` out of the running batch and free its blocks."""
        self.running.remove(sequence)
        sequence.active = False
        self.free_blocks += sequence.blocks
        sequence.blocks = 0

    def _preempt(self, sequence: Sequence) -> None:
        self._release(sequence)
        sequence.prefilled = 0
        sequence.prefill_target = sequence.input_tokens + sequence.generated
        self.waiting.appendleft(sequence)
        self.preemptions += 1

    def start_step(self, now_s: float) -> float | None:
        """Schedule and start one step at ``now_s``; its duration, or None with nothing to do."""
        plan = self._schedule()
        while not plan and self.running:
            # Every running sequence is mid-prefill and the blocks are gone: the last one
            # admitted gives way, as vLLM preempts when a step cannot be scheduled.
            self._preempt(self.running[-1])
            plan = self._schedule()
        if not plan:
            return None
        return self._run(now_s, plan)

    def _schedule(self) -> list[tuple[Sequence, int]]:
        """One step's work under the token budget: (sequence, prefill tokens; 0 to decode)."""
        budget = self.spec.max_batched_tokens
        plan: list[tuple[Sequence, int]] = []
        decoding, prefilling = [], []
        for sequence in self.running:
            (prefilling if sequence.prefilled < sequence.prefill_target
             else decoding).append(sequence)
        for sequence in decoding:
            if not sequence.active:
                continue  # preempted to make room for an earlier one
            held = sequence.input_tokens + sequence.generated + 1
            while held > sequence.blocks * BLOCK_TOKENS and not self._grow(sequence, 1):
                victim = self.running[-1]
                self._preempt(victim)
                if victim is sequence:
                    break
            if sequence.active and budget > 0:
                plan.append((sequence, 0))
                budget -= 1
        for sequence in prefilling:
            if sequence.active and budget > 0:
                chunk = min(sequence.prefill_target - sequence.prefilled, budget)
                if self._grow(sequence, chunk):
                    plan.append((sequence, chunk))
                    budget -= chunk
        while self.waiting and budget > 0 and len(self.running) < self.spec.max_batch:
            sequence = self.waiting[0]
            chunk = min(sequence.prefill_target - sequence.prefilled, budget)
            if not self._grow(sequence, chunk):
                break
            self.waiting.popleft()
            self.running.append(sequence)
            sequence.active = True
            plan.append((sequence, chunk))
            budget -= chunk
        return plan

    def _run(self, now_s: float, plan: list[tuple[Sequence, int]]) -> float:
        decoders = [s for s, chunk in plan if chunk == 0]
        if len(decoders) == len(plan) and (not self.waiting
                                           or len(self.running) >= self.spec.max_batch):
            steps = self._run_length(decoders)
            if steps > 1:
                return self._run_decodes(now_s, plan, decoders, steps)
        duration_s = energy_j = 0.0
        if decoders:
            step_s, step_w = self._decode_steps(len(decoders), np.array(
                [round(sum(s.input_tokens + s.generated for s in decoders) / len(decoders))]))
            duration_s += float(step_s[0])
            energy_j += float(step_s[0] * step_w[0])
        prefill_tokens = 0
        for sequence, chunk in plan:
            if chunk:
                chunk_s, chunk_w = self.spec.costs.prefill(sequence.prefilled, chunk)
                duration_s += chunk_s
                energy_j += chunk_s * chunk_w
                prefill_tokens += chunk
        self.steps.append(StepRecord(now_s, duration_s, energy_j, len(self.running),
                                     len(self.waiting), len(decoders), prefill_tokens))
        self._in_step = plan
        self._run_ends_s = np.array([now_s + duration_s])
        self._run_energy_j = np.array([energy_j])
        return duration_s

    def _run_length(self, decoders: list[Sequence]) -> int:
        """Steps the batch ``decoders`` can run unchanged: until its first sequence finishes,
        and no further than the free KV blocks let every sequence grow (their first step's
        token already has its block); allocates the blocks."""
        steps = min(min(s.output_tokens - s.generated for s in decoders), MAX_RUN_STEPS)
        if steps <= 1:
            return 1
        context = np.array([s.input_tokens + s.generated for s in decoders])
        blocks = np.array([s.blocks for s in decoders])

        def blocks_needed(k: int) -> np.ndarray:
            return np.maximum(-(-(context + k) // BLOCK_TOKENS) - blocks, 0)

        if blocks_needed(steps).sum() > self.free_blocks:
            low, high = 1, steps  # blocks_needed(1) is 0: _schedule allocated it
            while high - low > 1:
                middle = (low + high) // 2
                low, high = ((middle, high) if blocks_needed(middle).sum() <= self.free_blocks
                             else (low, middle))
            steps = low
        extra = blocks_needed(steps)
        for sequence, more in zip(decoders, extra.tolist(), strict=True):
            sequence.blocks += more
        self.free_blocks -= int(extra.sum())
        return steps

    def _run_decodes(self, now_s: float, plan: list[tuple[Sequence, int]],
                     decoders: list[Sequence], steps: int) -> float:
        mean_context = sum(s.input_tokens + s.generated for s in decoders) / len(decoders)
        step_s, step_w = self._decode_steps(
            len(decoders), np.round(mean_context + np.arange(steps)).astype(np.int64))
        self._run_ends_s = now_s + np.cumsum(step_s)
        self._run_energy_j = np.cumsum(step_s * step_w)
        self.steps.append(StepRecord(now_s, float(self._run_ends_s[-1] - now_s),
                                     float(self._run_energy_j[-1]), len(self.running),
                                     len(self.waiting), len(decoders), 0, steps))
        self._in_step = plan
        return float(self._run_ends_s[-1] - now_s)

    def cut(self, now_s: float) -> float | None:
        """A request joined during a run: the run ends at its first step end after ``now_s``
        instead (blocks allocated beyond it go back); the new end, or None if unchanged."""
        keep = int(np.searchsorted(self._run_ends_s, now_s, side="right")) + 1
        if keep >= len(self._run_ends_s):
            return None
        self._run_ends_s = self._run_ends_s[:keep]
        self._run_energy_j = self._run_energy_j[:keep]
        record = self.steps[-1]
        record.duration_s = float(self._run_ends_s[-1] - record.start_s)
        record.energy_j = float(self._run_energy_j[-1])
        record.steps = keep
        for sequence, _ in self._in_step:
            needed = -(-(sequence.context + keep) // BLOCK_TOKENS)
            self.free_blocks += sequence.blocks - needed
            sequence.blocks = needed
        return float(self._run_ends_s[-1])

    def end_step(self, now_s: float) -> tuple[list[Sequence], list[tuple[float, int]]]:
        """Finish the step or run under way at ``now_s``: the sequences that completed, and
        the inter-token gaps of the tokens it produced after a first, as (gap, how many)."""
        finished = []
        previous_s = []
        """Time of the last token before this step, of each sequence that had one."""
        steps = len(self._run_ends_s)
        ends_s = self._run_ends_s.tolist()
        first_end_s = ends_s[0]
        for sequence, chunk in self._in_step:
            if not sequence.active:
                continue
            if chunk:
                sequence.prefilled += chunk
                if sequence.prefilled < sequence.prefill_target:
                    continue
            if sequence.first_token_s is None:
                sequence.first_token_s = now_s
            else:
                previous_s.append(sequence.last_token_s)
            sequence.last_token_s = now_s
            sequence.generated += steps
            if sequence.generated >= sequence.output_tokens:
                finished.append(sequence)
        for sequence in finished:
            self._release(sequence)
        # Most sequences had their last token when the step began: count times, not gaps.
        gaps_s = {first_end_s - last_s: count
                  for last_s, count in collections.Counter(previous_s).items()}
        for before_s, after_s in itertools.pairwise(ends_s):
            gaps_s[after_s - before_s] = gaps_s.get(after_s - before_s, 0) + len(previous_s)
        self._in_step = []
        return finished, list(gaps_s.items())
