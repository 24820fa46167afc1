"""Tests of the GPU, CPU and LLM spec catalogs (energy_models/data/*.yaml)."""

from __future__ import annotations

import csv
import dataclasses
import json
from importlib import resources
from pathlib import Path

import pytest
import yaml

from energy_models.catalog.specs import (
    WEIGHT_BYTES,
    Catalog,
    DeviceSpec,
    LlmSpec,
    _build,
    _check_llm,
    catalog_rows,
    devices,
    get_device,
    get_llm,
    llms,
)
from energy_models.errors import CatalogError
from energy_models.registry import UnknownNameError

SHARED = Path(__file__).resolve().parents[2] / "shared"
MLENERGY = SHARED / "data" / "mlenergy-leaderboard-v1v2"
MLENERGY_V3 = SHARED / "data" / "mlenergy-leaderboard-v3-h100" / "v3_h100_llm_flat.csv"
V3_PRECISION = {"bfloat16": "bf16", "fp8": "fp8", "mxfp4": "mxfp4"}
# v3 rows whose parameter counts are the model name's rounded size, not a count: the catalog
# keeps the model card's number.
V3_NAME_SIZES = {
    ("Qwen/Qwen3-14B", "total"): 14.77,  # Qwen3 card: 14.8B
    ("Qwen/Qwen3-14B", "active"): 14.77,
    ("Qwen/Qwen3-30B-A3B-Instruct-2507", "active"): 3.3,  # card: 3.3B activated
    ("Qwen/Qwen3-30B-A3B-Thinking-2507", "active"): 3.3,
    ("Qwen/Qwen3-Coder-30B-A3B-Instruct", "active"): 3.3,
}
WATTGPU = SHARED / "data" / "wattgpu"

REQUIRED_GPUS = [
    "V100",
    "T4",
    "A10G",
    "L4",
    "A30",
    "A40",
    "A100-40GB",
    "A100-80GB",
    "L40S",
    "H100-PCIe",
    "H100-SXM",
    "H100-NVL",
    "H200",
    "B200",
]
REQUIRED_CPUS = ["EPYC-7742", "Xeon-Gold-6148", "Xeon-Platinum-8480+", "M1-Pro"]
REQUIRED_LLMS = [
    "llama-3.1-8b",
    "llama-3.1-70b",
    "llama-3.1-405b",
    "llama-3.2-1b",
    "llama-3.2-3b",
    "gemma-2-2b",
    "gemma-2-9b",
    "gemma-2-27b",
    "gemma-3-12b",
    "gemma-3-27b",
    "phi-3-mini",
    "phi-3-small",
    "phi-3-medium",
    "mistral-7b",
    "mistral-small-24b",
    "mixtral-8x7b",
    "mixtral-8x22b",
    "codellama-7b",
    "starcoder2-15b",
    "codegemma-7b",
    "qwen2.5-7b",
    "qwen2.5-14b",
    "qwen2.5-32b",
    "qwen2.5-72b",
    "qwen3-8b",
    "qwen3-30b-a3b",
    "gpt-oss-20b",
    "gpt-oss-120b",
    "deepseek-r1-distill-llama-8b",
    "llama-7b",
    "llama-13b",
    "llama-2-7b-chat",
    "llama-2-13b-chat",
    "vicuna-7b",
    "vicuna-13b",
    "alpaca-7b",
    "koala-7b",
    "koala-13b",
    "dolly-v2-12b",
]
# Names nvidia-smi reports, and the short forms, with the entry each must resolve to.
NVIDIA_SMI_NAMES = {
    "Tesla V100-SXM2-32GB": "V100",
    "Tesla T4": "T4",
    "NVIDIA A10G": "A10G",
    "NVIDIA L4": "L4",
    "NVIDIA A30": "A30",
    "NVIDIA A40": "A40",
    "NVIDIA A100-SXM4-40GB": "A100-40GB",
    "NVIDIA A100-SXM4-80GB": "A100-80GB",
    "NVIDIA L40S": "L40S",
    "NVIDIA H100 PCIe": "H100-PCIe",
    "NVIDIA H100 80GB HBM3": "H100-SXM",
    "NVIDIA H100 NVL": "H100-NVL",
    "NVIDIA H200": "H200",
    "NVIDIA B200": "B200",
    "A100": "A100-40GB",
    "H100": "H100-SXM",
    "V100": "V100",
}
# ML.ENERGY v1 models that are not decoder-only transformers, deliberately not catalogued.
V1_SKIPPED = {"RWKV/rwkv-raven-7b", "lmsys/fastchat-t5-3b-v1.0"}


def _raw(filename: str) -> list[dict]:
    text = resources.files("energy_models").joinpath("data", filename).read_text()
    return yaml.safe_load(text)


def _require(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"{path} is absent")
    return path


# ---------------------------------------------------------------- loading and coverage


def test_catalogs_load():
    assert len(devices()) >= len(REQUIRED_GPUS) + len(REQUIRED_CPUS)
    assert len(llms()) >= 30
    assert all(isinstance(d, DeviceSpec) for d in devices())
    assert all(isinstance(m, LlmSpec) for m in llms())


@pytest.mark.parametrize("filename", ["gpus.yaml", "cpus.yaml", "llms.yaml"])
def test_files_are_lists_of_mappings_without_kind(filename):
    entries = _raw(filename)
    assert isinstance(entries, list)
    assert entries
    for entry in entries:
        assert isinstance(entry, dict)
        assert "kind" not in entry, entry["name"]


@pytest.mark.parametrize("name", REQUIRED_GPUS)
def test_required_gpus(name):
    spec = get_device(name)
    assert spec.name == name
    assert spec.kind == "gpu"
    assert spec.cores is None


@pytest.mark.parametrize("name", REQUIRED_CPUS)
def test_required_cpus(name):
    spec = get_device(name)
    assert spec.name == name
    assert spec.kind == "cpu"
    assert spec.cores is not None
    assert spec.cores > 0


@pytest.mark.parametrize("name", REQUIRED_LLMS)
def test_required_llms(name):
    assert get_llm(name).name == name


@pytest.mark.parametrize(("alias", "name"), sorted(NVIDIA_SMI_NAMES.items()))
def test_nvidia_smi_names_resolve(alias, name):
    assert get_device(alias).name == name


def test_datasheet_anchors():
    h100 = get_device("H100-SXM")
    assert (h100.memory_gb, h100.bandwidth_gb_s, h100.fp16_tflops, h100.tdp_w) == (
        80,
        3350,
        989,
        700,
    )
    a100 = get_device("A100-40GB")
    assert (a100.bandwidth_gb_s, a100.fp16_tflops, a100.tdp_w) == (1555, 312, 400)
    l4 = get_device("L4")
    assert (l4.memory_gb, l4.bandwidth_gb_s, l4.fp16_tflops, l4.tdp_w) == (24, 300, 121, 72)
    llama = get_llm("llama-3.1-8b")
    assert llama.params_b == pytest.approx(8.03)
    assert (llama.layers, llama.hidden_size, llama.heads, llama.kv_heads) == (32, 4096, 32, 8)
    assert (llama.intermediate_size, llama.vocab_size, llama.max_context) == (
        14336,
        128256,
        131072,
    )
    mixtral = get_llm("mixtral-8x7b")
    assert mixtral.params_b == pytest.approx(46.7)
    assert mixtral.active_params_b == pytest.approx(12.9)


# ---------------------------------------------------------------- physical sanity


@pytest.mark.parametrize("spec", list(devices()), ids=lambda s: s.name)
def test_device_sanity(spec):
    for field in ("memory_gb", "bandwidth_gb_s", "fp16_tflops", "tdp_w", "idle_w"):
        assert getattr(spec, field) > 0, field
    assert spec.idle_w < spec.tdp_w
    assert 2010 <= spec.year <= 2030
    assert spec.architecture.strip()
    assert spec.source.strip()
    # Arithmetic intensity at the roofline ridge: FLOPs per byte, a loose physical window.
    ridge = spec.fp16_tflops * 1e12 / (spec.bandwidth_gb_s * 1e9)
    assert 5 < ridge < 1000


@pytest.mark.parametrize("spec", list(llms()), ids=lambda s: s.name)
def test_llm_sanity(spec):
    assert spec.name == spec.name.lower()
    assert " " not in spec.name
    assert "/" in spec.hf_id
    for field in (
        "params_b",
        "active_params_b",
        "layers",
        "hidden_size",
        "heads",
        "kv_heads",
        "intermediate_size",
        "vocab_size",
        "dtype_bytes",
        "max_context",
    ):
        assert getattr(spec, field) > 0, field
    assert spec.active_params_b <= spec.params_b
    assert spec.heads % spec.kv_heads == 0
    assert spec.head_dim is None or spec.head_dim != spec.hidden_size // spec.heads
    assert 0 < spec.quality <= 100
    assert spec.quality_source.strip()
    assert spec.source.strip()
    assert spec.kv_bytes_per_token > 0
    assert spec.weight_dtype in WEIGHT_BYTES
    if spec.served_weight_gb is None:
        assert spec.weight_gb == pytest.approx(spec.params_b * WEIGHT_BYTES[spec.weight_dtype])
    else:
        # Mixed precision: between all-quantized and all-BF16.
        assert (spec.params_b * WEIGHT_BYTES[spec.weight_dtype] <= spec.served_weight_gb
                <= spec.params_b * 2)
    # MoE exactly where some parameters idle, with the router's shape.
    assert (spec.experts > 0) == (spec.active_params_b < spec.params_b)
    assert spec.experts_per_token <= spec.experts
    assert spec.sliding_layers <= spec.kv_layers_ <= spec.layers


@pytest.mark.parametrize(
    "spec", [m for m in llms() if m.active_params_b == m.params_b], ids=lambda s: s.name
)
def test_dense_params_match_shape(spec):
    estimate = (
        12 * spec.layers * spec.hidden_size**2 + 2 * spec.vocab_size * spec.hidden_size
    ) / 1e9
    assert 0.5 < spec.params_b / estimate < 2.0


@pytest.mark.parametrize(
    "spec", [m for m in llms() if m.active_params_b < m.params_b], ids=lambda s: s.name
)
def test_moe_active_fraction(spec):
    assert spec.active_params_b < 0.5 * spec.params_b


@pytest.mark.parametrize(("name", "window", "layers"), [
    ("gemma-2-9b", 4096, 21), ("gemma-3-27b", 1024, 52), ("gpt-oss-120b", 128, 18),
    ("llama-4-scout-17b-16e", 8192, 36), ("mistral-7b-v0.1", 4096, 32),
])
def test_sliding_windows(name, window, layers):
    spec = get_llm(name)
    assert (spec.sliding_window, spec.sliding_layers) == (window, layers)
    # Past the window, only the global layers keep growing.
    long = spec.kv_bytes_per_sequence(10 * window) - spec.kv_bytes_per_sequence(9 * window)
    full_layers = spec.kv_layers_ - spec.sliding_layers
    assert long == pytest.approx(full_layers * window * spec.kv_bytes_per_token_layer)


def test_gpt_oss_weights_as_served():
    # MXFP4 experts beside BF16 attention and embeddings: about 12.8 and 60.8 GiB.
    assert get_llm("gpt-oss-20b").weight_gb * 1e9 / 2**30 == pytest.approx(12.8, abs=0.05)
    assert get_llm("gpt-oss-120b").weight_gb * 1e9 / 2**30 == pytest.approx(60.8, abs=0.05)
    assert get_llm("unsloth/gpt-oss-20b-BF16").weight_gb == pytest.approx(41.8)


def test_hybrid_and_latent_kv():
    nano = get_llm("nvidia/NVIDIA-Nemotron-Nano-9B-v2")
    assert nano.kv_layers == 4
    assert nano.kv_bytes_per_token == 4 * 2 * 8 * 128 * 2
    assert nano.kv_bytes_per_sequence(0) == nano.state_bytes_per_seq == 143548416
    deepseek = get_llm("deepseek-v3")
    assert deepseek.kv_bytes_per_token == 61 * 576 * 2


def test_catalog_rows_carry_weights_as_served():
    rows = {row["name"]: row for row in catalog_rows("llms")}
    assert rows["gpt-oss-120b"]["weight_dtype"] == "mxfp4"
    assert rows["gpt-oss-120b"]["weight_gb"] == 65.25
    assert rows["llama-3.1-8b"]["weight_gb"] == pytest.approx(16.06)
    assert {"quality", "kv_heads", "max_context"} <= set(rows["llama-3.1-8b"])


@pytest.mark.parametrize(("change", "fragments"), [
    ({"weight_dtype": "nf4"}, ["field 'weight_dtype' is 'nf4'", "bf16, fp16, fp8"]),
    ({"experts": 8}, ["'experts' and 'experts_per_token' must both be set", "8 and 0"]),
    ({"experts": 4, "experts_per_token": 8}, ["'experts_per_token' (8)", "experts (4)"]),
    ({"kv_layers": 40}, ["'kv_layers' (40)", "layers (32)"]),
    ({"sliding_layers": 33, "sliding_window": 4096}, ["'sliding_layers' (33)", "KV layers (32)"]),
    ({"kv_layers": 4, "sliding_layers": 5, "sliding_window": 64}, ["KV layers (4)"]),
    ({"sliding_layers": 16}, ["'sliding_window' must be a positive", "got None"]),
    ({"served_weight_gb": 0.0}, ["'served_weight_gb' must be positive"]),
])
def test_llm_entry_rules(change, fragments):
    bad = dataclasses.replace(get_llm("llama-3.1-8b"), **change)
    with pytest.raises(CatalogError) as info:
        _check_llm(bad, "llms.yaml entry 0")
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("llms.yaml entry 0 (llama-3.1-8b): ")
    for fragment in fragments:
        assert fragment in message, message


# ---------------------------------------------------------------- names and aliases


def test_aliases_unique_across_gpu_and_cpu_files():
    seen: dict[str, str] = {}
    for filename in ("gpus.yaml", "cpus.yaml"):
        for entry in _raw(filename):
            for key in (entry["name"], *entry.get("aliases", [])):
                assert key.lower() not in seen, (key, seen.get(key.lower()))
                seen[key.lower()] = entry["name"]


def test_llm_aliases_unique():
    seen: set[str] = set()
    for entry in _raw("llms.yaml"):
        for key in (entry["name"], *entry.get("aliases", [])):
            assert key.lower() not in seen, key
            seen.add(key.lower())


def test_every_hf_id_resolves_to_its_entry():
    for spec in llms():
        assert get_llm(spec.hf_id) is spec


def test_lookup_is_case_insensitive_and_by_alias():
    assert get_device("h100-sxm") is get_device("H100-SXM")
    assert get_device("nvidia h100 80gb hbm3") is get_device("H100-SXM")
    assert get_device("xeon-platinum-8480+") is get_device("Xeon-Platinum-8480+")
    assert get_device("AMD EPYC 7742 64-Core Processor").name == "EPYC-7742"
    assert get_llm("LLAMA-3.1-8B") is get_llm("llama-3.1-8b")
    assert get_llm("meta-llama/meta-llama-3.1-8b-instruct").name == "llama-3.1-8b"
    assert "GOOGLE/GEMMA-2-9B-IT" in llms()
    assert "nvidia l4" in devices()


@pytest.mark.parametrize(
    ("lookup", "name", "suggestion"),
    [
        (get_device, "H100-SMX", "H100-SXM"),
        (get_device, "A100-40G", "A100-40GB"),
        (get_device, "EPYC-7743", "EPYC-7742"),
        (get_llm, "lama-3.1-8b", "llama-3.1-8b"),
        (get_llm, "mixtral-8x7", "mixtral-8x7b"),
    ],
)
def test_unknown_name_suggests_closest(lookup, name, suggestion):
    with pytest.raises(UnknownNameError) as info:
        lookup(name)
    assert info.value.suggestion == suggestion
    assert repr(suggestion) in str(info.value)
    assert isinstance(info.value, KeyError)


def test_duplicate_alias_is_rejected():
    a = get_device("T4")
    b = get_device("L4")
    clash = DeviceSpec(**{**b.__dict__, "aliases": ("tesla t4",)})
    with pytest.raises(CatalogError, match="appears twice"):
        Catalog("device", [a, clash])


def test_entry_may_not_set_loader_fields():
    entry = {
        "name": "X",
        "kind": "cpu",
        "memory_gb": 1,
        "bandwidth_gb_s": 1,
        "fp16_tflops": 1,
        "tdp_w": 2,
        "idle_w": 1,
        "architecture": "x",
        "year": 2020,
        "source": "x",
    }
    with pytest.raises(CatalogError, match="set by the loader"):
        _build(DeviceSpec, entry, "test entry", {"kind": "gpu"})
    with pytest.raises(CatalogError, match="unknown field"):
        _build(DeviceSpec, {**entry, "colour": "green"}, "test entry", {})


# ---------------------------------------------------------------- ML.ENERGY and WattGPU data


def test_mlenergy_v2_models_and_gpus_resolve():
    path = _require(MLENERGY / "v2_llm_flat.csv")
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    models = {row["model"] for row in rows}
    gpus = {row["gpu"] for row in rows}
    assert models
    for model in sorted(models):
        get_llm(model)
    for gpu in sorted(gpus):
        assert get_device(gpu).kind == "gpu"


def test_mlenergy_v3_models_resolve_in_their_precision():
    path = _require(MLENERGY_V3)
    with path.open(newline="") as f:
        rows = {row["model_id"]: row for row in csv.DictReader(f)}
    assert len(rows) >= 18
    for model_id, row in sorted(rows.items()):
        spec = get_llm(model_id)
        assert spec.weight_dtype == V3_PRECISION[row["weight_precision"]], model_id
        for kind, ours, column in (("total", spec.params_b, "total_params_billions"),
                                   ("active", spec.active_params_b,
                                    "activated_params_billions")):
            theirs = float(row[column])
            if (model_id, kind) in V3_NAME_SIZES:
                assert ours == pytest.approx(V3_NAME_SIZES[model_id, kind])
                assert int(ours) == theirs, (model_id, kind)  # the name rounds the count down
            else:
                assert ours == pytest.approx(theirs, rel=0.05), (model_id, kind)


def test_mlenergy_v1_models_resolve():
    path = _require(MLENERGY / "v1" / "models.json")
    keys = set(json.loads(path.read_text())) - V1_SKIPPED
    assert keys
    for key in sorted(keys):
        get_llm(key)
    for gpu in ("A100", "A40", "V100"):
        assert get_device(gpu).kind == "gpu"


def test_wattgpu_gpu_features_agree():
    path = _require(WATTGPU / "gpu_features.csv")
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f, delimiter=";"))
    checked = 0
    for row in rows:
        if row["gpu_type"] not in devices():
            continue
        spec = get_device(row["gpu_type"])
        assert spec.memory_gb == pytest.approx(float(row["memory_size_gb"]), rel=0.05)
        assert spec.bandwidth_gb_s == pytest.approx(float(row["memory_bandwidth_gb_s"]), rel=0.05)
        assert spec.tdp_w == pytest.approx(float(row["thermal_design_power_w"]), rel=0.05)
        checked += 1
    assert checked >= 9


def test_wattgpu_model_features_agree():
    path = _require(WATTGPU / "model_features.csv")
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f, delimiter=";"))
    fields = {
        "layers": "num_layers",
        "hidden_size": "hidden_size",
        "heads": "num_attention_heads",
        "kv_heads": "num_key_value_heads",
        "vocab_size": "vocab_size",
    }
    checked = 0
    for row in rows:
        if row["model_name"] not in llms():
            continue
        spec = get_llm(row["model_name"])
        for ours, theirs in fields.items():
            assert getattr(spec, ours) == int(float(row[theirs])), (spec.name, ours)
        checked += 1
    assert checked >= 10
