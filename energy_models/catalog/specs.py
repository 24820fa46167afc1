"""Spec catalogs of GPUs, CPUs/SoCs and LLMs, written from public spec sheets and model configs.

The YAML files in ``energy_models/data`` are the source of truth; each entry names its source.
Lookups accept the canonical name or any alias, case-insensitively, and suggest the closest
known name when nothing matches.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any, Literal

import numpy as np
import yaml

from energy_models.errors import CatalogError
from energy_models.inputs import FAST_SAFE_LOADER
from energy_models.registry import UnknownNameError


@dataclass(frozen=True)
class DeviceSpec:
    """A GPU or a CPU/SoC package, as one accelerator of a fleet pool."""

    name: str
    kind: Literal["gpu", "cpu"]
    memory_gb: float
    bandwidth_gb_s: float
    fp16_tflops: float
    """Dense FP16/BF16 peak (no sparsity); for CPUs the BF16/FP16 vector or matrix peak."""
    tdp_w: float
    idle_w: float
    architecture: str
    year: int
    source: str
    cores: int | None = None
    """CPU cores (CPUs only)."""
    aliases: tuple[str, ...] = ()


WEIGHT_BYTES = {"fp32": 4.0, "bf16": 2.0, "fp16": 2.0, "fp8": 1.0, "int8": 1.0,
                "mxfp4": 4.25 / 8, "int4": 4.25 / 8}
"""Bytes per weight as served; 4-bit formats carry one 8-bit scale per 32 (MXFP4) or per
group of weights (AWQ/GPTQ int4, group 128 with zero points: about the same)."""
WeightDtype = Literal["fp32", "bf16", "fp16", "fp8", "int8", "mxfp4", "int4"]


@dataclass(frozen=True)
class LlmSpec:
    """An LLM's shape from its config, the precision it is served in, and a quality score with
    the score's source."""

    name: str
    hf_id: str
    params_b: float
    active_params_b: float
    layers: int
    hidden_size: int
    heads: int
    kv_heads: int
    intermediate_size: int
    vocab_size: int
    dtype_bytes: float
    """Bytes per activation and per KV-cache element (2 = BF16/FP16); weights: weight_dtype."""
    max_context: int
    quality: float
    quality_source: str
    source: str
    head_dim: int | None = None
    weight_dtype: WeightDtype = "bf16"
    """Precision the weights are served in (the checkpoint's quantization_config)."""
    served_weight_gb: float | None = None
    """Weight bytes as served, GB, where precision is mixed (gpt-oss: MXFP4 experts beside BF16
    attention); otherwise params_b x WEIGHT_BYTES[weight_dtype]."""
    experts: int = 0
    """Routed experts per MoE layer (0: dense)."""
    experts_per_token: int = 0
    kv_layers: int | None = None
    """Layers that keep a KV cache (hybrid Mamba/attention models: the attention layers);
    None: every layer."""
    sliding_window: int | None = None
    sliding_layers: int = 0
    """How many of the KV layers keep at most ``sliding_window`` tokens (Gemma 3's local
    layers, Llama 4's chunked attention)."""
    kv_values_per_token_layer: int | None = None
    """Cache elements one token adds to one layer where it is not 2 x kv_heads x head_dim
    (multi-head latent attention: kv_lora_rank + qk_rope_head_dim)."""
    state_bytes_per_seq: float = 0.0
    """Recurrent (Mamba) state of one sequence over all layers, bytes; fixed size, read and
    written every decode step."""
    aliases: tuple[str, ...] = ()

    @property
    def head_dim_(self) -> int:
        return self.head_dim or self.hidden_size // self.heads

    @property
    def weight_gb(self) -> float:
        """Weight bytes as served, GB."""
        if self.served_weight_gb is not None:
            return self.served_weight_gb
        return self.params_b * WEIGHT_BYTES[self.weight_dtype]

    @property
    def kv_layers_(self) -> int:
        return self.layers if self.kv_layers is None else self.kv_layers

    @property
    def kv_bytes_per_token_layer(self) -> float:
        values = self.kv_values_per_token_layer or 2 * self.kv_heads * self.head_dim_
        return values * self.dtype_bytes

    @property
    def kv_bytes_per_token(self) -> float:
        """Key and value bytes one token adds to the cache over all KV layers (before any
        sliding window caps a layer)."""
        return self.kv_layers_ * self.kv_bytes_per_token_layer

    def kv_bytes_per_sequence(self, context_tokens):
        """Cache bytes one sequence holds at ``context_tokens`` (a number or an array): full
        layers grow with the context, windowed layers stop at their window, and recurrent
        state is fixed."""
        full_layers = self.kv_layers_ - self.sliding_layers
        windowed = (np.minimum(context_tokens, self.sliding_window)
                    if self.sliding_layers else 0.0)
        return (full_layers * np.asarray(context_tokens, dtype=float)
                + self.sliding_layers * windowed) * self.kv_bytes_per_token_layer \
            + self.state_bytes_per_seq

    def weight_read_gb(self, batch):
        """Weight bytes one decode step of ``batch`` sequences reads, GB: all of a dense
        model; for a MoE model the shared part plus the experts at least one sequence routes
        to (uniform routing: E * (1 - (1 - k/E)^batch) of E experts per layer)."""
        batch = np.maximum(np.asarray(batch, dtype=float), 1.0)
        if self.active_params_b >= self.params_b:
            return np.full_like(batch, self.weight_gb)
        if not self.experts:
            return np.minimum(self.weight_gb, self.weight_gb * self.active_params_b
                              / self.params_b * batch)
        e, k = self.experts, self.experts_per_token
        routed_b = (self.params_b - self.active_params_b) * e / (e - k)
        touched = 1.0 - (1.0 - k / e) ** batch
        read_b = self.params_b - routed_b + routed_b * touched
        return self.weight_gb * read_b / self.params_b


def _build(cls: type, entry: dict[str, Any], where: str, defaults: dict[str, Any]) -> Any:
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(entry) - names)
    if unknown:
        raise CatalogError(f"{where}: unknown field {unknown[0]!r}")
    loader_set = sorted(set(entry) & set(defaults))
    if loader_set:
        raise CatalogError(f"{where}: field {loader_set[0]!r} is set by the loader, not the file")
    required = [
        f.name
        for f in dataclasses.fields(cls)
        if f.default is dataclasses.MISSING and f.name not in defaults
    ]
    missing = [n for n in required if n not in entry]
    if missing:
        raise CatalogError(f"{where}: missing field {missing[0]!r}")
    values = {**defaults, **entry}
    values["aliases"] = tuple(values.get("aliases", ()))
    return cls(**values)


class Catalog:
    """Name-indexed specs with alias and case-insensitive lookup."""

    def __init__(self, kind: str, items: list[Any]):
        self.kind = kind
        self.items = {item.name: item for item in items}
        self._lookup: dict[str, str] = {}
        for item in items:
            for key in (item.name, *item.aliases):
                if key.lower() in self._lookup:
                    raise CatalogError(f"{kind} catalog: name or alias {key!r} appears twice")
                self._lookup[key.lower()] = item.name

    def __contains__(self, name: str) -> bool:
        return name.lower() in self._lookup

    def __iter__(self):
        return iter(self.items.values())

    def __len__(self) -> int:
        return len(self.items)

    def get(self, name: str) -> Any:
        try:
            return self.items[self._lookup[name.lower()]]
        except KeyError:
            raise UnknownNameError(self.kind, name, list(self.items)) from None


def _load_yaml(filename: str) -> Any:
    text = resources.files("energy_models").joinpath("data", filename).read_text()
    return yaml.load(text, Loader=FAST_SAFE_LOADER)


@cache
def devices() -> Catalog:
    """All GPUs and CPUs, in one namespace (a fleet pool names one of them)."""
    items = []
    for kind, filename in (("gpu", "gpus.yaml"), ("cpu", "cpus.yaml")):
        for i, entry in enumerate(_load_yaml(filename)):
            items.append(_build(DeviceSpec, entry, f"{filename} entry {i}", {"kind": kind}))
    return Catalog("device", items)


def _check_llm(spec: LlmSpec, where: str) -> LlmSpec:
    """The cross-field rules of an LLM entry: a known weight format, experts and windows that
    fit the layers."""
    where = f"{where} ({spec.name})"
    if spec.weight_dtype not in WEIGHT_BYTES:
        raise CatalogError(f"{where}: field 'weight_dtype' is {spec.weight_dtype!r}; expected "
                           f"one of {', '.join(WEIGHT_BYTES)}")
    if spec.served_weight_gb is not None and not spec.served_weight_gb > 0:
        raise CatalogError(f"{where}: field 'served_weight_gb' must be positive, got "
                           f"{spec.served_weight_gb!r}")
    if (spec.experts == 0) != (spec.experts_per_token == 0):
        raise CatalogError(f"{where}: fields 'experts' and 'experts_per_token' must both be set "
                           f"(MoE) or both be 0 (dense), got {spec.experts} and "
                           f"{spec.experts_per_token}")
    if not 0 <= spec.experts_per_token <= spec.experts:
        raise CatalogError(f"{where}: field 'experts_per_token' ({spec.experts_per_token}) must "
                           f"be between 0 and experts ({spec.experts})")
    if spec.kv_layers is not None and not 0 <= spec.kv_layers <= spec.layers:
        raise CatalogError(f"{where}: field 'kv_layers' ({spec.kv_layers}) must be between 0 "
                           f"and layers ({spec.layers})")
    if not 0 <= spec.sliding_layers <= spec.kv_layers_:
        raise CatalogError(f"{where}: field 'sliding_layers' ({spec.sliding_layers}) must be "
                           f"between 0 and the KV layers ({spec.kv_layers_})")
    if spec.sliding_layers and not (spec.sliding_window or 0) > 0:
        raise CatalogError(f"{where}: field 'sliding_window' must be a positive token count "
                           f"where sliding_layers is set, got {spec.sliding_window!r}")
    return spec


@cache
def llms() -> Catalog:
    items = [
        _check_llm(_build(LlmSpec, entry, f"llms.yaml entry {i}", {}), f"llms.yaml entry {i}")
        for i, entry in enumerate(_load_yaml("llms.yaml"))
    ]
    return Catalog("LLM", items)


def get_device(name: str) -> DeviceSpec:
    return devices().get(name)


def get_llm(name: str) -> LlmSpec:
    return llms().get(name)


def catalog_rows(kind: Literal["gpus", "cpus", "llms"]) -> list[dict[str, Any]]:
    """One flat record per catalogued GPU, CPU or LLM, with the numbers people compare."""
    if kind == "llms":
        return [{"name": m.name, "params_b": m.params_b, "active_params_b": m.active_params_b,
                 "layers": m.layers, "kv_heads": m.kv_heads, "max_context": m.max_context,
                 "quality": m.quality, "quality_source": m.quality_source,
                 "weight_dtype": m.weight_dtype, "weight_gb": round(m.weight_gb, 2)}
                for m in llms()]
    wanted = "gpu" if kind == "gpus" else "cpu"
    return [{"name": d.name, "memory_gb": d.memory_gb, "bandwidth_gb_s": d.bandwidth_gb_s,
             "fp16_tflops": d.fp16_tflops, "tdp_w": d.tdp_w, "idle_w": d.idle_w,
             "architecture": d.architecture, "year": d.year}
            for d in devices() if d.kind == wanted]
