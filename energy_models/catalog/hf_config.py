"""An :class:`LlmSpec` derived from a Hugging Face ``config.json``.

The shape fields are read the way the model's ``transformers`` class reads them, with that
class's defaults for the fields published configs leave out. The total and per-token active
parameter counts are computed from the shape, layer by layer: embeddings (and an untied output
layer), attention with its biases, the MLP or the experts with their router, and the norms.
Multimodal configs (Gemma 3, Llama 4, Mistral 3) keep only the text tower.

Active parameters are the total less the experts a token does not visit; like the Qwen3 and
Mixtral model cards, they include the input embedding table (OpenAI's gpt-oss card leaves it out).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from energy_models.catalog.specs import LlmSpec
from energy_models.errors import ConfigError
from energy_models.inputs import load_json, message_error

QUALITY_SOURCE = "unknown: not in the catalog (derived from config.json)"
DTYPE_BYTES = {
    "bfloat16": 2,
    "float16": 2,
    # Checkpoints stored as float32 (Gemma 2 -it, for one) are served in 16-bit.
    "float32": 2,
}
MAPPING_SOURCE = "Hugging Face config.json (given as a mapping)"
CONTEXT_KEYS = ("max_position_embeddings", "max_sequence_length", "n_positions", "seq_length")
_MISSING = object()


@dataclass(frozen=True)
class _Shape:
    """What the parameter count needs, in one layout for every family."""

    layers: int
    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    intermediate: int
    """The dense MLP's width (used by the layers that are not MoE)."""
    max_context: int
    tied: bool
    gated: bool = True
    attention_extra: int = 0
    """Per-layer attention parameters beyond the q/k/v/o matrices: biases, q/k norms, sinks."""
    mlp_bias: int = 0
    norms: int = 0
    """Per-layer norm parameters."""
    final_norm: int = 0
    lm_head_bias: int = 0
    moe_layers: int = 0
    experts: int = 0
    top_k: int = 0
    expert_intermediate: int = 0
    expert_bias: int = 0
    router_bias: bool = False
    shared_intermediate: int = 0

    def parameters(self) -> tuple[int, int]:
        """Total and per-token active parameters."""
        h = self.hidden
        attention = h * self.head_dim * (2 * self.heads + 2 * self.kv_heads) + self.attention_extra
        dense_mlp = (3 if self.gated else 2) * h * self.intermediate + self.mlp_bias
        expert = 3 * h * self.expert_intermediate + self.expert_bias
        router = h * self.experts + (self.experts if self.router_bias else 0)
        moe_mlp = self.experts * expert + router + 3 * h * self.shared_intermediate
        blocks = (
            self.layers * (attention + self.norms)
            + (self.layers - self.moe_layers) * dense_mlp
            + self.moe_layers * moe_mlp
        )
        embeddings = self.vocab * h * (1 if self.tied else 2) + self.lm_head_bias + self.final_norm
        total = blocks + embeddings
        idle_experts = self.moe_layers * (self.experts - self.top_k) * expert
        return total, total - idle_experts


class _Reader:
    """One config mapping with the family's defaults; errors name the field and the file."""

    def __init__(self, config: Mapping[str, Any], where: str, defaults: Mapping[str, Any],
                 prefix: str = ""):
        self.config = config
        self.where = where
        self.defaults = defaults
        self.prefix = prefix

    def error(self, message: str) -> ConfigError:
        return ConfigError(f"{self.where}: {message}")

    def get(self, key: str, default: Any = None) -> Any:
        value = self.config.get(key)
        if value is None:
            value = self.defaults.get(key, default)
        return value

    def has(self, key: str) -> bool:
        return self.get(key) is not None

    def count(self, *keys: str, default: Any = _MISSING) -> int:
        """The first of ``keys`` present, a positive integer."""
        for key in keys:
            value = self.get(key)
            if value is not None:
                if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                    raise self.error(f"field '{self.prefix}{key}' must be a positive integer, "
                                     f"got {value!r}")
                return value
        if default is _MISSING:
            raise self.error(f"missing field '{self.prefix}{keys[0]}'")
        return default

    def flag(self, key: str, default: bool) -> bool:
        value = self.get(key, default)
        if not isinstance(value, bool):
            raise self.error(f"field '{self.prefix}{key}' must be true or false, got {value!r}")
        return value

    def layer_indices(self, key: str) -> list[int]:
        value = self.get(key, [])
        if not isinstance(value, list) or not all(
            isinstance(v, int) and not isinstance(v, bool) for v in value
        ):
            raise self.error(f"field '{self.prefix}{key}' must be a list of layer indices, "
                             f"got {value!r}")
        return value


def _attention(r: _Reader) -> dict[str, int]:
    """Layers, widths and heads as every family but Falcon names them."""
    layers = r.count("num_hidden_layers")
    hidden = r.count("hidden_size")
    heads = r.count("num_attention_heads")
    kv_heads = r.count("num_key_value_heads", default=heads)
    if heads % kv_heads:
        raise r.error(f"field '{r.prefix}num_key_value_heads' ({kv_heads}) must divide "
                      f"num_attention_heads ({heads})")
    if not r.has("head_dim") and hidden % heads:
        raise r.error(f"missing field '{r.prefix}head_dim' (hidden_size {hidden} is not a "
                      f"multiple of num_attention_heads {heads})")
    return {"layers": layers, "hidden": hidden, "heads": heads, "kv_heads": kv_heads,
            "head_dim": r.count("head_dim", default=hidden // heads),
            "vocab": r.count("vocab_size"), "max_context": r.count(*CONTEXT_KEYS)}


def _qkvo_bias(a: dict[str, int]) -> int:
    return (a["heads"] + 2 * a["kv_heads"]) * a["head_dim"] + a["hidden"]


def _decoder(r: _Reader, *, norms: int = 2, qk_norm: bool = False,
             tied: bool = False) -> dict[str, Any]:
    """The Llama layout: gated MLP, RMSNorms, optional q/k/v/o biases (``attention_bias``);
    ``tied`` is the family's default for ``tie_word_embeddings``."""
    a = _attention(r)
    extra = _qkvo_bias(a) if r.flag("attention_bias", False) else 0
    if qk_norm:
        extra += 2 * a["head_dim"]
    return {**a, "intermediate": r.count("intermediate_size"), "attention_extra": extra,
            "norms": norms * a["hidden"], "final_norm": a["hidden"],
            "tied": r.flag("tie_word_embeddings", tied)}


def _llama(r: _Reader) -> _Shape:
    d = _decoder(r)
    mlp_bias = 2 * d["intermediate"] + d["hidden"] if r.flag("mlp_bias", False) else 0
    return _Shape(**d, mlp_bias=mlp_bias)


def _plain(r: _Reader) -> _Shape:
    return _Shape(**_decoder(r))


def _qwen2(r: _Reader) -> _Shape:
    d = _decoder(r)
    # Qwen2 always has q/k/v biases and never an o bias.
    d["attention_extra"] = (d["heads"] + 2 * d["kv_heads"]) * d["head_dim"]
    return _Shape(**d)


def _qwen3(r: _Reader) -> _Shape:
    return _Shape(**_decoder(r, qk_norm=True))


def _experts(r: _Reader, experts_key: str, *top_k_keys: str) -> dict[str, int]:
    experts = r.count(experts_key)
    top_k = r.count(*top_k_keys)
    if top_k > experts:
        raise r.error(f"field '{r.prefix}{top_k_keys[0]}' ({top_k}) exceeds "
                      f"{experts_key} ({experts})")
    return {"experts": experts, "top_k": top_k}


def _qwen3_moe(r: _Reader) -> _Shape:
    d = _decoder(r, qk_norm=True)
    step = r.count("decoder_sparse_step", default=1)
    dense = set(r.layer_indices("mlp_only_layers"))
    moe = [i for i in range(d["layers"]) if i not in dense and (i + 1) % step == 0]
    return _Shape(**d, **_experts(r, "num_experts", "num_experts_per_tok"), moe_layers=len(moe),
                  expert_intermediate=r.count("moe_intermediate_size"))


def _mixtral(r: _Reader) -> _Shape:
    d = _decoder(r)
    return _Shape(**d, **_experts(r, "num_local_experts", "num_experts_per_tok"),
                  moe_layers=d["layers"], expert_intermediate=d["intermediate"])


def _gemma(r: _Reader) -> _Shape:
    return _Shape(**_decoder(r, tied=True))


def _gemma2(r: _Reader) -> _Shape:
    # Four RMSNorms a layer: before and after attention, before and after the MLP.
    return _Shape(**_decoder(r, norms=4, tied=True))


def _gemma3(r: _Reader) -> _Shape:
    return _Shape(**_decoder(r, norms=4, qk_norm=True, tied=True))


def _gpt_oss(r: _Reader) -> _Shape:
    d = _decoder(r)
    d["attention_extra"] += d["heads"]  # one attention-sink logit per head
    i, h = d["intermediate"], d["hidden"]
    return _Shape(**d, **_experts(r, "num_local_experts", "experts_per_token",
                                  "num_experts_per_tok"),
                  moe_layers=d["layers"], expert_intermediate=i, expert_bias=2 * i + h,
                  router_bias=True)


def _llama4(r: _Reader) -> _Shape:
    d = _decoder(r)  # its q/k norm is an L2 norm without weights
    layers = d["layers"]
    step = r.count("interleave_moe_layer_step", default=1)
    moe = r.layer_indices("moe_layers") or list(range(step - 1, layers, step))
    expert = d["intermediate"]
    # Dense layers use the wider intermediate_size_mlp; MoE layers add one shared expert.
    d["intermediate"] = r.count("intermediate_size_mlp")
    return _Shape(**d, **_experts(r, "num_local_experts", "num_experts_per_tok"),
                  moe_layers=len(moe), expert_intermediate=expert, shared_intermediate=expert)


def _phi(r: _Reader) -> _Shape:
    """phi-1, phi-1.5, phi-2: biases everywhere, a plain 2-matrix MLP, one LayerNorm a layer."""
    a = _attention(r)
    h, i = a["hidden"], r.count("intermediate_size")
    extra = _qkvo_bias(a) + (4 * a["head_dim"] if r.flag("qk_layernorm", False) else 0)
    return _Shape(**a, intermediate=i, tied=r.flag("tie_word_embeddings", False), gated=False,
                  attention_extra=extra, mlp_bias=i + h, norms=2 * h, final_norm=2 * h,
                  lm_head_bias=a["vocab"])


def _falcon(r: _Reader) -> _Shape:
    """Falcon and its RefinedWeb predecessors: fused QKV, 2-matrix MLP, LayerNorms."""
    layers = r.count("num_hidden_layers", "n_layer")
    hidden = r.count("hidden_size", "n_embed")
    heads = r.count("num_attention_heads", "n_head")
    if hidden % heads:
        raise r.error(f"field '{r.prefix}hidden_size' ({hidden}) must be a multiple of "
                      f"num_attention_heads ({heads})")
    new_arch = r.flag("new_decoder_architecture", r.config.get("model_type") == "RefinedWeb")
    if new_arch:
        kv_heads = r.count("num_kv_heads", "n_head_kv", default=heads)
    else:
        kv_heads = 1 if r.flag("multi_query", True) else heads
    if heads % kv_heads:
        raise r.error(f"field '{r.prefix}num_kv_heads' ({kv_heads}) must divide "
                      f"num_attention_heads ({heads})")
    ffn = r.count("ffn_hidden_size", default=4 * hidden)
    bias = r.flag("bias", False)
    if not r.flag("parallel_attn", True):
        layer_norms = 2
    else:
        layer_norms = r.count("num_ln_in_parallel_attn", default=2 if new_arch else 1)
    head_dim = hidden // heads
    return _Shape(layers=layers, hidden=hidden, heads=heads, kv_heads=kv_heads,
                  head_dim=head_dim, vocab=r.count("vocab_size"), intermediate=ffn,
                  max_context=r.count(*CONTEXT_KEYS), tied=r.flag("tie_word_embeddings", True),
                  gated=False,
                  attention_extra=(heads + 2 * kv_heads) * head_dim + hidden if bias else 0,
                  mlp_bias=ffn + hidden if bias else 0, norms=2 * hidden * layer_norms,
                  final_norm=2 * hidden)


@dataclass(frozen=True)
class _Family:
    parse: Callable[[_Reader], _Shape]
    defaults: Mapping[str, Any]
    """``transformers``' defaults for the fields published configs leave out."""
    nested: bool = False
    """The text tower's fields sit under ``text_config``."""


_GEMMA3_TEXT = {"vocab_size": 262208, "num_attention_heads": 8, "num_key_value_heads": 4,
                "head_dim": 256, "max_position_embeddings": 131072}
_LLAMA4_TEXT = {"vocab_size": 202048, "head_dim": 128, "intermediate_size_mlp": 16384,
                "num_local_experts": 16, "num_experts_per_tok": 1,
                "max_position_embeddings": 131072}
_FALCON = {"vocab_size": 65024, "max_position_embeddings": 2048}
FAMILIES: dict[str, _Family] = {
    "falcon": _Family(_falcon, _FALCON),
    "RefinedWeb": _Family(_falcon, _FALCON),
    "RefinedWebModel": _Family(_falcon, _FALCON),
    "gemma": _Family(_gemma, {"head_dim": 256}),
    "gemma2": _Family(_gemma2, {"head_dim": 256}),
    "gemma3": _Family(_gemma3, _GEMMA3_TEXT, nested=True),
    "gemma3_text": _Family(_gemma3, _GEMMA3_TEXT),
    "gpt_oss": _Family(_gpt_oss, {"head_dim": 64, "attention_bias": True}),
    "llama": _Family(_llama, {}),
    "llama4": _Family(_llama4, _LLAMA4_TEXT, nested=True),
    "llama4_text": _Family(_llama4, _LLAMA4_TEXT),
    "mistral": _Family(_plain, {}),
    "mistral3": _Family(_plain, {}, nested=True),
    "mixtral": _Family(_mixtral, {}),
    "phi": _Family(_phi, {}),
    "phi3": _Family(_plain, {}),
    "qwen2": _Family(_qwen2, {}),
    "qwen3": _Family(_qwen3, {"head_dim": 128}),
    "qwen3_moe": _Family(_qwen3_moe, {"head_dim": 128}),
}


def _read(config: str | Path) -> tuple[Any, Path, str]:
    path = Path(config)
    if path.is_dir():
        path = path / "config.json"
    where = str(path)
    return load_json(path, message_error(ConfigError, where)), path, where


def _default_name(name_or_path: str | None, path: Path | None) -> str | None:
    if name_or_path:
        return name_or_path.rstrip("/").rsplit("/", 1)[-1]
    if path is None:
        return None
    folder = path.resolve().parent
    # The Hugging Face cache keeps a config at models--ORG--NAME/snapshots/REVISION/config.json.
    if folder.parent.name == "snapshots" and folder.parent.parent.name.startswith("models--"):
        return folder.parent.parent.name.rsplit("--", 1)[-1]
    return folder.name or None


def llm_from_config(config: str | Path | Mapping[str, Any], name: str | None = None) -> LlmSpec:
    """The :class:`LlmSpec` of the model a Hugging Face ``config.json`` describes.

    ``config`` is the file's path (or its folder's), or the parsed mapping. ``name`` defaults to
    the last part of the config's ``_name_or_path``, else the file's folder, lower-cased. The
    quality is unknown (NaN): it comes from evaluations, not from the config.
    """
    path: Path | None = None
    where = "config.json"
    if isinstance(config, Mapping):
        data: Any = config
    else:
        data, path, where = _read(config)
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where}: expected a JSON object, got {type(data).__name__}")
    model_type = data.get("model_type")
    if model_type is None:
        raise ConfigError(f"{where}: missing field 'model_type'")
    if not isinstance(model_type, str) or model_type not in FAMILIES:
        raise ConfigError(f"{where}: unsupported model_type {model_type!r}; supported: "
                          f"{', '.join(sorted(FAMILIES, key=str.lower))}")
    family = FAMILIES[model_type]
    reader = _Reader(data, where, family.defaults)
    if family.nested:
        text = data.get("text_config")
        if not isinstance(text, Mapping):
            raise ConfigError(f"{where}: missing field 'text_config' (the text tower of a "
                              f"{model_type} model)")
        # The text tower's fields win; a few (tie_word_embeddings, dtype) may sit at the top.
        merged = {**data, **{k: v for k, v in text.items() if v is not None}}
        reader = _Reader(merged, where, family.defaults, prefix="text_config.")
    shape = family.parse(reader)
    total, active = shape.parameters()

    dtype_key = "torch_dtype" if reader.has("torch_dtype") else "dtype"
    dtype = reader.get(dtype_key, "bfloat16")
    if not isinstance(dtype, str) or dtype not in DTYPE_BYTES:
        raise ConfigError(f"{where}: field '{dtype_key}' is {dtype!r}; expected one of "
                          f"{', '.join(DTYPE_BYTES)}")
    name_or_path = data.get("_name_or_path")
    if not (isinstance(name_or_path, str) and name_or_path.strip("/")):
        name_or_path = None
    name = name or _default_name(name_or_path, path)
    if not name:
        raise ConfigError(f"{where}: no model name: the config has no '_name_or_path'; "
                          f"pass name=")
    expert = shape.expert_intermediate if shape.moe_layers else shape.intermediate
    h_over_heads = shape.hidden // shape.heads
    return LlmSpec(
        name=name.lower(),
        hf_id=name_or_path or name,
        params_b=round(total / 1e9, 3),
        active_params_b=round(active / 1e9, 3),
        layers=shape.layers,
        hidden_size=shape.hidden,
        heads=shape.heads,
        kv_heads=shape.kv_heads,
        intermediate_size=expert,
        vocab_size=shape.vocab,
        dtype_bytes=DTYPE_BYTES[dtype],
        max_context=shape.max_context,
        quality=float("nan"),
        quality_source=QUALITY_SOURCE,
        source=f"Hugging Face config.json at {path}" if path else MAPPING_SOURCE,
        head_dim=shape.head_dim if shape.head_dim != h_over_heads else None,
    )
