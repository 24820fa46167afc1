"""`wattsched predict` and `wattsched rank-gpus` with the shipped predictor."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from typer.testing import CliRunner

from energy_models.catalog.specs import devices, get_device, get_llm
from energy_models.memory import TP_DEGREES, serving_memory
from energy_models.predictor.model import PREDICTED_TARGETS, shipped_predictor
from scheduler.cli import app
from tests.cli_checks import one_line_error

runner = CliRunner()

BASELINE_KEYS = {"tdp_power_w", "roofline_itl_s", "roofline_kv_itl_s",
                 "roofline_energy_per_token_j"}
MEASURED_FACTORS = {"itl_s": 0.8, "energy_per_token_j": 1.5}


def _json(args: list[str]) -> dict:
    result = runner.invoke(app, [*args, "--format", "json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def _config(tmp_path, body: dict | str, name: str = "acme-mistral-9b"):
    folder = tmp_path / name
    folder.mkdir()
    path = folder / "config.json"
    path.write_text(body if isinstance(body, str) else json.dumps(body))
    return path


MISTRAL_LIKE = {"_name_or_path": "acme/acme-mistral-9b", "model_type": "mistral",
                "architectures": ["MistralForCausalLM"], "hidden_size": 4096,
                "intermediate_size": 16384, "num_hidden_layers": 36, "num_attention_heads": 32,
                "num_key_value_heads": 8, "head_dim": 128, "vocab_size": 131072,
                "max_position_embeddings": 32768, "tie_word_embeddings": False,
                "torch_dtype": "bfloat16"}


# --- predict -----------------------------------------------------------------------------


def test_predict_json_for_a_catalogued_llm_on_an_unseen_gpu():
    doc = _json(["predict", "--llm", "llama-3.1-8b", "--gpu", "B200", "--batch", "32"])
    assert doc["llm"] == "llama-3.1-8b"
    assert doc["gpu"] == "B200"
    assert doc["unseen"] == "gpu"
    assert doc["engine"] == "vllm"
    assert doc["calibration"] is None
    b200 = get_device("B200")
    assert 0.5 * b200.idle_w < doc["power_w"] < 1.2 * b200.tdp_w
    for target in PREDICTED_TARGETS:
        assert isinstance(doc[target], float)
        assert doc[target] > 0
        low, high = doc[f"{target}_interval"]
        assert low <= doc[target] <= high
    assert set(doc["baselines"]) >= BASELINE_KEYS
    assert doc["baselines"]["tdp_power_w"] == pytest.approx(0.9 * b200.tdp_w)
    assert doc["baselines"]["roofline_itl_s"] == pytest.approx(
        2 * get_llm("llama-3.1-8b").params_b / b200.bandwidth_gb_s)
    # The same numbers as the predictor's own.
    work = pd.DataFrame([{"llm": "llama-3.1-8b", "device": "B200", "input_tokens": 256,
                          "output_tokens": 256, "batch": 32, "tp": 1, "engine": "vllm"}])
    row = shipped_predictor().predict(work).iloc[0]
    for target in PREDICTED_TARGETS:
        assert doc[target] == pytest.approx(row[target], rel=1e-12)


def test_predict_table_shows_predictions_and_baselines():
    result = runner.invoke(app, ["predict", "--llm", "llama-3.1-8b", "--gpu", "B200"])
    assert result.exit_code == 0, result.output
    out = " ".join(result.stdout.split())
    assert "llama-3.1-8b on B200" in out
    assert "GPU not in the training data" in out
    for label in ("power per GPU, W", "inter-token latency, ms", "energy per output token, J",
                  "load-scaled TDP", "roofline + KV"):
        assert label in out
    doc = _json(["predict", "--llm", "llama-3.1-8b", "--gpu", "B200"])
    assert f"{doc['energy_per_token_j']:.3f}" in out
    assert f"{doc['itl_s'] * 1e3:.1f}" in out


def test_predict_llm_config_outside_the_catalog_on_l40s(tmp_path):
    path = _config(tmp_path, MISTRAL_LIKE)
    doc = _json(["predict", "--llm-config", str(path), "--gpu", "L40S", "--batch", "8"])
    assert doc["llm"] == "acme-mistral-9b"
    assert doc["gpu"] == "L40S"
    assert doc["unseen"] == "gpu"
    l40s = get_device("L40S")
    assert 0.5 * l40s.idle_w < doc["power_w"] < 1.2 * l40s.tdp_w
    for target in PREDICTED_TARGETS:
        low, high = doc[f"{target}_interval"]
        assert 0 < low <= doc[target] <= high
    # On a GPU of the training data, the LLM is what is unseen; the folder works too.
    doc = _json(["predict", "--llm-config", str(path.parent), "--gpu", "H100-SXM"])
    assert doc["unseen"] == "llm"


def test_predict_with_calibration_rescales_by_the_fitted_factors(tmp_path):
    base = ["predict", "--llm", "llama-3.1-8b", "--gpu", "B200", "--batch", "16"]
    plain = _json(base)
    # Measurements of llama-3.1-8b on A100-40GB: J/token 1.5x and ITL 0.8x the prediction.
    work = pd.DataFrame([{"llm": "llama-3.1-8b", "device": "A100-40GB", "input_tokens": m,
                          "output_tokens": 200, "batch": b, "tp": 1, "engine": "vllm"}
                         for b, m in ((1, 128), (8, 256), (32, 512))])
    predicted = shipped_predictor().predict(work)
    n = work["output_tokens"]
    measured = work.drop(columns="engine").assign(
        energy_j=predicted["energy_per_token_j"] * MEASURED_FACTORS["energy_per_token_j"] * n,
        runtime_s=predicted["itl_s"] * MEASURED_FACTORS["itl_s"] * n,
        energy_kind="gross", source="my-lab")
    path = tmp_path / "mine.csv"
    measured.loc[:, ["llm", "device", "tp", "batch", "input_tokens", "output_tokens",
                     "energy_j", "runtime_s", "energy_kind", "source"]].to_csv(path, index=False)

    doc = _json([*base, "--calibrate", str(path)])
    calibration = doc["calibration"]
    assert calibration["points"] == 3
    assert calibration["device"] == "A100-40GB"
    factors = calibration["factors"]
    for target, factor in MEASURED_FACTORS.items():
        assert factors[target] == pytest.approx(factor, rel=1e-9)
    for target in PREDICTED_TARGETS:
        assert doc[target] == pytest.approx(plain[target] * factors[target], rel=1e-9)
        for got, was in zip(doc[f"{target}_interval"], plain[f"{target}_interval"],
                            strict=True):
            assert got == pytest.approx(was * factors[target], rel=1e-9)

    result = runner.invoke(app, [*base, "--calibrate", str(path)])
    assert result.exit_code == 0, result.output
    line = " ".join(result.stderr.split())
    assert "calibrated to 3 measured rows on A100-40GB" in line
    for target in PREDICTED_TARGETS:
        assert f"{target} x{factors[target]:.3f}" in line
    assert "itl_s x0.800" in line
    assert "energy_per_token_j x1.500" in line


def test_predict_hf_stack_differs_from_vllm():
    vllm = _json(["predict", "--llm", "llama-3.1-8b", "--gpu", "A100-40GB"])
    hf = _json(["predict", "--llm", "llama-3.1-8b", "--gpu", "A100-40GB", "--engine", "hf"])
    assert hf["engine"] == "hf"
    assert hf["unseen"] == vllm["unseen"] == "pair"
    assert hf["itl_s"] != vllm["itl_s"]


@pytest.mark.parametrize(("args", "expected"), [
    (["--gpu", "B200"], "--llm/--llm-config"),
    (["--gpu", "B200", "--llm", "llama-3.1-8b", "--llm-config", "config.json"],
     "--llm/--llm-config: give exactly one"),
    (["--llm", "llama-3.1-8b", "--gpu", "H100-SMX"], "did you mean 'H100-SXM'"),
    (["--llm", "llama-3.1-8b", "--gpu", "EPYC-7742"], "EPYC-7742 is a CPU"),
    (["--llm", "llama-3.1-8b", "--gpu", "B200", "--batch=-4"],
     "--batch: must be a positive number, got -4"),
    (["--llm", "llama-3.1-8b", "--gpu", "B200", "--output-tokens", "0"],
     "--output-tokens: must be a positive number"),
    (["--llm", "llama-3.1-405b", "--gpu", "L4"], "raise --tp or pick a GPU with more memory"),
    (["--llm", "llama-3.1-8b", "--gpu", "B200", "--engine", "trt"],
     "unknown stack 'trt'; the predictor knows hf, vllm"),
    (["--llm", "lama-3.1-8b", "--gpu", "B200"],
     "unknown LLM 'lama-3.1-8b'; did you mean 'llama-3.1-8b'?"),
])
def test_predict_errors_are_one_line(args, expected):
    line = one_line_error(runner.invoke(app, ["predict", *args]))
    assert expected in line


def test_predict_refuses_a_model_that_does_not_fit_and_names_the_memory():
    line = one_line_error(runner.invoke(app, ["predict", "--llm", "llama-3.1-405b", "--gpu",
                                               "L4", "--tp", "1"]))
    assert "llama-3.1-405b at tp 1 on L4 needs" in line
    assert "GB per device for its weights (811.8 GB)" in line
    assert "L4 offers 21.6 GB" in line


@pytest.mark.parametrize(("body", "expected"), [
    ("{not json", "config.json"),
    ({"model_type": "llama", "hidden_size": 4096}, "missing field"),
    ({"model_type": "no-such-family"}, "unsupported model_type"),
])
def test_predict_malformed_config_is_one_line(tmp_path, body, expected):
    path = _config(tmp_path, body, "broken")
    line = one_line_error(runner.invoke(app, ["predict", "--llm-config", str(path), "--gpu",
                                               "L40S"]))
    assert expected in line


def test_predict_calibration_file_without_usable_rows_is_one_line(tmp_path):
    path = tmp_path / "bad.csv"
    pd.DataFrame([{"llm": "llama-3.1-8b", "device": "A100-40GB", "tp": 1, "batch": 1,
                   "input_tokens": 128, "output_tokens": 100, "energy_j": -5.0,
                   "runtime_s": 2.0, "energy_kind": "gross", "source": "x"}]).to_csv(path,
                                                                                    index=False)
    line = one_line_error(runner.invoke(app, ["predict", "--llm", "llama-3.1-8b", "--gpu",
                                               "B200", "--calibrate", str(path)]))
    assert "no usable calibration row" in line
    assert "energy_j is not positive" in line


# --- rank-gpus ---------------------------------------------------------------------------


def _gpu_names() -> set[str]:
    return {d.name for d in devices() if d.kind == "gpu"}


def test_rank_gpus_sorts_by_energy_per_token_within_the_latency_bound():
    doc = _json(["rank-gpus", "--llm", "llama-3.1-8b"])
    ranked = doc["ranked"]
    assert len(ranked) >= 5
    assert [r["rank"] for r in ranked] == list(range(1, len(ranked) + 1))
    energies = [r["energy_per_token_j"] for r in ranked]
    assert energies == sorted(energies)
    for r in ranked:
        assert r["itl_s"] <= doc["max_itl_ms"] / 1e3
        assert r["tp"] in TP_DEGREES
        spec = get_device(r["gpu"])
        memory = serving_memory(get_llm("llama-3.1-8b"), spec, r["tp"], r["batch"], 384)
        assert memory.problem is None
        assert r["batch"] <= memory.seq_capacity
        assert 0 < r["power_w"] < 1.2 * spec.tdp_w
        low, high = r["energy_per_token_j_interval"]
        assert low <= r["energy_per_token_j"] <= high
    named = [r["gpu"] for r in ranked] + [u["gpu"] for u in doc["unranked"]]
    assert sorted(named) == sorted(_gpu_names())
    seen = set(shipped_predictor().seen_gpus)
    assert {r["gpu"] for r in ranked if r["unseen"] == "pair"} <= seen
    assert all(r["unseen"] == "gpu" for r in ranked if r["gpu"] not in seen)


def test_rank_gpus_lists_gpus_a_large_model_does_not_fit():
    doc = _json(["rank-gpus", "--llm", "llama-3.1-405b"])
    unranked = {u["gpu"]: u["reason"] for u in doc["unranked"]}
    for small in ("L4", "T4", "A100-40GB", "RTX-4090"):
        assert unranked[small] == "does not fit in memory at tp <= 8"
    for r in doc["ranked"]:
        assert get_device(r["gpu"]).memory_gb * 8 > 810


def test_rank_gpus_table_lists_unranked_gpus():
    result = runner.invoke(app, ["rank-gpus", "--llm", "llama-3.1-405b"])
    assert result.exit_code == 0, result.output
    assert "not ranked: L4: does not fit in memory" in result.stdout
    assert "J/token" in result.stdout


def test_rank_gpus_with_an_unmeetable_bound_leaves_every_gpu_unranked():
    doc = _json(["rank-gpus", "--llm", "llama-3.1-8b", "--max-itl-ms", "0.01"])
    assert doc["ranked"] == []
    assert sorted(u["gpu"] for u in doc["unranked"]) == sorted(_gpu_names())
    for u in doc["unranked"]:
        assert u["reason"].startswith("ITL above the bound at every setting that fits")


def test_rank_gpus_llm_config_and_errors(tmp_path):
    path = _config(tmp_path, MISTRAL_LIKE)
    doc = _json(["rank-gpus", "--llm-config", str(path), "--max-itl-ms", "200"])
    assert doc["llm"] == "acme-mistral-9b"
    assert doc["ranked"]
    assert all(r["itl_s"] <= 0.2 for r in doc["ranked"])
    one_line_error(runner.invoke(app, ["rank-gpus"]))
    assert "--max-itl-ms" in one_line_error(
        runner.invoke(app, ["rank-gpus", "--llm", "llama-3.1-8b", "--max-itl-ms", "0"]))
    assert "unknown stack" in one_line_error(
        runner.invoke(app, ["rank-gpus", "--llm", "llama-3.1-8b", "--engine", "sglang"]))


def test_rank_gpus_for_an_llm_that_fits_no_gpu_lists_every_gpu_unranked(tmp_path):
    giant = {"_name_or_path": "acme/acme-giant", "model_type": "llama", "hidden_size": 32768,
             "intermediate_size": 131072, "num_hidden_layers": 200, "num_attention_heads": 128,
             "num_key_value_heads": 8, "vocab_size": 128256, "max_position_embeddings": 8192,
             "tie_word_embeddings": False, "torch_dtype": "bfloat16"}
    path = _config(tmp_path, giant, "acme-giant")
    doc = _json(["rank-gpus", "--llm-config", str(path)])
    assert doc["ranked"] == []
    assert sorted(u["gpu"] for u in doc["unranked"]) == sorted(_gpu_names())
    assert all(u["reason"].startswith("does not fit in memory") for u in doc["unranked"])
