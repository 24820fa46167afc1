"""Analytical (roofline) cost of LLM inference from GPU specs and LLM shapes.

Time comes from FLOPs and bytes moved (weights at the precision they are served in; a MoE
step reads the experts its batch routes to; the cache at its real size per sequence: sliding
windows, latent attention and recurrent state included); power lies between idle and TDP
according to how compute-bound the work is. A few efficiency constants per serving-stack
family are fitted to the ML.ENERGY leaderboard (see ``energy_models.analytical.fit``) and
shipped in ``energy_models/data/analytical_params.json``.

Per decode step of a replica running ``batch`` sequences on ``tp`` devices::

    t_mem  = (weight bytes read + batch * cache bytes per sequence) / (tp * bandwidth * bw_eff)
    t_comp = (2 * active + 4 * KV layers * hidden * context) * batch / (tp * flops * mfu_decode)
    t_gpu  = max(t_mem, t_comp) + seq_overhead_s * batch    # sampling, bookkeeping on the GPU
    t_step = (t_gpu + step_overhead_s) * (1 + tp_overhead * log2(tp))   # host time per step

Prefill of ``m`` tokens takes ``(2 * active params * m + 2 * layers * hidden * m^2) /
(tp * flops * mfu_prefill)`` plus one read of the weights. A request occupies its replica for
``t_prefill + n * t_step / batch`` seconds (continuous batching shares each step), and in a
full replica every step also waits for the prefills of the requests that replace finished
ones: a request's inter-token latency is ``t_step + (batch - 1) * t_prefill / n`` and the
replica's time per output token is ``batch * replica_s / n`` (ML.ENERGY's TPOT).
The device draws idle power plus a share of its dynamic range while the GPU works, and idle
power while the host works.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from functools import cache
from importlib import resources

import numpy as np
import pandas as pd

from energy_models.catalog.specs import LlmSpec, get_device, get_llm
from energy_models.errors import CalibrationError

GB = 1e9
TFLOP = 1e12


@dataclass(frozen=True)
class EngineConstants:
    """Efficiency constants of one serving stack; all dimensionless except ``step_overhead_s``."""

    bw_eff: float
    """Fraction of peak memory bandwidth a decode step achieves."""
    mfu_prefill: float
    """Fraction of peak FLOP/s prefill achieves."""
    mfu_decode: float
    """Fraction of peak FLOP/s the compute-bound part of decoding achieves."""
    step_overhead_s: float
    """Fixed host time per decode step (scheduling, kernel launches); the GPU idles meanwhile."""
    seq_overhead_s: float
    """GPU time per sequence per decode step beyond the roofline (sampling, paged attention)."""
    tp_overhead: float
    """Extra time per doubling of the tensor-parallel degree (all-reduce traffic)."""
    power_mem: float
    """Fraction of the idle-to-TDP range drawn when memory-bound."""
    power_comp: float
    """Fraction of the idle-to-TDP range drawn when compute-bound."""

    @classmethod
    def names(cls) -> list[str]:
        return list(cls.__dataclass_fields__)


@cache
def shipped_constants() -> dict[str, EngineConstants]:
    """Fitted constants per engine, as shipped with the package."""
    text = resources.files("energy_models").joinpath("data", "analytical_params.json").read_text()
    raw = json.loads(text)
    return {engine: EngineConstants(**raw["engines"][engine]) for engine in raw["engines"]}


WORK_COLUMNS = ("llm", "device", "input_tokens", "output_tokens", "batch", "tp")


def step_bytes(work: pd.DataFrame, llm_specs: Mapping[str, LlmSpec]) -> tuple[np.ndarray,
                                                                              np.ndarray]:
    """Per row, the weight bytes one decode step reads at the row's batch and the cache bytes
    one sequence holds at its mean context (prompt + half the output). ``llm_specs`` maps
    every LLM name in ``work`` to its spec."""
    batch = work["batch"].to_numpy(float)
    context = work["input_tokens"].to_numpy(float) + work["output_tokens"].to_numpy(float) / 2.0
    weight_read = np.empty(len(work))
    cache_bytes = np.empty(len(work))
    names = work["llm"].to_numpy()
    for name in np.unique(names):
        at = names == name
        weight_read[at] = llm_specs[name].weight_read_gb(batch[at]) * GB
        cache_bytes[at] = llm_specs[name].kv_bytes_per_sequence(context[at])
    return weight_read, cache_bytes


def _spec_arrays(work: pd.DataFrame, extra_llms: Mapping[str, LlmSpec]) -> dict[str, np.ndarray]:
    """Per-row LLM and device numbers, looked up once per distinct name; the weight and cache
    bytes a decode step reads depend on the row's batch and context as well."""
    llm_rows = {name: extra_llms.get(name) or get_llm(name) for name in work["llm"].unique()}
    dev_rows = {name: get_device(name) for name in work["device"].unique()}
    llm = work["llm"].map
    dev = work["device"].map
    weight_read, cache_bytes = step_bytes(work, llm_rows)
    return {
        "params": llm({k: v.params_b * GB for k, v in llm_rows.items()}).to_numpy(float),
        "active": llm({k: v.active_params_b * GB for k, v in llm_rows.items()}).to_numpy(float),
        "weight_bytes": llm({k: v.weight_gb * GB for k, v in llm_rows.items()}).to_numpy(float),
        "weight_read_bytes": weight_read,
        "cache_bytes_per_seq": cache_bytes,
        "layers": llm({k: v.kv_layers_ for k, v in llm_rows.items()}).to_numpy(float),
        "hidden": llm({k: v.hidden_size for k, v in llm_rows.items()}).to_numpy(float),
        "bandwidth": dev({k: v.bandwidth_gb_s * GB for k, v in dev_rows.items()}).to_numpy(float),
        "flops": dev({k: v.fp16_tflops * TFLOP for k, v in dev_rows.items()}).to_numpy(float),
        "tdp_w": dev({k: v.tdp_w for k, v in dev_rows.items()}).to_numpy(float),
        "idle_w": dev({k: v.idle_w for k, v in dev_rows.items()}).to_numpy(float),
    }


def decode_step_costs(s: Mapping[str, np.ndarray], batch, context, tp, c: EngineConstants,
                      cap_w) -> tuple[np.ndarray, np.ndarray]:
    """One decode step of ``batch`` sequences at mean ``context`` tokens: its time (s) and each
    device's power (W). ``s`` holds the spec arrays of ``_spec_arrays`` (weight and cache
    bytes at this batch and context); a device capped at ``cap_w`` runs slower at the cap."""
    t_mem = (s["weight_read_bytes"] + batch * s["cache_bytes_per_seq"]) / (
        tp * s["bandwidth"] * c.bw_eff)
    step_flops = (2.0 * s["active"] + 4.0 * s["layers"] * s["hidden"] * context) * batch
    t_comp = step_flops / (tp * s["flops"] * c.mfu_decode)
    tp_factor = 1.0 + c.tp_overhead * np.log2(tp)
    # Per-sequence work (sampling, paged-attention bookkeeping) keeps the GPU busy; the fixed
    # per-step host time leaves it idle.
    t_gpu = np.maximum(t_mem, t_comp) + c.seq_overhead_s * batch
    t_step = (t_gpu + c.step_overhead_s) * tp_factor
    compute_share = t_comp / np.maximum(t_mem, t_comp)
    gpu_busy_share = t_gpu * tp_factor / t_step
    decode_w = s["idle_w"] + (s["tdp_w"] - s["idle_w"]) * gpu_busy_share * (
        c.power_mem + (c.power_comp - c.power_mem) * compute_share)
    # A capped device slows its clocks: same work at lower power, time stretched to match.
    stretch = np.maximum(1.0, decode_w / cap_w)
    return t_step * stretch, decode_w / stretch


def prefill_costs(s: Mapping[str, np.ndarray], tokens, tp, c: EngineConstants,
                  cap_w) -> tuple[np.ndarray, np.ndarray]:
    """The prefill of ``tokens`` prompt tokens from the start: its time (s, one read of the
    weights included) and each device's power (W)."""
    tp_factor = 1.0 + c.tp_overhead * np.log2(tp)
    prefill_flops = 2.0 * s["active"] * tokens + 2.0 * s["layers"] * s["hidden"] * tokens**2
    t_prefill = (
        prefill_flops / (tp * s["flops"] * c.mfu_prefill)
        + s["weight_bytes"] / (tp * s["bandwidth"] * c.bw_eff)
    ) * tp_factor
    prefill_w = s["idle_w"] + (s["tdp_w"] - s["idle_w"]) * c.power_comp
    stretch = np.maximum(1.0, prefill_w / cap_w)
    return t_prefill * stretch, prefill_w / stretch


def analytical_costs(work: pd.DataFrame, constants: EngineConstants,
                     extra_llms: Mapping[str, LlmSpec] | None = None,
                     itl_is_step: bool = False) -> pd.DataFrame:
    """Cost of each row of ``work`` (columns WORK_COLUMNS, optional ``power_cap_w`` per device).

    ``extra_llms`` names LLMs that are not in the catalog (e.g. read from a config.json).

    Returns per request: ``energy_j`` (gross, whole replica, the request's share),
    ``runtime_s`` (its own wall time), ``replica_s`` (replica time it occupies), ``power_w``
    (replica mean power while busy), ``idle_power_w`` (replica), ``peak_power_w`` (replica),
    ``ttft_s``, ``itl_s`` (mean inter-token gap, other requests' prefill stalls included; one
    decode step where ``itl_is_step``: a stack that chunks prefills into the steps streams
    its typical token one step after the last).
    """
    missing = [c for c in WORK_COLUMNS if c not in work.columns]
    if missing:
        raise CalibrationError(f"work table lacks column {missing[0]!r}")
    s = _spec_arrays(work, extra_llms or {})
    m = work["input_tokens"].to_numpy(float)
    n = work["output_tokens"].to_numpy(float)
    batch = work["batch"].to_numpy(float)
    tp = work["tp"].to_numpy(float)
    c = constants

    context = m + n / 2.0
    cap = np.full(len(work), np.inf)
    if "power_cap_w" in work.columns:
        cap = np.nan_to_num(work["power_cap_w"].to_numpy(float), nan=np.inf)
    t_step, decode_w = decode_step_costs(s, batch, context, tp, c, cap)
    t_prefill, prefill_w = prefill_costs(s, m, tp, c, cap)

    decode_share_s = n * t_step / batch
    replica_s = t_prefill + decode_share_s
    device_w = (prefill_w * t_prefill + decode_w * decode_share_s) / replica_s
    # Other sequences' prefills stall this one: (batch - 1) admissions every n steps.
    mean_gap_s = t_step + (batch - 1.0) * t_prefill / n
    return pd.DataFrame(
        {
            "energy_j": device_w * tp * replica_s,
            "runtime_s": t_prefill + t_step + n * mean_gap_s,
            "replica_s": replica_s,
            "power_w": device_w * tp,
            "idle_power_w": s["idle_w"] * tp,
            "peak_power_w": np.maximum(prefill_w, decode_w) * tp,
            "ttft_s": t_prefill + t_step,
            "itl_s": t_step if itl_is_step else mean_gap_s,
        },
        index=work.index,
    )


def constants_to_json(constants: dict[str, EngineConstants], provenance: dict) -> str:
    """The shipped-parameters file: constants per engine and how they were fitted."""
    body = {"engines": {k: asdict(v) for k, v in sorted(constants.items())}, **provenance}
    return json.dumps(body, indent=2, sort_keys=True) + "\n"
