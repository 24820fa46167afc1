"""What a vLLM replica holds in device memory, and how many sequences it keeps resident.

vLLM (v1 engine, 0.10+) sizes its paged KV cache at start-up: it loads the weights, runs one
forward pass over a ``max_num_batched_tokens`` prefill chunk plus a sampler pass over
``max_num_seqs`` rows to measure peak activation memory, and gives what is left of
``gpu_memory_utilization`` x device memory to KV blocks of 16 tokens
(``gpu_worker.determine_available_memory``, ``kv_cache_utils.get_kv_cache_config``). At run
time a sequence holds only the blocks of the tokens it has so far; when a running sequence
needs a block and none is free, the scheduler preempts the most recently admitted one, frees
its blocks and later recomputes its prompt and generated tokens as a new prefill
(``scheduler.schedule``, recompute mode). So a ``max_num_seqs`` beyond what the cache holds is
not an error: the replica runs with fewer resident sequences and pays for recomputation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from energy_models.catalog.specs import DeviceSpec, LlmSpec

TP_DEGREES = (1, 2, 4, 8)
MAX_NUM_SEQS_OPTIONS = (1, 8, 16, 32, 64, 96, 128, 192, 256, 384, 512, 768, 1024, 1536, 2048)
"""The ``max_num_seqs`` settings a plan considers unless the fleet names its own: the grid
ML.ENERGY v3 swept on vLLM (steps of x1.5 and x2; its lowest-energy settings lie between 32
and 2048) and one request at a time."""
BLOCK_TOKENS = 16
"""vLLM's default KV block size on CUDA (``CacheConfig.block_size``)."""
MAX_NUM_BATCHED_TOKENS = 8192
"""Tokens of the prefill chunk the start-up profile runs: vLLM's default for an API server on
a GPU of 70 GiB or more, and what the ML.ENERGY v3 configurations set."""
ACTIVATION_HIDDEN_COPIES = 4
"""Hidden-size tensors alive at once per token in the profiled forward pass (residual, normed
input, attention output, the next layer's input); our estimate, not a vLLM constant."""
SAMPLER_LOGIT_COPIES = 2
"""FP32 vocabulary-wide rows per sequence in the profiled sampler pass (logits and the
probabilities or sorted copy top-p/top-k makes)."""
NON_TORCH_GB = 1.0
"""Per device memory outside PyTorch's allocator: CUDA context, cuBLAS workspaces, NCCL and
custom all-reduce buffers. vLLM start-up logs report 0.1-0.6 GiB as "non-torch memory" on top
of a ~0.5 GiB context."""
CUDA_GRAPH_GB = 0.5
"""Per device memory of the captured CUDA graphs (vLLM captures decode batches up to 512;
start-up logs report 0.3-1.5 GiB). Newer vLLM subtracts it from the KV budget; older releases
took it from the 1 - gpu_memory_utilization headroom. We subtract it."""
GB = 1e9


@dataclass(frozen=True)
class ServingMemory:
    """One replica's memory as vLLM lays it out, per device unless named per replica."""

    llm: str
    device: str
    tp: int
    max_num_seqs: int
    mean_context_tokens: float
    usable_gb: float
    """gpu_memory_utilization x device memory."""
    weights_gb: float
    activation_gb: float
    """Peak activations of a max_num_batched_tokens prefill chunk and the sampler pass."""
    overhead_gb: float
    """Activations, CUDA graphs and non-torch memory."""
    kv_budget_gb: float
    """What is left for KV blocks (negative when the weights alone do not fit)."""
    kv_capacity_tokens: int
    """Tokens the replica's KV blocks hold (every KV layer full; windowed layers make a
    sequence cheaper, not the pool larger)."""
    kv_per_seq_gb: float
    """One sequence at the mean context, rounded up to whole blocks (windows and recurrent
    state included)."""
    seq_capacity: int
    """Sequences at the mean context the KV blocks hold at once."""
    resident_seqs: int
    """min(max_num_seqs, seq_capacity): the concurrency vLLM keeps running."""
    preempted: bool
    """max_num_seqs exceeds seq_capacity: vLLM admits more than it can grow and preempts."""
    recompute_tokens_per_seq: float
    """Tokens an average request recomputes after preemption (0 when not preempted)."""
    problem: str | None
    """Why the replica cannot run min_concurrency sequences, or None."""

    @property
    def memory_need_gb(self) -> float:
        """Weights, overheads and the resident sequences' KV blocks per device."""
        return self.weights_gb + self.overhead_gb + self.resident_seqs * self.kv_per_seq_gb


def _weights_gb(llm: LlmSpec, tp: int, expert_parallel: bool) -> float:
    """Weights per device. Tensor parallelism splits every matrix (embeddings and LM head
    included) over tp; with expert parallelism vLLM places whole experts, ceil(E / tp) on the
    fullest device, and tensor-splits the rest over the same devices."""
    if not (expert_parallel and llm.experts):
        return llm.weight_gb / tp
    e, k = llm.experts, llm.experts_per_token
    routed_share = (llm.params_b - llm.active_params_b) * e / (e - k) / llm.params_b
    routed_gb = llm.weight_gb * routed_share
    return (llm.weight_gb - routed_gb) / tp + routed_gb * math.ceil(e / tp) / e


def _attention_split(llm: LlmSpec, tp: int) -> int:
    """Devices the attention cache is divided over: KV heads split over tp, replicated once
    tp exceeds them; a latent (MLA) cache is replicated on every device."""
    if llm.kv_values_per_token_layer is not None:
        return 1
    return max(1, min(tp, llm.kv_heads))


def _activation_gb(llm: LlmSpec, tp: int, max_num_seqs: int) -> float:
    """Peak of vLLM's start-up profile: a MAX_NUM_BATCHED_TOKENS prefill chunk (hidden
    states, the tensor-split QKV and gate/up projections; for MoE the top-k experts' gate/up
    outputs) and the sampler over max_num_seqs FP32 vocabulary rows."""
    qkv = (llm.heads + 2 * llm.kv_heads) * llm.head_dim_ / tp
    mlp = 2 * llm.intermediate_size * max(1, llm.experts_per_token) / tp
    per_token = (ACTIVATION_HIDDEN_COPIES * llm.hidden_size + qkv + mlp) * llm.dtype_bytes
    sampler = max_num_seqs * llm.vocab_size * 4 * SAMPLER_LOGIT_COPIES
    return (MAX_NUM_BATCHED_TOKENS * per_token + sampler) / GB


def serving_memory(llm: LlmSpec, device: DeviceSpec, tp: int, max_num_seqs: int,
                   mean_context_tokens: float, *, gpu_memory_utilization: float = 0.9,
                   min_concurrency: int = 1, expert_parallel: bool = False) -> ServingMemory:
    """How vLLM lays out ``llm`` on ``tp`` x ``device`` with ``max_num_seqs`` and how many
    sequences of ``mean_context_tokens`` (prompt plus the output generated so far, on
    average) stay resident. Infeasible (``problem`` set) only when the weights, overheads and
    ``min_concurrency`` such sequences do not fit."""
    usable_gb = device.memory_gb * gpu_memory_utilization
    weights_gb = _weights_gb(llm, tp, expert_parallel)
    activation_gb = _activation_gb(llm, tp, max_num_seqs)
    overhead_gb = activation_gb + CUDA_GRAPH_GB + NON_TORCH_GB
    kv_budget_gb = usable_gb - weights_gb - overhead_gb

    attention_split = _attention_split(llm, tp)
    block_bytes = BLOCK_TOKENS * llm.kv_bytes_per_token / attention_split
    blocks = max(0, math.floor(kv_budget_gb * GB / block_bytes)) if block_bytes else 0
    context_tokens = math.ceil(mean_context_tokens / BLOCK_TOKENS) * BLOCK_TOKENS
    state_bytes = llm.state_bytes_per_seq / tp
    attention_bytes = float(llm.kv_bytes_per_sequence(context_tokens)) - llm.state_bytes_per_seq
    per_seq_bytes = attention_bytes / attention_split + state_bytes
    seq_capacity = max(0, math.floor(kv_budget_gb * GB / per_seq_bytes))
    resident = min(max_num_seqs, seq_capacity)
    preempted = max_num_seqs > seq_capacity
    # vLLM admits waiting requests while their prompts fit, so it starts up to max_num_seqs
    # and preempts as they grow; we take the share beyond the steady resident count to be
    # preempted once each, recomputing about the mean context.
    recompute = (1 - resident / max_num_seqs) * mean_context_tokens if preempted else 0.0

    problem = None
    if seq_capacity < min_concurrency:
        need_gb = weights_gb + overhead_gb + min_concurrency * per_seq_bytes / GB
        problem = (f"{llm.name} at tp {tp} on {device.name} needs {need_gb:.1f} GB per "
                   f"device for its weights ({weights_gb:.1f} GB), overheads "
                   f"({overhead_gb:.1f} GB) and {min_concurrency} sequence(s) of "
                   f"{mean_context_tokens:,.0f} tokens; {device.name} offers {usable_gb:.1f} GB "
                   f"at gpu_memory_utilization {gpu_memory_utilization:g}")
    return ServingMemory(
        llm=llm.name, device=device.name, tp=tp, max_num_seqs=max_num_seqs,
        mean_context_tokens=mean_context_tokens, usable_gb=usable_gb, weights_gb=weights_gb,
        activation_gb=activation_gb, overhead_gb=overhead_gb, kv_budget_gb=kv_budget_gb,
        kv_capacity_tokens=blocks * BLOCK_TOKENS, kv_per_seq_gb=per_seq_bytes / GB,
        seq_capacity=seq_capacity, resident_seqs=resident, preempted=preempted,
        recompute_tokens_per_seq=recompute, problem=problem)


def serving_settings(llm: LlmSpec, device: DeviceSpec, tp_degrees, max_num_seqs_options,
                     mean_context_tokens: float) -> list[ServingMemory]:
    """The feasible (tp, max_num_seqs) settings worth running: a setting whose cache holds
    fewer than its max_num_seqs runs at most at the concurrency of a smaller one (plus
    recomputation), so it is kept only where it keeps more sequences resident than every
    smaller max_num_seqs at the same tp."""
    kept = []
    for tp in tp_degrees:
        most_resident = 0
        for max_num_seqs in sorted(max_num_seqs_options):
            memory = serving_memory(llm, device, tp, max_num_seqs, mean_context_tokens)
            if memory.problem is None and memory.resident_seqs > most_resident:
                kept.append(memory)
                most_resident = memory.resident_seqs
    return kept


LOAD_STARTUP_S = 30.0
"""Seconds a vLLM replica spends starting besides reading weights: engine and NCCL start,
the memory profile and CUDA-graph capture (vLLM 0.10 logs about 20-60 s on H100; ours)."""
LOAD_GB_PER_S = 2.0
"""Weights each device reads per second from local NVMe or the page cache (safetensors);
the devices of a tensor-parallel replica read their shards at once."""


def model_load_s(weights_gb_per_device: float) -> float:
    """Seconds from switching a replica on until it serves, at idle power meanwhile."""
    return LOAD_STARTUP_S + weights_gb_per_device / LOAD_GB_PER_S
