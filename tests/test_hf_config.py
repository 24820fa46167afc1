"""Tests of energy_models.catalog.hf_config: an LlmSpec derived from a Hugging Face config.json.

The embedded configs carry the public config.json values (the keys that matter) of each
family. Their computed totals were checked, to the parameter, against ``transformers`` 5.23
building each model on the meta device.
"""

from __future__ import annotations

import ast
import csv
import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from energy_models.catalog.hf_config import FAMILIES, QUALITY_SOURCE, llm_from_config
from energy_models.catalog.specs import WEIGHT_BYTES, get_llm, llms
from energy_models.errors import ConfigError, EnergyModelError

LLAMA = {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "attention_bias": False,
         "mlp_bias": False, "max_position_embeddings": 131072, "vocab_size": 128256,
         "torch_dtype": "bfloat16"}
CONFIGS = {
    "llama-3.1-8b": LLAMA | {"hidden_size": 4096, "intermediate_size": 14336,
                             "num_hidden_layers": 32, "num_attention_heads": 32,
                             "num_key_value_heads": 8, "tie_word_embeddings": False},
    "llama-3.1-70b": LLAMA | {"hidden_size": 8192, "intermediate_size": 28672,
                              "num_hidden_layers": 80, "num_attention_heads": 64,
                              "num_key_value_heads": 8, "tie_word_embeddings": False},
    "llama-3.2-1b": LLAMA | {"hidden_size": 2048, "intermediate_size": 8192,
                             "num_hidden_layers": 16, "num_attention_heads": 32,
                             "num_key_value_heads": 8, "head_dim": 64,
                             "tie_word_embeddings": True},
    "llama-3.2-3b": LLAMA | {"hidden_size": 3072, "intermediate_size": 8192,
                             "num_hidden_layers": 28, "num_attention_heads": 24,
                             "num_key_value_heads": 8, "head_dim": 128,
                             "tie_word_embeddings": True},
    "llama-4-scout-17b-16e": {
        "model_type": "llama4", "architectures": ["Llama4ForConditionalGeneration"],
        "tie_word_embeddings": False,
        "text_config": {"model_type": "llama4_text", "hidden_size": 5120,
                        "intermediate_size": 8192, "intermediate_size_mlp": 16384,
                        "num_hidden_layers": 48, "num_attention_heads": 40,
                        "num_key_value_heads": 8, "head_dim": 128, "vocab_size": 202048,
                        "num_local_experts": 16, "num_experts_per_tok": 1,
                        "interleave_moe_layer_step": 1, "max_position_embeddings": 10485760,
                        "use_qk_norm": True, "attention_bias": False, "torch_dtype": "bfloat16"},
        "vision_config": {"model_type": "llama4_vision_model", "hidden_size": 1408,
                          "num_hidden_layers": 34, "intermediate_size": 5632}},
    "llama-4-maverick-17b-128e": {
        "model_type": "llama4", "architectures": ["Llama4ForConditionalGeneration"],
        "tie_word_embeddings": False,
        "text_config": {"model_type": "llama4_text", "hidden_size": 5120,
                        "intermediate_size": 8192, "intermediate_size_mlp": 16384,
                        "num_hidden_layers": 48, "num_attention_heads": 40,
                        "num_key_value_heads": 8, "head_dim": 128, "vocab_size": 202048,
                        "num_local_experts": 128, "num_experts_per_tok": 1,
                        "interleave_moe_layer_step": 2, "max_position_embeddings": 1048576,
                        "use_qk_norm": False, "attention_bias": False,
                        "torch_dtype": "bfloat16"}},
    "qwen2.5-7b": {"model_type": "qwen2", "hidden_size": 3584, "intermediate_size": 18944,
                   "num_hidden_layers": 28, "num_attention_heads": 28, "num_key_value_heads": 4,
                   "vocab_size": 152064, "max_position_embeddings": 32768,
                   "tie_word_embeddings": False, "torch_dtype": "bfloat16"},
    "qwen2.5-14b": {"model_type": "qwen2", "hidden_size": 5120, "intermediate_size": 13824,
                    "num_hidden_layers": 48, "num_attention_heads": 40, "num_key_value_heads": 8,
                    "vocab_size": 152064, "max_position_embeddings": 32768,
                    "tie_word_embeddings": False, "torch_dtype": "bfloat16"},
    "qwen3-0.6b": {"model_type": "qwen3", "hidden_size": 1024, "intermediate_size": 3072,
                   "num_hidden_layers": 28, "num_attention_heads": 16, "num_key_value_heads": 8,
                   "head_dim": 128, "vocab_size": 151936, "max_position_embeddings": 40960,
                   "tie_word_embeddings": True, "attention_bias": False,
                   "torch_dtype": "bfloat16"},
    "qwen3-8b": {"model_type": "qwen3", "hidden_size": 4096, "intermediate_size": 12288,
                 "num_hidden_layers": 36, "num_attention_heads": 32, "num_key_value_heads": 8,
                 "head_dim": 128, "vocab_size": 151936, "max_position_embeddings": 40960,
                 "tie_word_embeddings": False, "attention_bias": False,
                 "torch_dtype": "bfloat16"},
    "qwen3-30b-a3b": {"model_type": "qwen3_moe", "hidden_size": 2048, "intermediate_size": 6144,
                      "moe_intermediate_size": 768, "num_hidden_layers": 48,
                      "num_attention_heads": 32, "num_key_value_heads": 4, "head_dim": 128,
                      "num_experts": 128, "num_experts_per_tok": 8, "decoder_sparse_step": 1,
                      "mlp_only_layers": [], "vocab_size": 151936,
                      "max_position_embeddings": 40960, "tie_word_embeddings": False,
                      "torch_dtype": "bfloat16"},
    "qwen3-235b-a22b": {"model_type": "qwen3_moe", "hidden_size": 4096,
                        "intermediate_size": 12288, "moe_intermediate_size": 1536,
                        "num_hidden_layers": 94, "num_attention_heads": 64,
                        "num_key_value_heads": 4, "head_dim": 128, "num_experts": 128,
                        "num_experts_per_tok": 8, "decoder_sparse_step": 1,
                        "mlp_only_layers": [], "vocab_size": 151936,
                        "max_position_embeddings": 40960, "tie_word_embeddings": False,
                        "torch_dtype": "bfloat16"},
    "mixtral-8x7b": {"model_type": "mixtral", "hidden_size": 4096, "intermediate_size": 14336,
                     "num_hidden_layers": 32, "num_attention_heads": 32,
                     "num_key_value_heads": 8, "num_local_experts": 8,
                     "num_experts_per_tok": 2, "vocab_size": 32000,
                     "max_position_embeddings": 32768, "tie_word_embeddings": False,
                     "torch_dtype": "bfloat16"},
    "gemma-7b": {"model_type": "gemma", "hidden_size": 3072, "intermediate_size": 24576,
                 "num_hidden_layers": 28, "num_attention_heads": 16, "num_key_value_heads": 16,
                 "head_dim": 256, "vocab_size": 256000, "max_position_embeddings": 8192,
                 "torch_dtype": "bfloat16"},
    "gemma-2-9b": {"model_type": "gemma2", "hidden_size": 3584, "intermediate_size": 14336,
                   "num_hidden_layers": 42, "num_attention_heads": 16, "num_key_value_heads": 8,
                   "head_dim": 256, "vocab_size": 256000, "max_position_embeddings": 8192,
                   "query_pre_attn_scalar": 256, "torch_dtype": "float32"},
    "gemma-2-27b": {"model_type": "gemma2", "hidden_size": 4608, "intermediate_size": 36864,
                    "num_hidden_layers": 46, "num_attention_heads": 32,
                    "num_key_value_heads": 16, "head_dim": 128, "vocab_size": 256000,
                    "max_position_embeddings": 8192, "query_pre_attn_scalar": 144,
                    "torch_dtype": "float32"},
    "gemma-3-1b": {"model_type": "gemma3_text", "hidden_size": 1152, "intermediate_size": 6912,
                   "num_hidden_layers": 26, "num_attention_heads": 4, "num_key_value_heads": 1,
                   "head_dim": 256, "vocab_size": 262144, "max_position_embeddings": 32768,
                   "sliding_window": 512, "torch_dtype": "bfloat16"},
    # As published: the text tower's heads, head_dim and vocabulary are Gemma3TextConfig defaults.
    "gemma-3-4b": {"model_type": "gemma3", "architectures": ["Gemma3ForConditionalGeneration"],
                   "text_config": {"model_type": "gemma3_text", "hidden_size": 2560,
                                   "intermediate_size": 10240, "num_hidden_layers": 34,
                                   "sliding_window": 1024},
                   "vision_config": {"model_type": "siglip_vision_model"},
                   "torch_dtype": "bfloat16"},
    "gemma-3-27b": {"model_type": "gemma3", "architectures": ["Gemma3ForConditionalGeneration"],
                    "text_config": {"model_type": "gemma3_text", "head_dim": 128,
                                    "hidden_size": 5376, "intermediate_size": 21504,
                                    "num_attention_heads": 32, "num_hidden_layers": 62,
                                    "num_key_value_heads": 16, "query_pre_attn_scalar": 168,
                                    "sliding_window": 1024},
                    "vision_config": {"model_type": "siglip_vision_model"},
                    "torch_dtype": "bfloat16"},
    "mistral-7b": {"model_type": "mistral", "hidden_size": 4096, "intermediate_size": 14336,
                   "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8,
                   "vocab_size": 32768, "max_position_embeddings": 32768,
                   "tie_word_embeddings": False, "torch_dtype": "bfloat16"},
    "mistral-small-24b": {"model_type": "mistral", "hidden_size": 5120,
                          "intermediate_size": 32768, "num_hidden_layers": 40,
                          "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 128,
                          "vocab_size": 131072, "max_position_embeddings": 32768,
                          "tie_word_embeddings": False, "torch_dtype": "bfloat16"},
    "phi-2": {"model_type": "phi", "hidden_size": 2560, "intermediate_size": 10240,
              "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": None,
              "vocab_size": 51200, "max_position_embeddings": 2048, "qk_layernorm": False,
              "tie_word_embeddings": False, "torch_dtype": "float16"},
    "phi-3-mini": {"model_type": "phi3", "hidden_size": 3072, "intermediate_size": 8192,
                   "num_hidden_layers": 32, "num_attention_heads": 32,
                   "num_key_value_heads": 32, "vocab_size": 32064,
                   "max_position_embeddings": 4096, "tie_word_embeddings": False,
                   "torch_dtype": "bfloat16"},
    "phi-3-medium": {"model_type": "phi3", "hidden_size": 5120, "intermediate_size": 17920,
                     "num_hidden_layers": 40, "num_attention_heads": 40,
                     "num_key_value_heads": 10, "vocab_size": 32064,
                     "max_position_embeddings": 4096, "tie_word_embeddings": False,
                     "torch_dtype": "bfloat16"},
    "phi-4": {"model_type": "phi3", "hidden_size": 5120, "intermediate_size": 17920,
              "num_hidden_layers": 40, "num_attention_heads": 40, "num_key_value_heads": 10,
              "vocab_size": 100352, "max_position_embeddings": 16384,
              "tie_word_embeddings": False, "torch_dtype": "bfloat16"},
    "gpt-oss-20b": {"model_type": "gpt_oss", "hidden_size": 2880, "intermediate_size": 2880,
                    "num_hidden_layers": 24, "num_attention_heads": 64,
                    "num_key_value_heads": 8, "head_dim": 64, "num_local_experts": 32,
                    "experts_per_token": 4, "num_experts_per_tok": 4, "attention_bias": True,
                    "vocab_size": 201088, "max_position_embeddings": 131072,
                    "tie_word_embeddings": False, "sliding_window": 128},
    "gpt-oss-120b": {"model_type": "gpt_oss", "hidden_size": 2880, "intermediate_size": 2880,
                     "num_hidden_layers": 36, "num_attention_heads": 64,
                     "num_key_value_heads": 8, "head_dim": 64, "num_local_experts": 128,
                     "experts_per_token": 4, "num_experts_per_tok": 4, "attention_bias": True,
                     "vocab_size": 201088, "max_position_embeddings": 131072,
                     "tie_word_embeddings": False, "sliding_window": 128},
    "falcon-7b": {"model_type": "falcon", "hidden_size": 4544, "num_hidden_layers": 32,
                  "num_attention_heads": 71, "multi_query": True,
                  "new_decoder_architecture": False, "parallel_attn": True, "bias": False,
                  "alibi": False, "vocab_size": 65024, "torch_dtype": "bfloat16"},
    "falcon-40b": {"model_type": "falcon", "hidden_size": 8192, "num_hidden_layers": 60,
                   "num_attention_heads": 128, "num_kv_heads": 8,
                   "new_decoder_architecture": True, "parallel_attn": True, "bias": False,
                   "alibi": False, "vocab_size": 65024, "torch_dtype": "bfloat16"},
}
CONFIGS["mistral-small-3.1-24b"] = {
    "model_type": "mistral3", "architectures": ["Mistral3ForConditionalGeneration"],
    "text_config": {"model_type": "mistral", "head_dim": 128, "hidden_size": 5120,
                    "intermediate_size": 32768, "num_hidden_layers": 40,
                    "num_attention_heads": 32, "num_key_value_heads": 8, "vocab_size": 131072,
                    "max_position_embeddings": 131072, "sliding_window": None},
    "vision_config": {"model_type": "pixtral"}, "torch_dtype": "bfloat16"}
# Falcon's configs as first published, before transformers took the model in.
REFINED_WEB_MODEL = {"model_type": "RefinedWebModel", "hidden_size": 4544, "n_head": 71,
                     "n_layer": 32, "multi_query": True, "parallel_attn": True, "bias": False,
                     "alibi": False, "vocab_size": 65024, "torch_dtype": "bfloat16"}
REFINED_WEB = {"model_type": "RefinedWeb", "hidden_size": 8192, "n_head": 128, "n_head_kv": 8,
               "n_layer": 60, "parallel_attn": True, "bias": False, "alibi": False,
               "vocab_size": 65024, "torch_dtype": "bfloat16"}

# Published (total, active) billions: model cards, or the Hugging Face page's count.
PUBLISHED = {
    "llama-3.1-8b": (8.03, None),
    "llama-3.1-70b": (70.6, None),
    "llama-3.2-1b": (1.24, None),
    "llama-3.2-3b": (3.21, None),
    "llama-4-scout-17b-16e": (109.0, 17.0),  # with the vision encoder; text tower 107.8
    "llama-4-maverick-17b-128e": (400.0, 17.0),
    "qwen2.5-7b": (7.62, None),
    "qwen2.5-14b": (14.77, None),
    "qwen3-0.6b": (0.6, None),
    "qwen3-8b": (8.19, None),
    "qwen3-30b-a3b": (30.5, 3.3),
    "qwen3-235b-a22b": (235.0, 22.0),
    "mixtral-8x7b": (46.7, 12.9),
    "gemma-7b": (8.54, None),
    "gemma-2-9b": (9.24, None),
    "gemma-2-27b": (27.2, None),
    # Gemma 3 report, Table 1: embedding + non-embedding parameters, the text tower alone.
    "gemma-3-1b": (0.302 + 0.698, None),
    "gemma-3-4b": (0.675 + 3.209, None),
    "gemma-3-27b": (1.416 + 25.600, None),
    "mistral-7b": (7.25, None),
    "mistral-small-24b": (23.57, None),
    "mistral-small-3.1-24b": (24.0, None),  # with the vision encoder; text tower 23.57
    "phi-2": (2.78, None),
    "phi-3-mini": (3.82, None),
    "phi-3-medium": (13.96, None),
    "phi-4": (14.7, None),
    # OpenAI's active counts leave out the input embedding table (a lookup, not a matmul).
    "gpt-oss-20b": (20.91, 3.61),
    "gpt-oss-120b": (116.83, 5.13),
    # Falcon ties its output layer to the embeddings (transformers and vLLM share them); the
    # Hugging Face page's 7.22 and 41.8 B count it a second time.
    "falcon-7b": (7.0, None),
    "falcon-40b": (41.8, None),
}
ACTIVE_WITHOUT_INPUT_EMBEDDING = {"gpt-oss-20b", "gpt-oss-120b", "gpt-oss-20b-bf16"}
SIGLIP_B = 0.417
"""Gemma 3's vision encoder (Gemma 3 report, Table 1); the catalog's Gemma 3 counts include it."""


def spec(name: str, **overrides):
    return llm_from_config({**CONFIGS[name], **overrides}, name=name)


def embedding_b(name: str) -> float:
    derived = spec(name)
    return derived.vocab_size * derived.hidden_size / 1e9


# ---------------------------------------------------------------- parameter counts


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_params_within_2_percent_of_published(name):
    total, active = PUBLISHED[name]
    derived = spec(name)
    assert derived.params_b == pytest.approx(total, rel=0.02)
    if active is None:
        assert derived.active_params_b == derived.params_b
        return
    assert derived.active_params_b < derived.params_b
    ours = derived.active_params_b
    if name in ACTIVE_WITHOUT_INPUT_EMBEDDING:
        ours -= embedding_b(name)
    assert ours == pytest.approx(active, rel=0.02)


def test_every_config_has_a_published_count():
    assert set(CONFIGS) == set(PUBLISHED)


def test_exact_counts_match_transformers():
    # transformers 5.23's own counts of these configs (meta-device models, tied weights once).
    assert spec("llama-3.1-8b").params_b == 8.030
    assert spec("mixtral-8x7b").params_b == 46.703
    assert spec("gpt-oss-20b").params_b == 20.915
    assert spec("falcon-40b").params_b == 41.303
    assert spec("phi-2").params_b == 2.780


@pytest.mark.parametrize("name", sorted(set(CONFIGS) & {m.name for m in llms()}))
def test_catalog_params_agree(name):
    """Each catalogued model the configs cover, with the catalog's known differences of
    convention reconciled."""
    catalogued = get_llm(name)
    derived = spec(name)
    total, active = derived.params_b, derived.active_params_b
    if name.startswith("gemma-3"):
        total, active = total + SIGLIP_B, active + SIGLIP_B
    if name in ACTIVE_WITHOUT_INPUT_EMBEDDING:
        active -= embedding_b(name)
    if name == "falcon-7b":
        # The catalog's 7.22 counts the checkpoint's separate copy of the tied output layer.
        total = active = spec(name, tie_word_embeddings=False).params_b
    assert total == pytest.approx(catalogued.params_b, rel=0.02)
    assert active == pytest.approx(catalogued.active_params_b, rel=0.02)


# ---------------------------------------------------------------- shape fields


def test_llama_shape():
    s = spec("llama-3.1-8b")
    assert (s.layers, s.hidden_size, s.heads, s.kv_heads) == (32, 4096, 32, 8)
    assert (s.intermediate_size, s.vocab_size, s.max_context) == (14336, 128256, 131072)
    assert s.head_dim is None
    assert s.dtype_bytes == 2
    assert s.name == "llama-3.1-8b"
    assert math.isnan(s.quality)
    assert s.quality_source == QUALITY_SOURCE


@pytest.mark.parametrize(("name", "head_dim"), [
    ("llama-3.2-1b", None),  # 64 == 2048 / 32
    ("qwen3-8b", None),  # 128 == 4096 / 32
    ("qwen3-30b-a3b", 128),  # 2048 / 32 = 64
    ("gemma-2-9b", 256),
    ("gpt-oss-20b", 64),  # 2880 / 64 = 45
    ("mistral-small-24b", 128),
    ("gemma-3-1b", 256),
])
def test_head_dim_only_where_it_differs(name, head_dim):
    s = spec(name)
    assert s.head_dim == head_dim
    assert s.head_dim_ == (head_dim or s.hidden_size // s.heads)


def test_float32_checkpoints_are_served_in_16_bit():
    assert CONFIGS["gemma-2-9b"]["torch_dtype"] == "float32"
    assert spec("gemma-2-9b").dtype_bytes == 2
    no_dtype = {k: v for k, v in CONFIGS["qwen3-8b"].items() if k != "torch_dtype"}
    assert llm_from_config(no_dtype, name="x").dtype_bytes == 2
    assert llm_from_config({**no_dtype, "dtype": "float16"}, name="x").dtype_bytes == 2


def test_kv_heads_default_to_heads():
    assert spec("phi-2").kv_heads == 32
    no_kv = {k: v for k, v in CONFIGS["llama-3.1-8b"].items() if k != "num_key_value_heads"}
    assert llm_from_config(no_kv, name="x").kv_heads == 32


def test_falcon_kv_heads():
    assert spec("falcon-7b").kv_heads == 1  # multi_query
    assert spec("falcon-7b", multi_query=False).kv_heads == 71
    assert spec("falcon-40b").kv_heads == 8  # new_decoder_architecture + num_kv_heads
    assert spec("falcon-7b").intermediate_size == 4 * 4544  # no ffn_hidden_size: 4 x hidden
    assert spec("falcon-7b", ffn_hidden_size=10000).intermediate_size == 10000
    assert spec("falcon-7b").max_context == 2048


def test_falcon_refined_web_configs():
    legacy_7b = llm_from_config(REFINED_WEB_MODEL, name="falcon-7b")
    legacy_40b = llm_from_config(REFINED_WEB, name="falcon-40b")
    for legacy, current in ((legacy_7b, spec("falcon-7b")), (legacy_40b, spec("falcon-40b"))):
        assert legacy.params_b == current.params_b
        assert (legacy.layers, legacy.heads, legacy.kv_heads) == (
            current.layers, current.heads, current.kv_heads)


def test_moe_fields():
    qwen = spec("qwen3-30b-a3b")
    assert qwen.intermediate_size == 768  # one expert's, not the dense 6144
    mixtral = spec("mixtral-8x7b")
    assert mixtral.intermediate_size == 14336
    scout = spec("llama-4-scout-17b-16e")
    assert (scout.layers, scout.hidden_size, scout.heads, scout.kv_heads) == (48, 5120, 40, 8)
    assert (scout.intermediate_size, scout.vocab_size) == (8192, 202048)
    assert scout.max_context == 10485760
    for name in PUBLISHED:
        derived = spec(name)
        assert (derived.active_params_b < derived.params_b) == (PUBLISHED[name][1] is not None)


def test_moe_layer_placement():
    qwen = spec("qwen3-30b-a3b")
    sparse = spec("qwen3-30b-a3b", decoder_sparse_step=2, mlp_only_layers=[0, 5])
    # 23 MoE layers (1, 3, 7, ...) and 25 dense ones; transformers counts 16,369,793,024.
    assert sparse.params_b == 16.370
    # A dense 6144-wide MLP weighs what 8 of the 768-wide experts do; only the router goes.
    assert sparse.active_params_b == pytest.approx(
        qwen.active_params_b - 25 * 2048 * 128 / 1e9, abs=0.001)
    maverick = CONFIGS["llama-4-maverick-17b-128e"]
    three = {**maverick, "text_config": {**maverick["text_config"], "moe_layers": [3, 7, 11]}}
    assert llm_from_config(three, name="x").params_b == 65.112  # transformers' count


def test_more_experts_per_token_than_experts():
    with pytest.raises(ConfigError) as info:
        spec("mixtral-8x7b", num_experts_per_tok=9)
    assert_one_line(info, "field 'num_experts_per_tok' (9) exceeds num_local_experts (8)")


def test_experts_per_token_drives_active():
    one = spec("mixtral-8x7b", num_experts_per_tok=1)
    all_ = spec("mixtral-8x7b", num_experts_per_tok=8)
    assert one.active_params_b < spec("mixtral-8x7b").active_params_b
    assert all_.active_params_b == all_.params_b


# ---------------------------------------------------------------- nested configs


def test_gemma3_reads_the_text_tower():
    s = spec("gemma-3-27b")
    assert (s.layers, s.hidden_size, s.heads, s.kv_heads, s.head_dim) == (62, 5376, 32, 16, 128)
    assert (s.intermediate_size, s.vocab_size, s.max_context) == (21504, 262208, 131072)


def test_gemma3_falls_back_on_transformers_defaults():
    # The published gemma-3-4b-it config names no heads, head_dim or vocabulary.
    s = spec("gemma-3-4b")
    assert (s.heads, s.kv_heads, s.head_dim, s.vocab_size) == (8, 4, 256, 262208)


def test_gemma3_text_matches_its_nested_form():
    text = dict(CONFIGS["gemma-3-27b"]["text_config"], model_type="gemma3_text")
    assert llm_from_config(text, name="x").params_b == spec("gemma-3-27b").params_b


def test_nested_top_level_fields_are_read():
    config = CONFIGS["gemma-3-27b"]
    untied = {**config, "tie_word_embeddings": False}
    assert llm_from_config(untied, name="x").params_b == pytest.approx(
        spec("gemma-3-27b").params_b + embedding_b("gemma-3-27b"), abs=0.002)
    assert llm_from_config({**config, "torch_dtype": "float16"}, name="x").dtype_bytes == 2


def test_mistral3_reads_the_text_tower():
    s = spec("mistral-small-3.1-24b")
    assert s.params_b == spec("mistral-small-24b").params_b
    assert s.max_context == 131072


# ---------------------------------------------------------------- tied embeddings


@pytest.mark.parametrize(("name", "tied"), [
    ("llama-3.2-1b", True),
    ("llama-3.1-8b", False),
    ("gemma-2-9b", True),  # Gemma ties by default: its configs do not say
    ("qwen3-0.6b", True),
    ("qwen3-8b", False),
    ("falcon-7b", True),
])
def test_tied_and_untied_embeddings(name, tied):
    flipped = spec(name, tie_word_embeddings=not tied)
    difference = flipped.params_b - spec(name).params_b
    sign = 1 if tied else -1
    assert difference == pytest.approx(sign * embedding_b(name), abs=0.002)


def test_falcon_7b_catalog_count_is_the_untied_one():
    assert spec("falcon-7b").params_b == pytest.approx(6.922, abs=0.001)
    assert spec("falcon-7b", tie_word_embeddings=False).params_b == pytest.approx(7.22, abs=0.01)


@settings(max_examples=60, deadline=None)
@given(layers=st.integers(1, 96), hidden_heads=st.sampled_from([(2048, 16), (4096, 32), (5120, 40),
                                                                 (8192, 64)]),
       kv_divisor=st.sampled_from([1, 2, 4, 8]), mlp=st.integers(2, 6),
       vocab=st.integers(32000, 256000), tied=st.booleans())
def test_dense_count_is_the_closed_form(layers, hidden_heads, kv_divisor, mlp, vocab, tied):
    hidden, heads = hidden_heads
    kv = heads // kv_divisor
    intermediate = mlp * hidden
    config = {"model_type": "llama", "num_hidden_layers": layers, "hidden_size": hidden,
              "num_attention_heads": heads, "num_key_value_heads": kv,
              "intermediate_size": intermediate, "vocab_size": vocab,
              "max_position_embeddings": 4096, "tie_word_embeddings": tied}
    head_dim = hidden // heads
    layer = hidden * head_dim * (2 * heads + 2 * kv) + 3 * hidden * intermediate + 2 * hidden
    expected = layers * layer + vocab * hidden * (1 if tied else 2) + hidden
    derived = llm_from_config(config, name="x")
    assert derived.params_b == pytest.approx(expected / 1e9, abs=0.0005)
    assert derived.active_params_b == derived.params_b


# ---------------------------------------------------------------- names and files


def test_name_from_name_or_path():
    config = {**CONFIGS["llama-3.1-8b"], "_name_or_path": "meta-llama/Llama-3.1-8B-Instruct"}
    s = llm_from_config(config)
    assert s.name == "llama-3.1-8b-instruct"
    assert s.hf_id == "meta-llama/Llama-3.1-8B-Instruct"
    assert llm_from_config(config, name="mine").name == "mine"
    assert s.source == "Hugging Face config.json (given as a mapping)"


def test_file_and_folder(tmp_path):
    folder = tmp_path / "Qwen3-8B"
    folder.mkdir()
    path = folder / "config.json"
    path.write_text(json.dumps(CONFIGS["qwen3-8b"]))
    s = llm_from_config(path)
    assert (s.name, s.hf_id) == ("qwen3-8b", "Qwen3-8B")
    assert s.source == f"Hugging Face config.json at {path}"
    assert llm_from_config(str(folder)).source == s.source
    assert s.params_b == spec("qwen3-8b").params_b


def test_name_from_the_hugging_face_cache(tmp_path):
    snapshot = tmp_path / "models--Qwen--Qwen3-8B" / "snapshots" / "9c925d6"
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text(json.dumps(CONFIGS["qwen3-8b"]))
    assert llm_from_config(snapshot / "config.json").name == "qwen3-8b"


# ---------------------------------------------------------------- errors


def assert_one_line(info, *fragments):
    message = str(info.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, message
    assert isinstance(info.value, EnergyModelError)
    assert isinstance(info.value, ValueError)


def test_malformed_json(tmp_path):
    path = tmp_path / "config.json"
    path.write_text('{\n  "model_type": "llama",\n  "hidden_size": 4096,,\n}\n')
    with pytest.raises(ConfigError) as info:
        llm_from_config(path)
    assert_one_line(info, str(path), "not JSON", "line 3")


def test_json_that_is_not_an_object(tmp_path):
    path = tmp_path / "config.json"
    path.write_text("[1, 2]")
    with pytest.raises(ConfigError) as info:
        llm_from_config(path)
    assert_one_line(info, "expected a JSON object, got list")


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError) as info:
        llm_from_config(tmp_path / "nope" / "config.json")
    assert_one_line(info, "no such file", "config.json")


@pytest.mark.parametrize("field", ["hidden_size", "num_hidden_layers", "num_attention_heads",
                                   "vocab_size", "intermediate_size", "max_position_embeddings"])
def test_missing_field(field):
    config = {k: v for k, v in CONFIGS["llama-3.1-8b"].items() if k != field}
    with pytest.raises(ConfigError) as info:
        llm_from_config(config, name="x")
    assert_one_line(info, "config.json: missing field", repr(field))


def test_missing_model_type():
    config = {k: v for k, v in CONFIGS["llama-3.1-8b"].items() if k != "model_type"}
    with pytest.raises(ConfigError) as info:
        llm_from_config(config, name="x")
    assert_one_line(info, "missing field 'model_type'")


def test_missing_nested_field():
    gemma = CONFIGS["gemma-3-27b"]
    text = {k: v for k, v in gemma["text_config"].items() if k != "hidden_size"}
    with pytest.raises(ConfigError) as info:
        llm_from_config({**gemma, "text_config": text}, name="x")
    assert_one_line(info, "missing field 'text_config.hidden_size'")
    with pytest.raises(ConfigError) as info:
        llm_from_config({"model_type": "gemma3"}, name="x")
    assert_one_line(info, "missing field 'text_config'")


@pytest.mark.parametrize(("field", "value"), [
    ("num_hidden_layers", -2), ("hidden_size", 0), ("num_attention_heads", 32.5),
    ("vocab_size", "big"), ("num_key_value_heads", True),
])
def test_bad_integer(field, value):
    with pytest.raises(ConfigError) as info:
        spec("llama-3.1-8b", **{field: value})
    assert_one_line(info, f"field '{field}' must be a positive integer, got {value!r}")


def test_negative_value_message():
    with pytest.raises(ConfigError, match=r"^config\.json: field 'num_hidden_layers' must be a "
                                          r"positive integer, got -2$"):
        spec("llama-3.1-8b", num_hidden_layers=-2)


def test_kv_heads_must_divide_heads():
    with pytest.raises(ConfigError) as info:
        spec("llama-3.1-8b", num_key_value_heads=5)
    assert_one_line(info, "'num_key_value_heads' (5) must divide num_attention_heads (32)")


def test_bad_flag_and_dtype():
    with pytest.raises(ConfigError) as info:
        spec("llama-3.1-8b", tie_word_embeddings="yes")
    assert_one_line(info, "field 'tie_word_embeddings' must be true or false")
    with pytest.raises(ConfigError) as info:
        spec("llama-3.1-8b", torch_dtype="int4")
    assert_one_line(info, "field 'torch_dtype'", "'int4'", "bfloat16")


def test_unsupported_model_type():
    with pytest.raises(ConfigError) as info:
        llm_from_config({"model_type": "mamba", "hidden_size": 768}, name="x")
    assert_one_line(info, "config.json: unsupported model_type 'mamba'; supported: deepseek_v3, "
                          "falcon, gemma,")
    for family in FAMILIES:
        assert family in str(info.value)


def test_a_mapping_needs_a_name():
    with pytest.raises(ConfigError) as info:
        llm_from_config(CONFIGS["llama-3.1-8b"])
    assert_one_line(info, "no model name", "_name_or_path", "name=")


# ---------------------------------------------------------------- WattGPU model table


def wattgpu_rows(shared_data):
    path = shared_data / "wattgpu" / "model_features.csv"
    if not path.exists():
        pytest.skip(f"{path} is absent")
    with path.open(newline="") as f:
        return list(csv.DictReader(f, delimiter=";"))


def config_from_row(row: dict[str, str]) -> dict:
    """The table's row as a config.json mapping: numbers, booleans and nested dicts restored."""
    config = {}
    for key, text in row.items():
        if text in ("", "N/A"):
            continue
        if text in ("TRUE", "FALSE"):
            config[key] = text == "TRUE"
            continue
        try:
            number = float(text)
        except ValueError:
            try:
                config[key] = ast.literal_eval(text)
            except (ValueError, SyntaxError):
                config[key] = text
            continue
        config[key] = int(number) if number.is_integer() else number
    return config


def test_wattgpu_shapes_match_the_catalog(shared_data):
    checked = 0
    for row in wattgpu_rows(shared_data):
        if row["model_name"] not in llms():
            continue
        s = get_llm(row["model_name"])
        ours = (s.layers, s.hidden_size, s.heads, s.kv_heads, s.vocab_size)
        theirs = tuple(int(float(row[k])) for k in ("num_layers", "hidden_size",
                                                    "num_attention_heads",
                                                    "num_key_value_heads", "vocab_size"))
        assert ours == theirs, s.name
        checked += 1
    assert checked >= 15


def test_wattgpu_configs_reproduce_the_catalog_params(shared_data):
    checked = set()
    for row in wattgpu_rows(shared_data):
        if row["model_name"] not in llms() or row["model_type"] not in FAMILIES:
            continue
        catalogued = get_llm(row["model_name"])
        derived = llm_from_config(config_from_row(row), name=catalogued.name)
        total, active = derived.params_b, derived.active_params_b
        if row["model_type"] == "gemma3":
            total, active = total + SIGLIP_B, active + SIGLIP_B
        if catalogued.name in ACTIVE_WITHOUT_INPUT_EMBEDDING:
            active -= catalogued.vocab_size * catalogued.hidden_size / 1e9
        assert total == pytest.approx(catalogued.params_b, rel=0.02), catalogued.name
        assert active == pytest.approx(catalogued.active_params_b, rel=0.02), catalogued.name
        assert (derived.layers, derived.hidden_size, derived.heads, derived.kv_heads) == (
            catalogued.layers, catalogued.hidden_size, catalogued.heads, catalogued.kv_heads)
        checked.add(row["model_type"])
    assert checked >= {"llama", "qwen2", "qwen3", "gemma2", "gemma3", "mistral", "phi3", "gpt_oss"}


# ---------------------------------------------------------------- ML.ENERGY v3 models

# The v3 models' configs (the keys that matter, as published on Hugging Face).
# The 2507 releases: the first Qwen3 MoE shapes with a 256k context.
QWEN3_MOE_2507 = CONFIGS["qwen3-235b-a22b"] | {"max_position_embeddings": 262144}
QWEN3_30B_2507 = CONFIGS["qwen3-30b-a3b"] | {"max_position_embeddings": 262144}
QWEN3_CODER_480B = QWEN3_MOE_2507 | {"hidden_size": 6144, "intermediate_size": 8192,
                                     "moe_intermediate_size": 2560, "num_hidden_layers": 62,
                                     "num_attention_heads": 96, "num_key_value_heads": 8,
                                     "num_experts": 160}
QWEN_FP8 = {"quant_method": "fp8", "fmt": "e4m3", "activation_scheme": "dynamic",
            "weight_block_size": [128, 128]}
NEMOTRON_NANO_9B = {"model_type": "nemotron_h", "hidden_size": 4480, "intermediate_size": 15680,
                    "num_hidden_layers": 56, "num_attention_heads": 40, "num_key_value_heads": 8,
                    "head_dim": 128, "vocab_size": 131072, "max_position_embeddings": 131072,
                    "hybrid_override_pattern":
                        "M-M-M-MM-M-M-M*-M-M-M*-M-M-M-M*-M-M-M-M*-M-MM-M-M-M-M-M-",
                    "mamba_num_heads": 128, "mamba_head_dim": 80, "n_groups": 8,
                    "ssm_state_size": 128, "conv_kernel": 4, "use_conv_bias": True,
                    "use_bias": False, "mlp_bias": False, "attention_bias": False,
                    "tie_word_embeddings": False, "torch_dtype": "bfloat16"}
NEMOTRON_NANO_12B = NEMOTRON_NANO_9B | {
    "hidden_size": 5120, "intermediate_size": 20480, "num_hidden_layers": 62,
    "hybrid_override_pattern": "M-M-M-M*-M-M-M-M*-M-M-M-M*-M-M-M-M*-M-M-M-M*-M-M-M-M*-M-M-M-M-"}
DEEPSEEK_V3 = {"model_type": "deepseek_v3", "hidden_size": 7168, "intermediate_size": 18432,
               "moe_intermediate_size": 2048, "num_hidden_layers": 61,
               "num_attention_heads": 128, "num_key_value_heads": 128, "n_routed_experts": 256,
               "n_shared_experts": 1, "num_experts_per_tok": 8, "first_k_dense_replace": 3,
               "moe_layer_freq": 1, "q_lora_rank": 1536, "kv_lora_rank": 512,
               "qk_rope_head_dim": 64, "qk_nope_head_dim": 128, "v_head_dim": 128,
               "topk_method": "noaux_tc", "vocab_size": 129280,
               "max_position_embeddings": 163840, "tie_word_embeddings": False,
               "torch_dtype": "bfloat16",
               "quantization_config": {"quant_method": "fp8", "fmt": "e4m3",
                                       "activation_scheme": "dynamic",
                                       "weight_block_size": [128, 128]}}
QWEN3_14B = {"model_type": "qwen3", "hidden_size": 5120, "intermediate_size": 17408,
             "num_hidden_layers": 40, "num_attention_heads": 40, "num_key_value_heads": 8,
             "head_dim": 128, "vocab_size": 151936, "max_position_embeddings": 40960,
             "tie_word_embeddings": False, "torch_dtype": "bfloat16"}
GEMMA_3_12B = {"model_type": "gemma3", "text_config": {
    "model_type": "gemma3_text", "hidden_size": 3840, "intermediate_size": 15360,
    "num_hidden_layers": 48, "num_attention_heads": 16, "num_key_value_heads": 8,
    "head_dim": 256, "sliding_window": 1024}, "torch_dtype": "bfloat16"}
LLAMA_405B = LLAMA | {"hidden_size": 16384, "intermediate_size": 53248, "num_hidden_layers": 126,
                      "num_attention_heads": 128, "num_key_value_heads": 8,
                      "tie_word_embeddings": False}
# Meta's FP8 405B: row-wise FP8 MLPs; layers 0 and 125 and all attention stay BF16 (the
# modules_to_not_convert transformers' conversion script writes).
LLAMA_405B_FP8 = {"quant_method": "fbgemm_fp8", "activation_scale_ub": 1200.0,
                  "modules_to_not_convert": ["model.layers.0", "model.layers.125", "lm_head",
                                             *(f"model.layers.{i}.self_attn"
                                               for i in range(1, 125))]}
# Assumed, not verified against the published file: only the routed experts in FP8.
MAVERICK_FP8 = {"quant_method": "fbgemm_fp8",
                "modules_to_not_convert": ["re:.*self_attn.*", "re:.*shared_expert.*",
                                           "re:.*router.*",
                                           "re:.*feed_forward.(gate|up|down)_proj", "lm_head",
                                           "re:.*vision_model.*"]}
GPT_OSS_MXFP4 = {"quant_method": "mxfp4",
                 "modules_to_not_convert": ["model.layers.*.self_attn", "model.layers.*.mlp.router",
                                            "model.embed_tokens", "lm_head"]}
V3_CONFIGS = {
    "Qwen/Qwen3-14B": QWEN3_14B,
    "Qwen/Qwen3-8B": CONFIGS["qwen3-8b"],
    "Qwen/Qwen3-235B-A22B-Instruct-2507": QWEN3_MOE_2507,
    "Qwen/Qwen3-235B-A22B-Thinking-2507": QWEN3_MOE_2507,
    "Qwen/Qwen3-235B-A22B-Instruct-2507-FP8": QWEN3_MOE_2507 | {"quantization_config": QWEN_FP8},
    "Qwen/Qwen3-235B-A22B-Thinking-2507-FP8": QWEN3_MOE_2507 | {"quantization_config": QWEN_FP8},
    "Qwen/Qwen3-30B-A3B-Instruct-2507": QWEN3_30B_2507,
    "Qwen/Qwen3-30B-A3B-Thinking-2507": QWEN3_30B_2507,
    "Qwen/Qwen3-Coder-30B-A3B-Instruct": QWEN3_30B_2507,
    "Qwen/Qwen3-Coder-480B-A35B-Instruct": QWEN3_CODER_480B,
    "Qwen/Qwen3-Coder-480B-A35B-Instruct-FP8": QWEN3_CODER_480B | {"quantization_config": QWEN_FP8},
    "nvidia/NVIDIA-Nemotron-Nano-9B-v2": NEMOTRON_NANO_9B,
    "nvidia/NVIDIA-Nemotron-Nano-12B-v2": NEMOTRON_NANO_12B,
    "openai/gpt-oss-120b": CONFIGS["gpt-oss-120b"] | {"quantization_config": GPT_OSS_MXFP4},
    "openai/gpt-oss-20b": CONFIGS["gpt-oss-20b"] | {"quantization_config": GPT_OSS_MXFP4},
    "google/gemma-3-12b-it": GEMMA_3_12B,
    "meta-llama/Llama-3.1-405B-Instruct-FP8": LLAMA_405B | {"quantization_config": LLAMA_405B_FP8},
    "meta-llama/Llama-3.1-70B-Instruct": CONFIGS["llama-3.1-70b"],
    "meta-llama/Llama-3.1-8B-Instruct": CONFIGS["llama-3.1-8b"],
    "meta-llama/Llama-4-Maverick-17B-128E-Instruct-FP8":
        CONFIGS["llama-4-maverick-17b-128e"] | {"quantization_config": MAVERICK_FP8},
    "meta-llama/Llama-4-Scout-17B-16E-Instruct": CONFIGS["llama-4-scout-17b-16e"],
    "deepseek-ai/DeepSeek-V3": DEEPSEEK_V3,
    "deepseek-ai/DeepSeek-R1": DEEPSEEK_V3,
}


@pytest.mark.parametrize("model_id", sorted(V3_CONFIGS))
def test_v3_configs_agree_with_the_catalog(model_id):
    catalogued = get_llm(model_id)
    derived = llm_from_config(V3_CONFIGS[model_id], name="x")
    total, active, weight_gb = derived.params_b, derived.active_params_b, derived.weight_gb
    if catalogued.name.startswith("gemma-3"):
        total, active, weight_gb = total + SIGLIP_B, active + SIGLIP_B, weight_gb + 2 * SIGLIP_B
    if catalogued.name in ACTIVE_WITHOUT_INPUT_EMBEDDING:
        active -= derived.vocab_size * derived.hidden_size / 1e9
    assert total == pytest.approx(catalogued.params_b, rel=0.02)
    assert active == pytest.approx(catalogued.active_params_b, rel=0.02)
    assert derived.weight_dtype == catalogued.weight_dtype
    assert weight_gb == pytest.approx(catalogued.weight_gb, rel=0.02)
    assert derived.kv_bytes_per_token == catalogued.kv_bytes_per_token
    assert derived.kv_bytes_per_sequence(100_000) == pytest.approx(
        catalogued.kv_bytes_per_sequence(100_000))
    assert (derived.experts, derived.experts_per_token) == (
        catalogued.experts, catalogued.experts_per_token)
    assert (derived.sliding_window, derived.sliding_layers) == (
        catalogued.sliding_window, catalogued.sliding_layers)


def test_v3_configs_cover_the_leaderboard(shared_data):
    path = shared_data / "mlenergy-leaderboard-v3-h100" / "v3_h100_llm_flat.csv"
    if not path.exists():
        pytest.skip(f"{path} is absent")
    with path.open(newline="") as f:
        assert {row["model_id"] for row in csv.DictReader(f)} <= set(V3_CONFIGS)


@pytest.mark.parametrize("name", sorted(set(CONFIGS) & {m.name for m in llms()}))
def test_catalog_windows_and_experts_agree(name):
    derived, catalogued = spec(name), get_llm(name)
    assert (derived.sliding_window, derived.sliding_layers) == (
        catalogued.sliding_window, catalogued.sliding_layers)
    assert (derived.experts, derived.experts_per_token) == (
        catalogued.experts, catalogued.experts_per_token)


@pytest.mark.parametrize(("name", "window", "layers"), [
    ("gemma-2-9b", 4096, 21),  # even layers of 42
    ("gemma-3-1b", 512, 22),  # 5 of every 6 of 26
    ("gemma-3-27b", 1024, 52),
    ("gpt-oss-20b", 128, 12),
    ("llama-4-scout-17b-16e", 8192, 36),  # 3 RoPE layers of every 4
    ("mistral-7b", None, 0),  # v0.3: no window
    ("qwen3-8b", None, 0),
])
def test_sliding_layers(name, window, layers):
    s = spec(name)
    assert (s.sliding_window, s.sliding_layers) == (window, layers)


def test_window_sources():
    assert spec("mistral-7b", sliding_window=4096).sliding_layers == 32
    types = ["full_attention"] * 20 + ["sliding_attention"] * 4
    assert spec("gpt-oss-20b", layer_types=types).sliding_layers == 4
    scout = CONFIGS["llama-4-scout-17b-16e"]
    nope = {**scout, "text_config": {**scout["text_config"], "no_rope_layers": [1, 0] * 24}}
    assert llm_from_config(nope, name="x").sliding_layers == 24
    with pytest.raises(ConfigError) as info:
        spec("gpt-oss-20b", layer_types=["full_attention"])
    assert_one_line(info, "field 'layer_types' must name one type for each of the 24 layers")


def test_nemotron_h_hybrid():
    s = llm_from_config(NEMOTRON_NANO_9B, name="x")
    # 27 Mamba, 4 attention, 25 MLP layers; 8.89B as Hugging Face counts it.
    assert s.params_b == pytest.approx(8.89, abs=0.005)
    assert s.kv_layers == 4
    assert s.kv_bytes_per_token == 4 * 2 * 8 * 128 * 2
    # 27 layers x (BF16 conv state 3 x 12288 + float32 SSM state 128 x 80 x 128).
    assert s.state_bytes_per_seq == 27 * (3 * 12288 * 2 + 128 * 80 * 128 * 4)
    bf16_state = llm_from_config({**NEMOTRON_NANO_9B, "mamba_ssm_cache_dtype": "bfloat16"},
                                 name="x")
    assert bf16_state.state_bytes_per_seq == 27 * (3 * 12288 + 128 * 80 * 128) * 2
    assert llm_from_config(NEMOTRON_NANO_12B, name="x").params_b == pytest.approx(12.31,
                                                                                   abs=0.005)


@pytest.mark.parametrize("pattern", ["M*-", "M-M-E*" + "M-" * 25, 7])
def test_nemotron_h_pattern_must_fit(pattern):
    with pytest.raises(ConfigError) as info:
        llm_from_config({**NEMOTRON_NANO_9B, "hybrid_override_pattern": pattern}, name="x")
    assert_one_line(info, "field 'hybrid_override_pattern' must hold one of M, * or -")


def test_deepseek_v3_latent_attention_and_shared_experts():
    s = llm_from_config(DEEPSEEK_V3, name="x")
    assert s.params_b == pytest.approx(671.0, abs=0.1)  # DeepSeek: 671B, 37B activated
    assert s.active_params_b == pytest.approx(37.0, rel=0.02)  # with the input embedding
    assert s.kv_values_per_token_layer == 512 + 64
    assert s.kv_bytes_per_token == 61 * 576 * 2
    assert (s.experts, s.experts_per_token, s.intermediate_size) == (256, 8, 2048)
    # Each of the 58 MoE layers drops its shared expert: 3 x 7168 x 2048 fewer active params.
    unshared = llm_from_config({**DEEPSEEK_V3, "n_shared_experts": None}, name="x")
    assert s.active_params_b - unshared.active_params_b == pytest.approx(
        58 * 3 * 7168 * 2048 / 1e9, abs=0.002)
    all_dense = llm_from_config({**DEEPSEEK_V3, "first_k_dense_replace": 61}, name="x")
    assert all_dense.active_params_b == all_dense.params_b


# ---------------------------------------------------------------- quantization_config


def test_mxfp4_experts_beside_bf16():
    s = llm_from_config(V3_CONFIGS["openai/gpt-oss-20b"], name="x")
    experts = 24 * 32 * 3 * 2880 * 2880
    assert s.weight_dtype == "mxfp4"
    assert s.served_weight_gb == pytest.approx(
        (experts * 4.25 / 8 + (20.915e9 - experts) * 2) / 1e9, abs=0.01)
    assert s.served_weight_gb * 1e9 / 2**30 == pytest.approx(12.8, abs=0.05)
    with pytest.raises(ConfigError) as info:
        spec("llama-3.1-8b", quantization_config=GPT_OSS_MXFP4)
    assert_one_line(info, "'mxfp4' is read for MoE experts only")


def test_fbgemm_keeps_attention_and_end_layers():
    s = llm_from_config(V3_CONFIGS["meta-llama/Llama-3.1-405B-Instruct-FP8"], name="x")
    mlp = 124 * 3 * 16384 * 53248
    assert s.served_weight_gb == pytest.approx((mlp + (s.params_b * 1e9 - mlp) * 2) / 1e9,
                                               abs=0.01)
    everything = spec("llama-3.1-8b", quantization_config={"quant_method": "fp8"})
    # Only the embeddings, output layer and norms stay BF16.
    assert everything.served_weight_gb == pytest.approx(
        8.030 + 2 * 128256 * 4096 / 1e9 + 65 * 4096 / 1e9, abs=0.01)


@pytest.mark.parametrize(("quantization", "dtype"), [
    ({"quant_method": "fp8", "weight_block_size": [128, 128]}, "fp8"),
    ({"quant_method": "awq", "bits": 4, "group_size": 128}, "int4"),
    ({"quant_method": "gptq", "bits": 8}, "int8"),
    ({"quant_method": "gptq", "bits": 4}, "int4"),
    ({"quant_method": "compressed-tensors", "ignore": ["lm_head"],
      "config_groups": {"group_0": {"weights": {"num_bits": 8, "type": "float"}}}}, "fp8"),
    ({"quant_method": "compressed-tensors",
      "config_groups": {"group_0": {"weights": {"num_bits": 4, "type": "int"}}}}, "int4"),
])
def test_quantized_formats(quantization, dtype):
    s = spec("llama-3.1-8b", quantization_config=quantization)
    assert s.weight_dtype == dtype
    assert s.params_b == 8.030  # the count does not change
    assert s.params_b * WEIGHT_BYTES[dtype] < s.served_weight_gb < s.params_b * 2


def test_excluded_attention_stays_bf16():
    base = {"quant_method": "gptq", "bits": 4}
    all_4bit = spec("llama-3.1-8b", quantization_config=base)
    kept = spec("llama-3.1-8b", quantization_config={
        **base, "modules_to_not_convert": ["model.layers.*.self_attn", "model.layers.3.mlp"]})
    attention = 32 * 4096 * 128 * (2 * 32 + 2 * 8)
    mlp_layer = 3 * 4096 * 14336
    assert kept.served_weight_gb - all_4bit.served_weight_gb == pytest.approx(
        (attention + mlp_layer) * (2 - 4.25 / 8) / 1e9, abs=0.01)


@pytest.mark.parametrize(("quantization", "fragments"), [
    ({"quant_method": "bitsandbytes", "load_in_4bit": True},
     ["field 'quantization_config.quant_method' is 'bitsandbytes'; supported: awq,",
      "fp8, gptq, mxfp4"]),
    ({"bits": 4}, ["field 'quantization_config.quant_method' is None"]),
    ({"quant_method": "awq", "bits": 3}, ["field 'quantization_config.bits' is 3"]),
    ({"quant_method": "compressed-tensors",
      "config_groups": {"group_0": {"weights": {"num_bits": 4, "type": "float"}}}},
     ["'quantization_config.config_groups' weights are [(4, 'float')]", "(4, int)"]),
    ({"quant_method": "fp8", "modules_to_not_convert": "lm_head"},
     ["field 'quantization_config.modules_to_not_convert' must be a list"]),
    ("fp8", ["field 'quantization_config' must be a mapping"]),
])
def test_unsupported_quantization(quantization, fragments):
    with pytest.raises(ConfigError) as info:
        spec("llama-3.1-8b", quantization_config=quantization)
    assert_one_line(info, *fragments)
