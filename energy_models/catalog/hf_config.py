"""An :class:`LlmSpec` derived from a Hugging Face ``config.json``.

The shape fields are read the way the model's ``transformers`` class reads them, with that
class's defaults for the fields published configs leave out. The total and per-token active
parameter counts are computed from the shape, layer by layer: embeddings (and an untied output
layer), attention with its biases, the MLP or the experts with their router, and the norms.
Multimodal configs (Gemma 3, Llama 4, Mistral 3) keep only the text tower.

Active parameters are the total less the experts a token does not visit; like the Qwen3 and
Mixtral model cards, they include the input embedding table (OpenAI's gpt-oss card leaves it out).

Weights are sized as served: a ``quantization_config`` names the format of the quantized layers,
and the layers it leaves out (``modules_to_not_convert`` / ``ignore``), like the embeddings, the
output layer, norms and routers, stay BF16. The KV cache is sized per layer: sliding-window and
chunked-attention layers, latent attention (DeepSeek's MLA) and the fixed Mamba state of hybrid
models (Nemotron-H) are read from the config.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from energy_models.catalog.specs import WEIGHT_BYTES, LlmSpec
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
# vLLM keeps Nemotron-H's SSM state in float32 unless the config says otherwise
# (NemotronHForCausalLMConfig, "only float32 is known to have no accuracy issues").
STATE_DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
QUANT_METHODS = ("awq", "compressed-tensors", "fbgemm_fp8", "fp8", "gptq", "mxfp4")
WINDOWED_LAYER_TYPES = ("sliding_attention", "chunked_attention")
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
    attention_params: int | None = None
    """Per-layer attention parameters where they are not GQA's q/k/v/o (latent attention)."""
    attention_layers: int | None = None
    """Layers with attention (hybrid models); None: every layer."""
    dense_layers: int | None = None
    """Layers with a dense MLP; None: every layer that is not MoE."""
    mamba_layers: int = 0
    mamba_params: int = 0
    """Parameters of one Mamba layer's mixer."""
    mamba_matrices: int = 0
    """Of those, the in and out projections (what a quantization converts)."""
    kv_values: int | None = None
    """Cache elements per token and layer where not 2 x kv_heads x head_dim (MLA)."""
    sliding_window: int | None = None
    sliding_layers: int = 0
    conv_state: int = 0
    """Mamba convolution state of one sequence over all layers, elements (activation dtype)."""
    ssm_state: int = 0
    """Mamba SSM state of one sequence over all layers, elements."""

    @property
    def attention(self) -> int:
        if self.attention_params is not None:
            return self.attention_params
        return (self.hidden * self.head_dim * (2 * self.heads + 2 * self.kv_heads)
                + self.attention_extra)

    @property
    def attention_layers_(self) -> int:
        return self.layers if self.attention_layers is None else self.attention_layers

    @property
    def dense_layers_(self) -> int:
        return self.layers - self.moe_layers if self.dense_layers is None else self.dense_layers

    def parts(self) -> dict[str, int]:
        """Parameters a quantization may convert, by part: the matrices of attention, the MLPs
        (dense and routed experts), the shared experts and the Mamba projections."""
        h = self.hidden
        return {
            "attention": self.attention_layers_ * self.attention,
            "mlp": self.dense_layers_ * (3 if self.gated else 2) * h * self.intermediate,
            "experts": self.moe_layers * self.experts * 3 * h * self.expert_intermediate,
            "shared": self.moe_layers * 3 * h * self.shared_intermediate,
            "mamba": self.mamba_layers * self.mamba_matrices,
        }

    def parameters(self) -> tuple[int, int]:
        """Total and per-token active parameters."""
        h = self.hidden
        dense_mlp = (3 if self.gated else 2) * h * self.intermediate + self.mlp_bias
        expert = 3 * h * self.expert_intermediate + self.expert_bias
        router = h * self.experts + (self.experts if self.router_bias else 0)
        moe_mlp = self.experts * expert + router + 3 * h * self.shared_intermediate
        blocks = (
            self.attention_layers_ * self.attention
            + self.layers * self.norms
            + self.dense_layers_ * dense_mlp
            + self.moe_layers * moe_mlp
            + self.mamba_layers * self.mamba_params
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


def _windowed(r: _Reader, layers: int, window_default: int | None,
              sliding: Callable[[int], bool]) -> dict[str, int]:
    """The sliding-window (or chunked-attention) layers and their window: the config's
    ``layer_types`` where it lists them, else the family's fixed pattern."""
    kinds = r.get("layer_types")
    if kinds is not None:
        if (not isinstance(kinds, list) or len(kinds) != layers
                or not all(isinstance(k, str) for k in kinds)):
            raise r.error(f"field '{r.prefix}layer_types' must name one type for each of the "
                          f"{layers} layers, got {kinds!r}")
        count = sum(kind in WINDOWED_LAYER_TYPES for kind in kinds)
    else:
        count = sum(sliding(i) for i in range(layers))
    if not count:
        return {}
    return {"sliding_window": r.count("sliding_window", default=window_default),
            "sliding_layers": count}


def _every_layer_window(r: _Reader, layers: int) -> dict[str, int]:
    """Mistral and Mixtral: ``sliding_window``, where set, caps every layer."""
    if not r.has("sliding_window"):
        return {}
    return {"sliding_window": r.count("sliding_window"), "sliding_layers": layers}


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


def _mistral(r: _Reader) -> _Shape:
    d = _decoder(r)
    return _Shape(**d, **_every_layer_window(r, d["layers"]))


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
                  moe_layers=d["layers"], expert_intermediate=d["intermediate"],
                  **_every_layer_window(r, d["layers"]))


def _gemma(r: _Reader) -> _Shape:
    return _Shape(**_decoder(r, tied=True))


def _gemma2(r: _Reader) -> _Shape:
    # Four RMSNorms a layer: before and after attention, before and after the MLP.
    d = _decoder(r, norms=4, tied=True)
    # Even layers (0, 2, ...) attend within the window, odd ones globally.
    return _Shape(**d, **_windowed(r, d["layers"], 4096, lambda i: i % 2 == 0))


def _gemma3(r: _Reader) -> _Shape:
    d = _decoder(r, norms=4, qk_norm=True, tied=True)
    # Every sliding_window_pattern-th layer is global, the others local.
    pattern = r.count("sliding_window_pattern", default=6)
    return _Shape(**d, **_windowed(r, d["layers"], 4096, lambda i: (i + 1) % pattern != 0))


def _gpt_oss(r: _Reader) -> _Shape:
    d = _decoder(r)
    d["attention_extra"] += d["heads"]  # one attention-sink logit per head
    i, h = d["intermediate"], d["hidden"]
    return _Shape(**d, **_experts(r, "num_local_experts", "experts_per_token",
                                  "num_experts_per_tok"),
                  moe_layers=d["layers"], expert_intermediate=i, expert_bias=2 * i + h,
                  router_bias=True,
                  **_windowed(r, d["layers"], 128, lambda layer: layer % 2 == 0))


def _llama4(r: _Reader) -> _Shape:
    d = _decoder(r)  # its q/k norm is an L2 norm without weights
    layers = d["layers"]
    step = r.count("interleave_moe_layer_step", default=1)
    moe = r.layer_indices("moe_layers") or list(range(step - 1, layers, step))
    expert = d["intermediate"]
    # Dense layers use the wider intermediate_size_mlp; MoE layers add one shared expert.
    d["intermediate"] = r.count("intermediate_size_mlp")
    return _Shape(**d, **_experts(r, "num_local_experts", "num_experts_per_tok"),
                  moe_layers=len(moe), expert_intermediate=expert, shared_intermediate=expert,
                  **_llama4_chunks(r, layers))


def _llama4_chunks(r: _Reader, layers: int) -> dict[str, int]:
    """Llama 4's RoPE layers attend within chunks of attention_chunk_size tokens; the NoPE
    layers (no_rope_layers 0: every no_rope_layer_interval-th) attend globally."""
    if not r.has("attention_chunk_size"):
        return {}
    if r.has("layer_types"):
        windowed = _windowed(r, layers, None, lambda i: False)
        return windowed and {**windowed, "sliding_window": r.count("attention_chunk_size")}
    rope = r.layer_indices("no_rope_layers")
    if not rope:
        interval = r.count("no_rope_layer_interval", default=4)
        rope = [int((i + 1) % interval != 0) for i in range(layers)]
    if len(rope) != layers:
        raise r.error(f"field '{r.prefix}no_rope_layers' must hold one flag for each of the "
                      f"{layers} layers, got {len(rope)}")
    return {"sliding_window": r.count("attention_chunk_size"), "sliding_layers": sum(rope)}


def _deepseek_v3(r: _Reader) -> _Shape:
    """DeepSeek V3 / R1: multi-head latent attention (a low-rank query, one shared latent
    key-value vector of kv_lora_rank plus a RoPE key per token and layer) and, after the first
    first_k_dense_replace dense layers, MoE layers with shared experts."""
    layers = r.count("num_hidden_layers")
    h = r.count("hidden_size")
    heads = r.count("num_attention_heads")
    nope, rope = r.count("qk_nope_head_dim"), r.count("qk_rope_head_dim")
    v_dim, kv_rank = r.count("v_head_dim"), r.count("kv_lora_rank")
    q_rank = r.get("q_lora_rank")
    q_head = heads * (nope + rope)
    if q_rank is None:
        query = h * q_head
    else:
        q_rank = r.count("q_lora_rank")
        query = h * q_rank + q_rank + q_rank * q_head  # down, norm, up
    key_value = h * (kv_rank + rope) + kv_rank + kv_rank * heads * (nope + v_dim)
    attention = query + key_value + heads * v_dim * h
    if r.flag("attention_bias", False):
        raise r.error(f"field '{r.prefix}attention_bias' true is not supported for deepseek_v3")
    dense = r.count("first_k_dense_replace", default=0)
    if dense > layers:
        raise r.error(f"field '{r.prefix}first_k_dense_replace' ({dense}) exceeds "
                      f"num_hidden_layers ({layers})")
    step = r.count("moe_layer_freq", default=1)
    moe = [i for i in range(dense, layers) if i % step == 0]
    expert = r.count("moe_intermediate_size")
    return _Shape(
        layers=layers, hidden=h, heads=heads,
        kv_heads=r.count("num_key_value_heads", default=heads), head_dim=nope + rope,
        vocab=r.count("vocab_size"), intermediate=r.count("intermediate_size"),
        max_context=r.count(*CONTEXT_KEYS), tied=r.flag("tie_word_embeddings", False),
        norms=2 * h, final_norm=h, attention_params=attention,
        **_experts(r, "n_routed_experts", "num_experts_per_tok"), moe_layers=len(moe),
        expert_intermediate=expert,
        shared_intermediate=r.count("n_shared_experts", default=0) * expert,
        # noaux_tc routing adds a per-expert score-correction bias.
        router_bias=r.get("topk_method") == "noaux_tc",
        kv_values=kv_rank + rope)


def _nemotron_h(r: _Reader) -> _Shape:
    """Nemotron-H (Nemotron Nano 2): each layer is one block, a Mamba-2 mixer (M), attention (*)
    or a squared-ReLU MLP (-), as ``hybrid_override_pattern`` lists them; no position
    embeddings."""
    a = _attention(r)
    layers, h = a["layers"], a["hidden"]
    pattern = r.get("hybrid_override_pattern")
    if not isinstance(pattern, str) or len(pattern) != layers or set(pattern) - set("M*-"):
        raise r.error(f"field '{r.prefix}hybrid_override_pattern' must hold one of M, * or - "
                      f"for each of the {layers} layers (MoE blocks 'E' are not supported), "
                      f"got {pattern!r}")
    heads, head_dim = r.count("mamba_num_heads"), r.count("mamba_head_dim")
    groups, state = r.count("n_groups", "mamba_n_groups"), r.count("ssm_state_size")
    kernel = r.count("conv_kernel", "mamba_d_conv")
    inner = heads * head_dim
    conv_dim = inner + 2 * groups * state
    proj_bias = r.flag("use_bias", False)
    # in_proj makes x, the gate z, B, C and dt; out_proj maps back to the hidden size.
    matrices = h * (inner + conv_dim + heads) + inner * h
    mamba = (matrices + ((inner + conv_dim + heads) + h if proj_bias else 0)
             + conv_dim * kernel + (conv_dim if r.flag("use_conv_bias", True) else 0)
             + 3 * heads + inner)  # A_log, D, dt_bias; the gated norm
    intermediate = r.count("intermediate_size")
    mamba_layers = pattern.count("M")
    return _Shape(
        **a, intermediate=intermediate, tied=r.flag("tie_word_embeddings", False), gated=False,
        attention_extra=_qkvo_bias(a) if r.flag("attention_bias", False) else 0,
        mlp_bias=intermediate + h if r.flag("mlp_bias", False) else 0, norms=h, final_norm=h,
        attention_layers=pattern.count("*"), dense_layers=pattern.count("-"),
        mamba_layers=mamba_layers, mamba_params=mamba, mamba_matrices=matrices,
        conv_state=mamba_layers * (kernel - 1) * conv_dim,
        ssm_state=mamba_layers * heads * head_dim * state)


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
                "max_position_embeddings": 131072, "attention_chunk_size": 8192}
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
    "deepseek_v3": _Family(_deepseek_v3, {}),
    "mistral": _Family(_mistral, {}),
    "mistral3": _Family(_mistral, {}, nested=True),
    "nemotron_h": _Family(_nemotron_h, {}),
    "mixtral": _Family(_mixtral, {}),
    "phi": _Family(_phi, {}),
    "phi3": _Family(_plain, {}),
    "qwen2": _Family(_qwen2, {}),
    "qwen3": _Family(_qwen3, {"head_dim": 128}),
    "qwen3_moe": _Family(_qwen3_moe, {"head_dim": 128}),
}


@dataclass(frozen=True)
class _Quantization:
    """What a ``quantization_config`` says: the format of the converted parts, and which
    parts stay BF16 (all of them, or those of some layers)."""

    weight_dtype: str
    parts: tuple[str, ...] = ("attention", "mlp", "experts", "shared", "mamba")
    kept: Mapping[str, Any] = field(default_factory=dict)
    """Part name -> True (kept in every layer) or the set of layer indices where it is kept."""
    kept_layers: frozenset[int] = frozenset()

    def weight_gb(self, shape: _Shape, total: int) -> float:
        """Converted parts at the format's bytes, everything else (embeddings, output layer,
        norms, routers, biases, unconverted parts) at two bytes; a layer-indexed exclusion
        takes its share of the part (layers are assumed alike)."""
        converted = 0.0
        for part, params in shape.parts().items():
            kept = self.kept.get(part, frozenset())
            if part not in self.parts or kept is True:
                continue
            layers = {i for i in kept | self.kept_layers if 0 <= i < shape.layers}
            converted += params * (1 - len(layers) / shape.layers)
        return (converted * WEIGHT_BYTES[self.weight_dtype] + (total - converted) * 2) / 1e9


# Substrings naming a part in a module path; routers, norms, embeddings and the output layer
# are never converted, so excluding them changes nothing.
_PART_NAMES = (("attention", ("self_attn", "attention")), ("shared", ("shared_expert",)),
               ("mamba", ("mixer",)), ("experts", ("experts",)), ("mlp", ("mlp", "feed_forward")))
_NEVER_CONVERTED = ("router", "embed", "lm_head", "norm", "vision", "visual", "multi_modal")


def _excluded(entries: Any, key: str, r: _Reader) -> dict[str, Any]:
    """The parts ``modules_to_not_convert`` (or compressed-tensors' ``ignore``) keeps in BF16:
    a part in every layer (``model.layers.*.self_attn``), in one layer
    (``model.layers.3.self_attn``) or a whole layer (``model.layers.0``)."""
    if entries is None:
        return {}
    if not isinstance(entries, list) or not all(isinstance(e, str) for e in entries):
        raise r.error(f"field 'quantization_config.{key}' must be a list of module names, "
                      f"got {entries!r}")
    kept: dict[str, Any] = {}
    kept_layers: set[int] = set()
    for entry in entries:
        if any(name in entry for name in _NEVER_CONVERTED) or entry.rstrip("$").endswith("gate"):
            continue
        index = re.search(r"layers\.(\d+)(?:\.|$)", entry)
        # The first name that matches: "mlp.experts" names the experts, not every MLP.
        part = next((part for part, names in _PART_NAMES if any(n in entry for n in names)),
                    None)
        if part is None:
            if index:
                kept_layers.add(int(index.group(1)))
            continue
        # A whole MLP module covers its experts; a projection (mlp.gate_proj) only the dense MLP.
        whole_mlp = part == "mlp" and "_proj" not in entry
        for target in ("mlp", "experts") if whole_mlp else (part,):
            if index is None:
                kept[target] = True
            elif kept.get(target) is not True:
                kept[target] = kept.get(target, frozenset()) | {int(index.group(1))}
    return {"kept": kept, "kept_layers": frozenset(kept_layers)}


def _quantization(r: _Reader, shape: _Shape) -> _Quantization | None:
    """The served format of a quantized checkpoint (None: unquantized)."""
    config = r.config.get("quantization_config")
    if config is None:
        return None
    if not isinstance(config, Mapping):
        raise r.error(f"field 'quantization_config' must be a mapping, got {config!r}")
    method = config.get("quant_method")
    if method in ("fp8", "fbgemm_fp8"):
        return _Quantization("fp8", **_excluded(config.get("modules_to_not_convert"),
                                                "modules_to_not_convert", r))
    if method == "mxfp4":
        # gpt-oss: MXFP4 experts; attention, routers and embeddings stay BF16.
        if not shape.moe_layers:
            raise r.error("quantization_config.quant_method 'mxfp4' is read for MoE experts "
                          "only; this model has none")
        return _Quantization("mxfp4", parts=("experts",))
    if method in ("awq", "gptq"):
        bits = config.get("bits")
        if bits not in (4, 8):
            raise r.error(f"field 'quantization_config.bits' is {bits!r}; expected 4 or 8")
        return _Quantization("int4" if bits == 4 else "int8",
                             **_excluded(config.get("modules_to_not_convert"),
                                         "modules_to_not_convert", r))
    if method == "compressed-tensors":
        return _Quantization(_compressed_tensors_dtype(config, r),
                             **_excluded(config.get("ignore"), "ignore", r))
    raise r.error(f"field 'quantization_config.quant_method' is {method!r}; supported: "
                  f"{', '.join(QUANT_METHODS)}")


def _compressed_tensors_dtype(config: Mapping[str, Any], r: _Reader) -> str:
    """The weight format of compressed-tensors' config groups (all alike)."""
    groups = config.get("config_groups")
    formats = set()
    for group in (groups or {}).values() if isinstance(groups, Mapping) else ():
        weights = group.get("weights") if isinstance(group, Mapping) else None
        if isinstance(weights, Mapping):
            formats.add((weights.get("num_bits"), weights.get("type")))
    known = {(8, "float"): "fp8", (8, "int"): "int8", (4, "int"): "int4"}
    if len(formats) != 1 or next(iter(formats)) not in known:
        raise r.error(f"field 'quantization_config.config_groups' weights are "
                      f"{sorted(formats, key=str) or 'missing'}; supported (num_bits, type): "
                      f"(8, float), (8, int), (4, int)")
    return known[next(iter(formats))]


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
    quantization = _quantization(reader, shape)
    state_dtype = reader.get("mamba_ssm_cache_dtype", "float32")
    if state_dtype not in STATE_DTYPE_BYTES:
        raise ConfigError(f"{where}: field 'mamba_ssm_cache_dtype' is {state_dtype!r}; expected "
                          f"one of {', '.join(STATE_DTYPE_BYTES)}")
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
        weight_dtype=(quantization.weight_dtype if quantization
                      else "fp16" if dtype == "float16" else "bf16"),
        served_weight_gb=round(quantization.weight_gb(shape, total), 2) if quantization else None,
        experts=shape.experts if shape.moe_layers else 0,
        experts_per_token=shape.top_k if shape.moe_layers else 0,
        kv_layers=shape.attention_layers,
        sliding_window=shape.sliding_window,
        sliding_layers=shape.sliding_layers,
        kv_values_per_token_layer=shape.kv_values,
        state_bytes_per_seq=float(shape.conv_state * DTYPE_BYTES[dtype]
                                  + shape.ssm_state * STATE_DTYPE_BYTES[state_dtype]),
    )
