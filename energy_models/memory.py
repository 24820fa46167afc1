"""Whether an LLM fits a device's memory: weights and KV cache per device at a batch and
tensor-parallel degree, against what a serving engine may fill."""

from __future__ import annotations

from energy_models.catalog.specs import DeviceSpec, LlmSpec

# Share of device memory a serving engine may use (vLLM's gpu_memory_utilization default).
MEMORY_UTILIZATION = 0.9
# Activations, CUDA graphs and framework buffers per device.
RUNTIME_OVERHEAD_GB = 1.5
TP_DEGREES = (1, 2, 4, 8)


def memory_need_gb(llm: LlmSpec, batch: float, context_tokens: float, tp: int) -> float:
    """Weights and KV cache per device, GB (without the runtime overhead)."""
    return (llm.weight_gb + batch * context_tokens * llm.kv_bytes_per_token / 1e9) / tp


def usable_memory_gb(device: DeviceSpec) -> float:
    """What a serving engine may fill with weights and KV cache on one device."""
    return device.memory_gb * MEMORY_UTILIZATION - RUNTIME_OVERHEAD_GB


def memory_fit_problem(llm: LlmSpec, device: DeviceSpec, batch: float, context_tokens: float,
                       tp: int) -> str | None:
    """Why ``llm`` at ``batch`` and ``tp`` does not fit ``device``'s memory, or None."""
    need_gb = memory_need_gb(llm, batch, context_tokens, tp)
    if need_gb <= usable_memory_gb(device):
        return None
    return (f"{llm.name} at batch {batch:g} needs {need_gb:.0f} GB per device at tp {tp}; "
            f"{device.name} offers {usable_memory_gb(device):.0f} GB to a serving engine")
