"""Tests of energy_models.predictor.model (model and evaluation), and of the predictor in the cost
chain (energy_models.cost).

Most tests fit a small predictor on a synthetic table: the analytical model's own targets times
known factors, so what the trees must learn (and what a calibration must recover) is known.
The shipped predictor and the evaluation harness are checked on the real ML.ENERGY rows.
"""

from __future__ import annotations

import dataclasses
import gzip
import itertools
import json
import math
import re

import numpy as np
import pandas as pd
import pytest

from energy_models.analytical.model import shipped_constants
from energy_models.catalog.hf_config import llm_from_config
from energy_models.catalog.specs import get_device, get_llm
from energy_models.cost import PredictedSource, default_chain
from energy_models.errors import CalibrationError, ModelFileError
from energy_models.predictor.evaluation import (
    RANKING_SLACK,
    calibration_effect,
    choose_forms,
    conformal_bounds,
    folds,
    interval_coverage,
    mdape,
    mean_kendall,
    out_of_fold,
    residual_intervals,
    scores,
    winner_accuracy,
)
from energy_models.predictor.model import (
    FEATURES,
    PREDICTED_TARGETS,
    PREDICTOR_FORMS,
    Calibration,
    Predictor,
    Trees,
    analytical_targets,
    features,
    interval_key,
    load_rho,
    measured_targets,
    shipped_predictor,
    training_rows,
    wattgpu_baselines,
)
from energy_models.stacks import STACKS

CONSTANTS = {stack: shipped_constants()[stack] for stack in STACKS}
LLMS = ("llama-3.1-8b", "mistral-7b", "gemma-2-9b")
GPUS = ("A100-40GB", "H100-SXM")
BATCHES = (1, 8, 32, 64)
BASE_FACTORS = {"power_w": 1.1, "itl_s": 0.9, "energy_per_token_j": 1.2}
INTERVAL_BOUNDS = {"pair": (-0.1, 0.1), "gpu": (-0.3, 0.25), "llm": (-0.2, 0.15)}
INTERVALS = {interval_key(kind, stack): dict.fromkeys(PREDICTED_TARGETS, bounds)
             for kind, bounds in INTERVAL_BOUNDS.items() for stack in STACKS}
CALIBRATION_FACTORS = {"power_w": 1.3, "itl_s": 0.8, "energy_per_token_j": 1.5}


def _work(llm="llama-3.1-8b", device="H100-SXM", *, batch=32, tp=1, input_tokens=512,
          output_tokens=256, engine="vllm") -> pd.DataFrame:
    return pd.DataFrame([{"llm": llm, "device": device, "input_tokens": input_tokens,
                          "output_tokens": output_tokens, "batch": batch, "tp": tp,
                          "engine": engine}])


def _truth_factor(rows: pd.DataFrame, target: str) -> np.ndarray:
    """The synthetic measured / analytical ratio: a constant times a smooth function of batch
    and the GPU, so the trees have something to learn."""
    batch = rows["batch"].to_numpy(float)
    h100 = (rows["device"] == "H100-SXM").to_numpy()
    return BASE_FACTORS[target] * (1.0 + 0.05 * np.log2(batch)) * np.where(h100, 1.08, 1.0)


def synthetic_rows() -> pd.DataFrame:
    """Predictor rows (``training_rows`` columns) for a few catalogued LLMs and GPUs."""
    grid = pd.DataFrame(
        list(itertools.product(LLMS, GPUS, sorted(STACKS), BATCHES, (128, 512), (128, 256))),
        columns=["llm", "device", "engine", "batch", "input_tokens", "output_tokens"])
    grid = grid.assign(tp=1, config="synthetic", source="synthetic")
    analytical = analytical_targets(grid, CONSTANTS)
    rows = grid.assign(**{t: analytical[t].to_numpy() * _truth_factor(grid, t)
                          for t in PREDICTED_TARGETS})
    # The analytical ITL is the time per output token (TPOT form), what the constants fit.
    return rows.assign(
        tpot_s=rows["itl_s"],
        engine_version=rows["engine"].map(lambda e: STACKS[e].measured_versions[0]),
        itl_definition=rows["engine"].map(lambda e: STACKS[e].itl_definition))


@pytest.fixture(scope="module", autouse=True)
def _one_openmp_thread():
    """The trees are small: one OpenMP thread is as fast, and does not spin on a busy machine."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):
        yield


@pytest.fixture(scope="module")
def rows() -> pd.DataFrame:
    return synthetic_rows()


@pytest.fixture(scope="module")
def predictor(rows) -> Predictor:
    return Predictor.fit(rows, intervals=INTERVALS, provenance={"data": "synthetic"},
                         constants=CONSTANTS, seed=0)


@pytest.fixture(scope="module")
def mlenergy_rows() -> pd.DataFrame:
    from tests.conftest import SHARED_DATA

    if not (SHARED_DATA / "mlenergy-leaderboard-v1v2").is_dir():
        pytest.skip("../shared/data is absent")
    return training_rows(SHARED_DATA)


# --- Trees -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sklearn_model():
    from sklearn.ensemble import HistGradientBoostingRegressor

    rng = np.random.default_rng(3)
    x = rng.normal(size=(600, 4))
    y = 5.0 + 2.0 * x[:, 0] + np.sin(3 * x[:, 1]) + 0.5 * (x[:, 2] > 0.3)
    # Missing values in training: the splits on feature 0 learn where NaN goes (NaN rows have
    # a high target, so some splits send them right, others left).
    missing = rng.random(600) < 0.2
    x[missing, 0] = np.nan
    y[missing] += 3.0
    model = HistGradientBoostingRegressor(max_iter=40, max_leaf_nodes=8, learning_rate=0.1,
                                          early_stopping=False, random_state=0)
    return model.fit(x, y)


def _probe(seed: int = 11) -> np.ndarray:
    """Inputs with NaN in every feature, including features that had none in training."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(500, 4))
    x[rng.random(x.shape) < 0.15] = np.nan
    return x


def test_trees_copy_predicts_as_sklearn_including_missing_values(sklearn_model):
    trees = Trees.from_sklearn(sklearn_model)
    assert len(trees.feature) == 40
    routes = np.concatenate([m[~leaf] for m, leaf in zip(trees.missing_left, trees.leaf,
                                                        strict=True)])
    assert routes.any()
    assert not routes.all()  # Both NaN directions are exercised.
    x = _probe()
    assert np.isnan(x).any(axis=1).sum() > 100
    np.testing.assert_allclose(trees.predict(x), sklearn_model.predict(x), rtol=0, atol=1e-12)


@pytest.mark.parametrize("max_leaf_nodes", [8, 20, 40])
def test_trees_all_at_once_equal_walking_bit_for_bit(max_leaf_nodes):
    """The packed evaluation (8-, 32- and 64-bit leaf masks) gives the walk's sums exactly."""
    from sklearn.ensemble import HistGradientBoostingRegressor

    rng = np.random.default_rng(5)
    x = rng.normal(size=(800, 4))
    y = np.sin(2 * x[:, 0]) + x[:, 1] * x[:, 2] + 0.3 * rng.normal(size=800)
    x[rng.random(800) < 0.1, 1] = np.nan
    model = HistGradientBoostingRegressor(max_iter=20, max_leaf_nodes=max_leaf_nodes,
                                          min_samples_leaf=5, early_stopping=False,
                                          random_state=0).fit(x, y)
    trees = Trees.from_sklearn(model)
    assert trees._packed is not None
    probe = _probe(13)
    np.testing.assert_array_equal(trees.predict(probe), trees.predict_by_walking(probe))
    np.testing.assert_allclose(trees.predict(probe), model.predict(probe), rtol=0, atol=1e-12)


def test_trees_json_round_trip_predicts_alike(sklearn_model):
    trees = Trees.from_sklearn(sklearn_model)
    body = json.loads(json.dumps(trees.to_dict()))
    loaded = Trees.from_dict(body)
    x = _probe(12)
    np.testing.assert_allclose(loaded.predict(x), sklearn_model.predict(x), rtol=1e-6)
    # A second round trip changes nothing: the file is a fixed point.
    assert Trees.from_dict(json.loads(json.dumps(loaded.to_dict()))).to_dict() == body


def test_trees_leaf_and_split_node_layout():
    trees = Trees.from_dict({"baseline": 1.5, "trees": [
        [[0, 2.0, 1, 2, 1], [10.0], [20.0]],
        [[1, 0.0, 1, 2, 0], [-1.0], [1.0]],
    ]})
    x = np.array([[1.0, -1.0], [3.0, 1.0], [np.nan, np.nan], [2.0, 0.0]])
    # Row 3 sits on both thresholds: x <= threshold goes left.
    np.testing.assert_array_equal(trees.predict(x), [1.5 + 10 - 1, 1.5 + 20 + 1,
                                                     1.5 + 10 + 1, 1.5 + 10 - 1])


# --- Predictor on synthetic rows ---------------------------------------------------------


def test_predictor_learns_the_synthetic_correction(rows, predictor):
    predicted = predictor.predict(rows)
    analytical = analytical_targets(rows, CONSTANTS)
    for target in PREDICTED_TARGETS:
        values = predicted[target].to_numpy()
        assert np.isfinite(values).all()
        assert (values > 0).all()
        ratio = values / analytical[target].to_numpy()
        truth = _truth_factor(rows, target)
        # The training rows are reproduced closely; the analytical model alone is far off.
        assert mdape(ratio, truth) < 1.0, target
        assert mdape(np.ones_like(truth), truth) > 5.0


def test_predictor_fit_is_deterministic_and_gzip_is_byte_stable(rows, predictor):
    again = Predictor.fit(rows, intervals=INTERVALS, provenance={"data": "synthetic"},
                          constants=CONSTANTS, seed=0)
    assert again.to_json() == predictor.to_json()
    packed = predictor.to_gzip()
    assert packed == again.to_gzip()
    assert packed[4:8] == b"\x00\x00\x00\x00"  # No timestamp in the gzip header.
    assert gzip.decompress(packed).decode() == predictor.to_json()


def test_predictor_json_round_trip(predictor):
    text = predictor.to_json()
    loaded = Predictor.from_json(text)
    assert loaded.to_json() == text
    assert loaded.stacks == ("hf", "vllm", "vllm-0.5")
    assert loaded.intervals == INTERVALS
    assert loaded.provenance == {"data": "synthetic"}
    assert loaded.constants == CONSTANTS
    work = pd.concat([_work(), _work("gemma-2-9b", "A100-40GB", batch=8, engine="hf"),
                      _work("qwen3-8b", "L40S", batch=64)], ignore_index=True)
    original, first = predictor.predict(work), loaded.predict(work)
    second = Predictor.from_json(loaded.to_json()).predict(work)
    pd.testing.assert_frame_equal(first, second, check_exact=True)
    numeric = [c for c in original.columns if c != "unseen"]
    np.testing.assert_allclose(first[numeric], original[numeric], rtol=1e-6)


def test_analytical_form_has_no_trees_and_predicts_the_analytical_model(rows):
    forms = {"power_w": "raw", "itl_s": "analytical", "energy_per_token_j": "analytical"}
    mixed = Predictor.fit(rows.iloc[::2], forms, constants=CONSTANTS)
    assert set(mixed.trees) == {"power_w"}
    work = pd.concat([_work(), _work("qwen3-8b", "L40S", batch=64)], ignore_index=True)
    predicted = mixed.predict(work)
    analytical = analytical_targets(work, CONSTANTS)
    for target in ("itl_s", "energy_per_token_j"):
        np.testing.assert_array_equal(predicted[target], analytical[target])
    assert not np.allclose(predicted["power_w"], analytical["power_w"])
    loaded = Predictor.from_json(mixed.to_json())
    assert loaded.to_json() == mixed.to_json()
    pd.testing.assert_frame_equal(loaded.predict(work), predicted)
    body = json.loads(mixed.to_json())
    body["forms"]["itl_s"] = "linear"
    with pytest.raises(ModelFileError, match="forms"):
        Predictor.from_json(json.dumps(body), "my.json")


def test_predictor_unseen_labels(predictor):
    work = pd.concat([_work(), _work(device="B200"), _work("qwen3-8b"),
                      _work("qwen3-8b", "B200")], ignore_index=True)
    assert predictor.unseen(work).tolist() == ["pair", "gpu", "llm", "gpu"]
    predicted = predictor.predict(work)
    assert predicted["unseen"].tolist() == ["pair", "gpu", "llm", "gpu"]


def test_predictor_intervals_bracket_the_value(predictor):
    work = pd.concat([_work(), _work(device="B200"), _work("qwen3-8b", batch=1)],
                     ignore_index=True)
    predicted = predictor.predict(work)
    for target in PREDICTED_TARGETS:
        low, value, high = (predicted[f"{target}{s}"].to_numpy() for s in ("_low", "", "_high"))
        assert (low <= value).all()
        assert (value <= high).all()
        for i, (kind, stack) in enumerate(zip(predicted["unseen"], work["engine"],
                                              strict=True)):
            lo, hi = INTERVALS[interval_key(kind, stack)][target]
            assert low[i] == pytest.approx(value[i] * math.exp(lo), rel=1e-12)
            assert high[i] == pytest.approx(value[i] * math.exp(hi), rel=1e-12)


def test_predictor_without_intervals_has_no_interval_columns(rows):
    bare = Predictor.fit(rows.iloc[::2], constants=CONSTANTS)
    predicted = bare.predict(_work())
    assert set(predicted.columns) == {*PREDICTED_TARGETS, "unseen"}


def test_predictor_refuses_an_unknown_stack_in_one_line(predictor):
    with pytest.raises(CalibrationError) as caught:
        predictor.predict(_work(engine="tensorrt-llm"))
    message = str(caught.value)
    assert "\n" not in message
    assert "'tensorrt-llm'" in message
    assert "known: hf, vllm, vllm-0.5" in message


def test_predictor_refuses_work_without_engine(predictor):
    with pytest.raises(CalibrationError, match="'engine'"):
        predictor.predict(_work().drop(columns="engine"))


@pytest.mark.parametrize(("text", "match"), [
    ("not json", "not a predictor file"),
    ("{}", "not a predictor file"),
    ("[1, 2]", "not a predictor file"),
    ('{"features": ["batch", "colour"]}', "other features"),
])
def test_bad_predictor_file_raises_model_file_error(text, match):
    with pytest.raises(ModelFileError, match=match):
        Predictor.from_json(text, "my.json")


def test_truncated_predictor_file_raises_model_file_error(predictor):
    body = json.loads(predictor.to_json())
    del body["trees"]["itl_s"]
    with pytest.raises(ModelFileError, match=r"my\.json: not a predictor file"):
        Predictor.from_json(json.dumps(body), "my.json")


def test_features_follow_the_declared_order(rows):
    some = rows.groupby("engine").head(2)
    table = features(some, analytical_targets(some, CONSTANTS))
    assert tuple(table.columns) == FEATURES
    assert np.isfinite(table.to_numpy(float)).all()
    # The stack is coded by its place in the registry: vllm 0, vllm-0.5 1, hf 2.
    assert table["engine"].tolist() == [float(list(STACKS).index(e)) for e in some["engine"]]
    assert dict(zip(some["engine"], table["engine"], strict=True)) == {
        "vllm": 0.0, "vllm-0.5": 1.0, "hf": 2.0}


# --- Baselines and measured targets ------------------------------------------------------


def test_load_rho():
    np.testing.assert_array_equal(load_rho(np.array([1, 8, 31, 32, 64, 512])),
                                  [0.6, 0.6, 0.6, 0.9, 0.9, 0.9])


@pytest.mark.parametrize(("batch", "rho"), [(32, 0.9), (16, 0.6)])
def test_baselines_by_hand(batch, rho):
    # llama-3.1-8b: 8.03 B parameters, 32 layers x 8 KV heads x 128 dims x 2 bytes x (K, V)
    # = 131072 bytes per token. H100-SXM: 700 W, 3350 GB/s.
    work = _work(batch=batch, tp=2, input_tokens=100, output_tokens=50)
    b = wattgpu_baselines(work).iloc[0]
    power = rho * 700.0
    itl = 2 * 8.03 / (2 * 3350.0)
    kv_gb = batch * (100 + 25) * 0.131072 / 1e3
    itl_kv = itl + kv_gb / (2 * 3350.0)
    assert b["tdp_power_w"] == pytest.approx(power, rel=1e-12)
    assert b["roofline_itl_s"] == pytest.approx(itl, rel=1e-12)
    assert b["roofline_kv_itl_s"] == pytest.approx(itl_kv, rel=1e-12)
    assert b["roofline_kv_itl_s"] > b["roofline_itl_s"]
    assert b["roofline_system_s_per_token"] == pytest.approx(itl / batch, rel=1e-12)
    assert b["roofline_energy_per_token_j"] == pytest.approx(power * 2 * itl / batch, rel=1e-12)
    assert b["roofline_kv_energy_per_token_j"] == pytest.approx(power * 2 * itl_kv / batch,
                                                                rel=1e-12)


def test_baselines_take_a_given_rho_and_extra_llms(tmp_path):
    spec = llm_from_config(_qwen3_config(tmp_path))
    work = _work(spec.name, "L40S", batch=8)
    b = wattgpu_baselines(work, {spec.name: spec}, rho=np.array([0.2])).iloc[0]
    assert b["tdp_power_w"] == pytest.approx(0.2 * 350.0)
    assert b["roofline_itl_s"] == pytest.approx(2 * spec.params_b / 864.0)


def test_measured_targets_from_energy_and_runtime():
    table = pd.DataFrame({"batch": [8.0, 1.0], "tp": [2, 1], "runtime_s": [10.0, 4.0],
                          "output_tokens": [100.0, 50.0], "energy_j": [500.0, 200.0]})
    got = measured_targets(table)
    np.testing.assert_allclose(got["power_w"], [500 * 8 / 10 / 2, 200 * 1 / 4 / 1])
    np.testing.assert_allclose(got["itl_s"], [10 / 100, 4 / 50])
    np.testing.assert_allclose(got["energy_per_token_j"], [500 / 100, 200 / 50])


def test_measured_targets_prefer_measured_power_and_itl():
    table = pd.DataFrame({"batch": [8.0, 8.0], "tp": [2, 2], "runtime_s": [10.0, 10.0],
                          "output_tokens": [100.0, 100.0], "energy_j": [500.0, 500.0],
                          "mean_power_w": [600.0, np.nan], "itl_s": [np.nan, 0.02]})
    got = measured_targets(table)
    np.testing.assert_allclose(got["power_w"], [600 / 2, 500 * 8 / 10 / 2])
    np.testing.assert_allclose(got["itl_s"], [10 / 100, 0.02])
    np.testing.assert_allclose(got["energy_per_token_j"], [5.0, 5.0])


# --- The shipped predictor ---------------------------------------------------------------


def _qwen3_config(tmp_path) -> str:
    """A small Qwen3-like model that is not in the catalog."""
    folder = tmp_path / "acme-qwen3-3b"
    folder.mkdir(exist_ok=True)
    config = {"_name_or_path": "acme/acme-qwen3-3b", "model_type": "qwen3",
              "architectures": ["Qwen3ForCausalLM"], "hidden_size": 2560,
              "intermediate_size": 9728, "num_hidden_layers": 36, "num_attention_heads": 32,
              "num_key_value_heads": 8, "head_dim": 128, "vocab_size": 151936,
              "max_position_embeddings": 40960, "tie_word_embeddings": True,
              "attention_bias": False, "torch_dtype": "bfloat16"}
    (folder / "config.json").write_text(json.dumps(config))
    return str(folder / "config.json")


def test_shipped_predictor_loads_and_names_its_data():
    shipped = shipped_predictor()
    assert shipped.stacks == ("hf", "vllm", "vllm-0.5")
    assert set(shipped.forms) == set(PREDICTED_TARGETS)
    assert set(shipped.intervals) == {interval_key(kind, stack) for kind in ("pair", "gpu", "llm")
                                      for stack in shipped.stacks}
    assert "B200" not in shipped.seen_gpus
    assert "L40S" not in shipped.seen_gpus
    assert {"A100-40GB", "H100-SXM"} <= set(shipped.seen_gpus)
    assert shipped.provenance["rows"] == 780


def test_shipped_predictor_on_unseen_gpus_and_an_unseen_llm(tmp_path):
    spec = llm_from_config(_qwen3_config(tmp_path))
    assert spec.name not in shipped_predictor().seen_llms
    work = pd.concat([_work(device="B200"), _work("llama-3.1-70b", "L40S", batch=8, tp=4),
                      _work(spec.name, "L40S", batch=16), _work(spec.name, "H100-SXM")],
                     ignore_index=True)
    predicted = shipped_predictor().predict(work, {spec.name: spec})
    assert predicted["unseen"].tolist() == ["gpu", "gpu", "gpu", "llm"]
    for target in PREDICTED_TARGETS:
        values = predicted[target].to_numpy()
        assert np.isfinite(values).all()
        assert (values > 0).all()
        assert (predicted[f"{target}_low"] <= predicted[target]).all()
        assert (predicted[target] <= predicted[f"{target}_high"]).all()
        assert (predicted[f"{target}_low"] < predicted[f"{target}_high"]).all()


@pytest.mark.parametrize(("llm", "gpu", "batch", "tp"), [
    ("llama-3.1-8b", "B200", 1, 1), ("llama-3.1-8b", "B200", 128, 1),
    ("llama-3.1-8b", "L40S", 32, 1), ("llama-3.1-70b", "L40S", 8, 4),
    ("mistral-7b", "A100-40GB", 64, 1), ("gemma-2-27b", "H100-SXM", 16, 2),
    ("qwen3-8b", "L4", 4, 1), ("mixtral-8x7b", "H200", 64, 2),
])
def test_shipped_power_per_gpu_lies_between_idle_and_tdp(llm, gpu, batch, tp):
    spec = get_device(gpu)
    power = shipped_predictor().predict(_work(llm, gpu, batch=batch, tp=tp))["power_w"].iloc[0]
    assert 0.5 * spec.idle_w < power < 1.2 * spec.tdp_w


def test_shipped_itl_is_lower_on_the_faster_gpu():
    work = pd.concat([_work(device="A100-40GB", batch=64), _work(device="H100-SXM", batch=64)],
                     ignore_index=True)
    itl = shipped_predictor().predict(work)["itl_s"].to_numpy()
    assert itl[1] <= itl[0] * 1.1


# --- Calibration -------------------------------------------------------------------------


def _calibration_rows(predictor: Predictor, factors: dict[str, float],
                      stack: str = "vllm") -> pd.DataFrame:
    """Measurement-schema rows of ``stack`` whose measured targets are that stack's prediction
    times factors."""
    work = pd.concat([_work("llama-3.1-8b", "L40S", batch=b, input_tokens=m, engine=stack)
                      for b, m in ((1, 128), (16, 512), (64, 1024))], ignore_index=True)
    predicted = predictor.predict(work)
    n, tp = work["output_tokens"], work["tp"]
    itl = predicted["itl_s"] * factors["itl_s"]
    return work.assign(
        energy_j=predicted["energy_per_token_j"] * factors["energy_per_token_j"] * n,
        runtime_s=itl * n * 1.7, itl_s=itl, mean_power_w=predicted["power_w"]
        * factors["power_w"] * tp, energy_kind="gross", source="synthetic")


@pytest.mark.parametrize("stack", ["vllm", "vllm-0.5", "hf"])
def test_calibration_recovers_known_factors(predictor, stack):
    """Three measured rows of a stack (today's vllm first) whose targets are the stack's
    prediction times known factors: the calibration recovers the factors."""
    measured = _calibration_rows(predictor, CALIBRATION_FACTORS, stack)
    assert set(measured["engine"]) == {stack}
    calibration = Calibration.fit(predictor, measured, stack)
    assert calibration.points == 3
    assert calibration.device == "L40S"
    assert calibration.stack == stack
    assert set(calibration.factors) == set(PREDICTED_TARGETS)
    for target, factor in CALIBRATION_FACTORS.items():
        assert calibration.factors[target] == pytest.approx(factor, rel=1e-6)
    # Applied to the stack's predictions, the calibration reproduces the measured targets.
    work = measured.loc[:, ["llm", "device", "input_tokens", "output_tokens", "batch", "tp",
                            "engine"]]
    calibrated = calibration.apply(predictor.predict(work))
    truth = measured_targets(measured)
    for target in PREDICTED_TARGETS:
        np.testing.assert_allclose(calibrated[target], truth[target], rtol=1e-6)


def test_calibration_is_relative_to_the_stack_it_names(predictor):
    """Rows measured as vllm x factors, calibrated as another stack, give other factors: the
    stacks' predictions differ, and the factors are measured / that stack's prediction."""
    measured = _calibration_rows(predictor, CALIBRATION_FACTORS, "vllm")
    as_vllm = Calibration.fit(predictor, measured, "vllm")
    as_old = Calibration.fit(predictor, measured, "vllm-0.5")
    work = measured.loc[:, ["llm", "device", "input_tokens", "output_tokens", "batch", "tp"]]
    targets = list(PREDICTED_TARGETS)
    ratio = (predictor.predict(work.assign(engine="vllm")).loc[:, targets]
             / predictor.predict(work.assign(engine="vllm-0.5")).loc[:, targets])
    for target in PREDICTED_TARGETS:
        assert as_old.factors[target] == pytest.approx(
            as_vllm.factors[target] * float(np.median(ratio[target])), rel=1e-6)
    assert as_old.factors != pytest.approx(as_vllm.factors, rel=1e-3)


def test_calibration_apply_scales_values_and_intervals(predictor):
    calibration = Calibration("vllm", dict(CALIBRATION_FACTORS), 3, "L40S")
    predicted = predictor.predict(pd.concat([_work(), _work(device="B200")], ignore_index=True))
    scaled = calibration.apply(predicted)
    for target, factor in CALIBRATION_FACTORS.items():
        for column in (target, f"{target}_low", f"{target}_high"):
            np.testing.assert_allclose(scaled[column], predicted[column] * factor, rtol=1e-12)
    assert scaled["unseen"].tolist() == predicted["unseen"].tolist()
    assert predicted["power_w"].iloc[0] != scaled["power_w"].iloc[0]  # A copy, not in place.


def test_calibration_refuses_no_rows(predictor):
    with pytest.raises(CalibrationError, match="no calibration rows"):
        Calibration.fit(predictor, _calibration_rows(predictor, CALIBRATION_FACTORS).iloc[:0],
                        "vllm")


# --- The cost chain ----------------------------------------------------------------------


def _chain_work() -> pd.DataFrame:
    return pd.concat([_work(device="EPYC-7742", batch=4), _work(device="B200", tp=2),
                      _work("gemma-2-9b", "A100-40GB", batch=8),
                      _work("mistral-7b", "Xeon-Platinum-8480+", batch=1)],
                     ignore_index=True).drop(columns="engine")


def test_chain_prices_gpus_with_the_predictor_and_cpus_analytically(predictor):
    work = _chain_work()
    costs = default_chain(predictor=predictor).costs(work)
    assert costs["source"].tolist() == ["analytical:cpu", "predicted:vllm", "predicted:vllm",
                                        "analytical:cpu"]
    gpu = [1, 2]
    predicted = predictor.predict(work.iloc[gpu].assign(engine="vllm"))
    np.testing.assert_allclose(costs["energy_j"].iloc[gpu],
                               predicted["energy_per_token_j"] * work["output_tokens"].iloc[gpu],
                               rtol=1e-12)
    np.testing.assert_allclose(costs["power_w"].iloc[gpu],
                               predicted["power_w"] * work["tp"].iloc[gpu], rtol=1e-12)
    np.testing.assert_allclose(costs["itl_s"].iloc[gpu], predicted["itl_s"], rtol=1e-12)
    np.testing.assert_allclose(costs["energy_j"], costs["power_w"] * costs["replica_s"],
                               rtol=1e-9)


def test_chain_uses_the_shipped_predictor_by_default_and_not_with_predict_false():
    work = _chain_work()
    assert default_chain().costs(work)["source"].tolist() == [
        "analytical:cpu", "predicted:vllm", "predicted:vllm", "analytical:cpu"]
    assert default_chain(predict=False).costs(work)["source"].tolist() == [
        "analytical:cpu", "analytical:vllm", "analytical:vllm", "analytical:cpu"]


def test_predicted_source_names_a_calibration_and_skips_unknown_stacks(predictor):
    calibration = Calibration("vllm", dict(CALIBRATION_FACTORS), 3, "L40S")
    work = _chain_work()
    source = PredictedSource(predictor, "vllm", calibration)
    assert source.name == "predicted:vllm:calibrated"
    assert source.covers(work).tolist() == [False, True, True, False]
    plain = PredictedSource(predictor, "vllm").costs(work.iloc[[1, 2]])
    scaled = source.costs(work.iloc[[1, 2]])
    np.testing.assert_allclose(scaled["energy_j"], plain["energy_j"] * 1.5, rtol=1e-12)
    assert not PredictedSource(predictor, "sglang").covers(work).any()
    # A stack the predictor lacks falls through to the analytical model.
    vllm_only = dataclasses.replace(predictor, constants={"vllm": CONSTANTS["vllm"]})
    costs = default_chain("hf", predictor=vllm_only).costs(work)
    assert costs["source"].tolist() == ["analytical:cpu", "analytical:hf", "analytical:hf",
                                        "analytical:cpu"]


def test_power_cap_below_predicted_power_stretches_time_and_keeps_energy(predictor):
    work = _chain_work().iloc[[1, 2]]
    chain = default_chain(predictor=predictor)
    free = chain.costs(work)
    per_gpu = free["power_w"].to_numpy() / work["tp"].to_numpy()
    cap = 0.5 * per_gpu
    capped = chain.costs(work.assign(power_cap_w=cap))
    stretch = per_gpu / cap
    assert (capped["runtime_s"] > free["runtime_s"]).all()
    assert (capped["ttft_s"] > free["ttft_s"]).all()
    np.testing.assert_allclose(capped["energy_j"], free["energy_j"], rtol=1e-9)
    np.testing.assert_allclose(capped["power_w"], cap * work["tp"].to_numpy(), rtol=1e-9)
    np.testing.assert_allclose(capped["itl_s"], free["itl_s"] * stretch, rtol=1e-9)
    np.testing.assert_allclose(capped["replica_s"], free["replica_s"] * stretch, rtol=1e-9)


def test_power_cap_above_every_power_changes_nothing(predictor):
    work = _chain_work().iloc[[1, 2]]
    chain = default_chain(predictor=predictor)
    free = chain.costs(work)
    tdp = work["device"].map(lambda name: get_device(name).tdp_w).to_numpy()
    loose = chain.costs(work.assign(power_cap_w=[10.0 * tdp[0], np.nan]))
    pd.testing.assert_frame_equal(loose, free, rtol=1e-12)


# --- The evaluation harness --------------------------------------------------------------


def test_mdape_by_hand():
    assert mdape(np.array([110.0, 90.0, 100.0]), np.array([100.0, 100.0, 100.0])) == \
        pytest.approx(10.0)
    assert mdape(np.array([2.0, 1.0, 3.0, 4.0]), np.array([1.0, 1.0, 1.0, 1.0])) == \
        pytest.approx(150.0)


def _ranking_rows() -> pd.DataFrame:
    return pd.DataFrame({
        "llm": ["a", "a", "a", "b", "b", "b", "c"],
        "device": ["V100", "A100", "H100", "V100", "A100", "H100", "H100"],
        "engine": "vllm", "config": "x", "tp": 1,
        "power_w": [100.0, 200.0, 300.0, 150.0, 250.0, 350.0, 50.0],
    })


def test_mean_kendall_perfect_reversed_and_single_gpu_groups():
    rows = _ranking_rows()
    perfect = np.array([1.0, 2.0, 3.0, 1.0, 2.0, 3.0, 99.0])
    assert mean_kendall(rows, perfect, "power_w", "gpu") == (pytest.approx(1.0), 2)
    reversed_ = np.array([3.0, 2.0, 1.0, 3.0, 2.0, 1.0, 99.0])
    assert mean_kendall(rows, reversed_, "power_w", "gpu") == (pytest.approx(-1.0), 2)
    mixed = np.array([1.0, 2.0, 3.0, 3.0, 2.0, 1.0, 0.0])
    assert mean_kendall(rows, mixed, "power_w", "gpu") == (pytest.approx(0.0), 2)
    # Ranking LLMs per GPU: V100 and A100 see a and b, H100 sees a, b and c.
    assert mean_kendall(rows, rows["power_w"].to_numpy(), "power_w", "llm") == \
        (pytest.approx(1.0), 3)
    assert mean_kendall(rows, -rows["power_w"].to_numpy(), "power_w", "llm") == \
        (pytest.approx(-1.0), 3)
    assert math.isnan(mean_kendall(rows.iloc[[6]], np.array([1.0]), "power_w", "gpu")[0])


def test_winner_accuracy_by_hand():
    """Pairs of different GPUs, same LLM and scenario: group a has two H100 rows (their pair
    is not a GPU pair), group b is ranked backwards, and the lone hf row and llm c have no
    other GPU in their group."""
    rows = pd.DataFrame({
        "llm": ["a", "a", "a", "a", "b", "b", "b", "a", "c"],
        "device": ["V100", "A100", "H100", "H100", "V100", "A100", "H100", "A40", "H100"],
        "engine": ["vllm"] * 7 + ["hf", "vllm"], "config": "x", "tp": 1,
        "power_w": [1.0, 2.0, 3.0, 4.0, 1.0, 2.0, 3.0, 100.0, 5.0],
    })
    # Group a: the five cross-GPU pairs right, the H100-H100 pair wrong (not counted).
    # Group b: all three pairs wrong. The A40 (hf) row would be wrong against every row of
    # group a were the stack not part of the scenario.
    predicted = np.array([1.0, 2.0, 4.0, 3.0, 3.0, 2.0, 1.0, -100.0, 0.0])
    share, pairs = winner_accuracy(rows, predicted, "power_w")
    assert pairs == 5 + 3
    assert share == pytest.approx(5 / 8)
    assert winner_accuracy(rows, rows["power_w"].to_numpy(), "power_w") == (1.0, 8)
    share, pairs = winner_accuracy(rows.iloc[[7, 8]], predicted[[7, 8]], "power_w")
    assert pairs == 0
    assert math.isnan(share)


def _choice_rows() -> tuple[pd.DataFrame, pd.DataFrame]:
    """Eleven GPUs (55 pairs) for one LLM, measured 1, 2, 4, ... 1024 for every target, and
    one row of a stack no fold predicted. Each form predicts measured x a scale, with some
    neighbours swapped (each swap is one wrong pair; the MdAPE stays the scale's)."""
    measured = 2.0 ** np.arange(11)
    rows = pd.DataFrame({"llm": "a", "device": [f"g{i}" for i in range(11)], "engine": "vllm",
                         "config": "x", "tp": 1,
                         **dict.fromkeys(PREDICTED_TARGETS, measured)})
    rows = pd.concat([rows, pd.DataFrame([{"llm": "a", "device": "g0", "engine": "hf",
                                           "config": "x", "tp": 1,
                                           **dict.fromkeys(PREDICTED_TARGETS, 7.0)}])],
                     ignore_index=True)

    def predicted(scale: float, swaps: tuple[int, ...] = ()) -> np.ndarray:
        values = measured * scale
        for i in swaps:
            values[[i, i + 1]] = values[[i + 1, i]]
        return np.append(values, np.nan)

    oof = pd.DataFrame({
        # power: the most accurate form (correction) misranks two pairs of 55, beyond the
        # slack; raw ranks every pair right and is next most accurate.
        "power_w:physics": predicted(1.3), "power_w:correction": predicted(1.05, (2, 7)),
        "power_w:raw": predicted(1.1),
        # ITL: every form ranks right; the lowest MdAPE wins.
        "itl_s:physics": predicted(1.1), "itl_s:correction": predicted(1.05),
        "itl_s:raw": predicted(1.2),
        # energy: correction misranks one pair (within the slack) and is more accurate than
        # physics; raw is the most accurate but misranks two.
        "energy_per_token_j:physics": predicted(1.1),
        "energy_per_token_j:correction": predicted(1.05, (4,)),
        "energy_per_token_j:raw": predicted(1.02, (1, 8)),
        # The analytical model alone ranks every pair right but is the least accurate: it is
        # kept only where no learned form ranks as well (the last case below).
        **{f"{t}:analytical": predicted(1.4) for t in PREDICTED_TARGETS},
    })
    return rows, oof


def test_choose_forms_ranks_gpus_first_then_takes_the_lowest_mdape():
    assert 1 / 55 < RANKING_SLACK < 2 / 55  # The premise of the cases below.
    rows, oof = _choice_rows()
    assert set(oof.columns) == {f"{t}:{f}" for t in PREDICTED_TARGETS for f in PREDICTOR_FORMS}
    predicted = oof.iloc[:11]
    assert winner_accuracy(rows.iloc[:11], predicted["power_w:correction"], "power_w") == \
        (pytest.approx(53 / 55), 55)
    assert mdape(predicted["power_w:correction"], rows["power_w"].iloc[:11]) == \
        pytest.approx(5.0)
    forms = choose_forms(rows, oof)
    assert forms == {"power_w": "raw", "itl_s": "correction",
                     "energy_per_token_j": "correction"}
    # Without the unpredicted row the choice is the same: it is ignored, not scored.
    assert choose_forms(rows.iloc[:11], oof.iloc[:11]) == forms
    # Where every learned form misranks two pairs, the analytical model is kept.
    rows, oof = _choice_rows()
    for form in ("physics", "correction", "raw"):
        oof[f"energy_per_token_j:{form}"] = oof["energy_per_token_j:raw"]
    assert choose_forms(rows, oof)["energy_per_token_j"] == "analytical"


@pytest.mark.parametrize(("n", "low_rank", "high_rank"), [(9, 1, 9), (19, 2, 18), (29, 3, 27),
                                                          (10, 1, 10), (20, 2, 19)])
def test_conformal_bounds_by_hand(n, low_rank, high_rank):
    """Ranks floor((n + 1) 0.1) and ceil((n + 1) 0.9) of the sorted finite values: 9 values
    give the extremes, 19 the second smallest and second largest."""
    rng = np.random.default_rng(n)
    values = rng.permutation(np.linspace(-1.0, 2.0, n))
    ordered = np.sort(values)
    assert conformal_bounds(values) == (ordered[low_rank - 1], ordered[high_rank - 1])
    # Non-finite residuals (unpredicted rows) are left out, not ranked.
    padded = np.concatenate([values, [np.nan, np.inf, -np.inf]])
    assert conformal_bounds(padded) == (ordered[low_rank - 1], ordered[high_rank - 1])


def test_conformal_bounds_by_hand_on_9_and_19_values():
    nine = np.array([0.3, -0.2, 0.0, 0.1, -0.4, 0.5, 0.2, -0.1, 0.4])
    assert conformal_bounds(nine) == (-0.4, 0.5)
    nineteen = np.arange(19.0) - 9.0  # -9 .. 9
    assert conformal_bounds(nineteen[::-1]) == (-8.0, 8.0)


def test_residual_intervals_take_conformal_bounds_of_the_kept_form_per_stack():
    ratios = np.linspace(0.8, 1.25, 19)  # measured / predicted
    rows = pd.DataFrame({t: np.full(40, 2.0) for t in PREDICTED_TARGETS})
    rows["engine"] = ["vllm"] * 20 + ["hf"] * 20
    kept = np.append(2.0 / ratios, np.nan)  # The last row of each stack is unpredicted.
    kept = np.concatenate([kept, kept * 2.0])  # hf's predictions doubled.
    oof = pd.DataFrame({f"{t}:{f}": kept if f == "correction" else kept * 3.0
                        for t in PREDICTED_TARGETS for f in PREDICTOR_FORMS})
    forms = dict.fromkeys(PREDICTED_TARGETS, "correction")
    intervals = residual_intervals(rows, {"gpu": oof, "llm": oof * 2.0}, forms)
    assert set(intervals) == {interval_key(split, stack) for split in ("gpu", "llm")
                              for stack in ("vllm", "hf")}
    log_ratio = np.sort(np.log(ratios))
    for target in PREDICTED_TARGETS:
        lo, hi = intervals["gpu:vllm"][target]
        assert lo == pytest.approx(log_ratio[1], rel=1e-12)  # ranks floor(20 * 0.1), ceil(20 * 0.9)
        assert hi == pytest.approx(log_ratio[17], rel=1e-12)
        assert lo < 0 < hi
        for key, shift in (("gpu:hf", 1), ("llm:vllm", 1), ("llm:hf", 2)):
            lo2, hi2 = intervals[key][target]  # Each doubling moves residuals down by log 2.
            assert lo2 == pytest.approx(lo - shift * math.log(2.0), rel=1e-12)
            assert hi2 == pytest.approx(hi - shift * math.log(2.0), rel=1e-12)


def test_interval_coverage_is_cross_conformal_per_stack():
    """Four GPUs (the leave-one-GPU-out folds), ten rows each with log(measured / predicted)
    r = -1 .. 1, but r + 5 on g3; g0, g1 serve vllm, g2, g3 hf. A fifth GPU's rows (a third
    stack) are unpredicted.

    Each held-out GPU is calibrated on its stack's other GPU alone (ten residuals: ranks 1
    and 10, the extremes). vllm: g0 and g1 hold the same r, so every row is inside. hf: g2's
    bounds are r + 5 and g3's are r, so no row is; pooled over stacks both would be mixed."""
    r = np.linspace(-1.0, 1.0, 10)
    residual = np.concatenate([r, r, r, r + 5.0, np.full(4, np.nan)])
    device = np.repeat(["g0", "g1", "g2", "g3", "g4"], [10, 10, 10, 10, 4])
    engine = np.repeat(["vllm", "vllm", "hf", "hf", "vllm-0.5"], [10, 10, 10, 10, 4])
    rows = pd.DataFrame({"llm": "a", "device": device, "engine": engine,
                         **{t: np.ones(len(device)) for t in PREDICTED_TARGETS}})
    oof = pd.DataFrame({f"{t}:{f}": np.exp(-residual) for t in PREDICTED_TARGETS
                        for f in PREDICTOR_FORMS})
    forms = dict.fromkeys(PREDICTED_TARGETS, "physics")
    coverage = interval_coverage(rows, {"gpu": oof}, forms)
    assert set(coverage.columns) >= {"split", "stack", "target", "rows", "coverage"}
    assert len(coverage) == 2 * len(PREDICTED_TARGETS)  # No line for the unpredicted stack.
    by = coverage.set_index(["stack", "target"])
    for target in PREDICTED_TARGETS:
        assert by.loc[("vllm", target), "rows"] == 20
        assert by.loc[("vllm", target), "coverage"] == 1.0
        assert by.loc[("hf", target), "rows"] == 20
        assert by.loc[("hf", target), "coverage"] == 0.0
    assert set(coverage["split"]) == {"gpu"}


def test_calibration_effect_recovers_a_new_stack(rows):
    # A "new" stack: the vllm rows measured 1.3x / 0.8x / 1.5x of the trained stack.
    vllm = rows[rows["engine"] == "vllm"]
    new = vllm.assign(engine="hf", **{t: vllm[t] * f for t, f in CALIBRATION_FACTORS.items()})
    table = pd.concat([vllm, new], ignore_index=True)
    effect = calibration_effect(
        table, train=table["engine"] == "vllm",
        calibrate_on=(table["engine"] == "hf") & (table["device"] == "A100-40GB"),
        evaluate_on=(table["engine"] == "hf") & (table["device"] == "H100-SXM"),
        stack="vllm", repeats=3, seed=1).set_index("target")
    for target, factor in CALIBRATION_FACTORS.items():
        # Before: the trained stack's numbers, off by 1 / factor from the new stack's.
        assert effect.loc[target, "before_pct"] == pytest.approx(abs(1 / factor - 1) * 100,
                                                                 abs=2)
        assert effect.loc[target, "after_pct"] < 3.0
        assert effect.loc[target, "after_min_pct"] <= effect.loc[target, "after_pct"]
        assert effect.loc[target, "after_pct"] <= effect.loc[target, "after_max_pct"]


def test_out_of_fold_predictions_come_from_the_fold_that_held_the_row_out(rows):
    subset = rows[rows["engine"] == "vllm"].reset_index(drop=True)
    oof = out_of_fold(subset, "gpu")
    assert set(oof.columns) == {f"{t}:{f}" for t in PREDICTED_TARGETS for f in PREDICTOR_FORMS}
    assert np.isfinite(oof.to_numpy()).all()
    held = (subset["device"] == "H100-SXM").to_numpy()
    train = subset.loc[~held]
    for form in ("raw", "physics", "analytical"):
        refit = Predictor.fit(train, dict.fromkeys(PREDICTED_TARGETS, form)).predict(
            subset.loc[held])
        for target in PREDICTED_TARGETS:
            np.testing.assert_allclose(oof.loc[held, f"{target}:{form}"], refit[target],
                                       rtol=1e-9)


def test_out_of_fold_leaves_a_held_out_whole_stack_unpredicted(rows):
    """Holding out the A100 holds out every hf row: they stay NaN (no constants for hf in
    that fold), while the fold's vllm rows and the other fold's rows are predicted."""
    subset = rows[((rows["engine"] == "hf") & (rows["device"] == "A100-40GB"))
                  | (rows["engine"] == "vllm")].reset_index(drop=True)
    messages = []
    oof = out_of_fold(subset, "gpu", messages.append)
    assert messages == ["leave one GPU out: A100-40GB", "leave one GPU out: H100-SXM"]
    hf = (subset["engine"] == "hf").to_numpy()
    assert oof.loc[hf].isna().all().all()
    assert np.isfinite(oof.loc[~hf].to_numpy()).all()
    held = ((subset["device"] == "A100-40GB") & (subset["engine"] == "vllm")).to_numpy()
    refit = Predictor.fit(subset.loc[subset["device"] == "H100-SXM"],
                          dict.fromkeys(PREDICTED_TARGETS, "raw")).predict(subset.loc[held])
    for target in PREDICTED_TARGETS:
        np.testing.assert_allclose(oof.loc[held, f"{target}:raw"], refit[target], rtol=1e-9)
    # The scores and the choice of form count the predicted rows only.
    forms = choose_forms(subset, oof)
    assert set(forms.values()) <= set(PREDICTOR_FORMS)
    table = scores(subset, oof, forms)
    assert (table["rows"] == int((~hf).sum())).all()
    assert np.isfinite(table["mdape_pct"]).all()
    assert {"gpu_winner_acc", "gpu_pairs"} <= set(table.columns)


def test_training_rows_from_mlenergy(mlenergy_rows):
    from tests.conftest import SHARED_DATA

    rows = mlenergy_rows
    origin = rows["source"].str.split(":").str[0]
    counts = origin.value_counts().to_dict()
    assert counts.pop("mlenergy-v1") == 236
    assert counts.pop("mlenergy-v2") == 297
    assert counts.pop("mlenergy-v3") == 222
    if (SHARED_DATA / "powertrace").is_dir():
        assert counts.pop("powertrace") > 0
    assert counts == {}
    engine_of = {"mlenergy-v1": "hf", "mlenergy-v2": "vllm-0.5", "mlenergy-v3": "vllm",
                 "powertrace": "vllm"}
    assert (rows["engine"] == origin.map(engine_of)).all()
    for column in ("engine_version", "itl_definition"):
        assert rows[column].notna().all()
        assert (rows[column].str.len() > 0).all()
    # Every row names the engine release that measured it, one of its family's.
    versions = rows.groupby(origin)["engine_version"].unique()
    assert [len(v) for v in versions] == [1] * len(versions)
    assert "0.11" in versions["mlenergy-v3"][0]
    assert "0.5.4" in versions["mlenergy-v2"][0]
    for engine, version in rows.groupby(["engine", "engine_version"]).size().index:
        # The release number (or, without one, the engine's name) is one the family lists.
        number = re.search(r"\d+(\.\d+)+", version)
        key = number.group(0) if number else version.split("(")[0].strip()
        assert any(key in v for v in STACKS[engine].measured_versions), version
    assert (rows["itl_definition"] == rows["engine"].map(
        lambda e: STACKS[e].itl_definition)).all()
    assert (rows.loc[rows["engine"] == "hf", "batch"] == 1).all()
    assert set(rows.loc[origin == "mlenergy-v3", "device"]) == {"H100-SXM"}
    for target in (*PREDICTED_TARGETS, "tpot_s"):
        assert (rows[target] > 0).all()
    tdp = rows["device"].map(lambda name: get_device(name).tdp_w)
    assert (rows["power_w"] < 1.05 * tdp).all()
    assert all(get_llm(name).name == name for name in rows["llm"].unique())


def test_folds_per_gpu_are_disjoint_and_cover_every_row(mlenergy_rows):
    gpu = list(folds(mlenergy_rows, "gpu"))
    assert [name for name, _ in gpu] == sorted(mlenergy_rows["device"].unique())
    masks = np.array([mask for _, mask in gpu])
    assert (masks.sum(axis=0) == 1).all()
    for name, mask in gpu:
        assert set(mlenergy_rows.loc[mask, "device"]) == {name}


def test_pair_folds_keep_each_pair_together(mlenergy_rows):
    pair = list(folds(mlenergy_rows, "pair"))
    assert len(pair) == 5
    masks = np.array([mask for _, mask in pair])
    assert (masks.sum(axis=0) == 1).all()
    fold_of = np.argmax(masks, axis=0)
    pairs = mlenergy_rows["llm"] + " @ " + mlenergy_rows["device"]
    assert pd.Series(fold_of).groupby(pairs.to_numpy()).nunique().eq(1).all()
    assert all(mask.any() for mask in masks)
    llm = list(folds(mlenergy_rows, "llm"))
    assert len(llm) == mlenergy_rows["llm"].nunique()
