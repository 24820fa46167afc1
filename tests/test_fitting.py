"""Selection by cross-validation, the R² gate, saved models, the fitted cost source and the
sweet spot."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pandas as pd
import pytest

from energy_models.analytical.model import analytical_costs, shipped_constants
from energy_models.analytical.sweetspot import heat_map, sweet_spot
from energy_models.cost import AnalyticalSource, CostChain, FittedSource, default_chain
from energy_models.errors import DomainWarning, ModelFileError
from energy_models.measurements.schema import Measurements
from energy_models.regression.fitting import FittedModels, fit_all, fit_target
from tests.conftest import analytical_measurements


@pytest.fixture(scope="module")
def clean() -> Measurements:
    return analytical_measurements(batches=(1, 8, 32))


@pytest.fixture(scope="module")
def models(clean) -> FittedModels:
    noisy = analytical_measurements("qwen2.5-14b", "A100-40GB", noise=0.6, seed=3)
    return fit_all(clean + noisy)


def test_smooth_data_passes_the_gate_with_a_non_negative_form(models):
    energy = next(m for m in models.models if m.llm == "llama-3.1-8b" and m.target == "energy_j")
    assert not energy.refused
    assert energy.cv_r2 >= 0.99
    assert energy.cv_mape < 10
    assert energy.domain == {"input_tokens": (64, 2048), "output_tokens": (16, 512),
                             "batch": (1, 32)}
    assert "n/b" in energy.terms  # batch varies, so the decode term scales with it
    chosen = next(c for c in energy.candidates if c.form == energy.form)
    assert chosen.domain_min >= 0
    assert min(c.cv_mape for c in energy.candidates if c.cv_r2 >= 0.96 and c.domain_min >= 0) \
        == pytest.approx(energy.cv_mape)


def test_noisy_data_is_refused_with_the_pair_and_the_r2(models):
    noisy = [m for m in models.models if m.llm == "qwen2.5-14b"]
    assert {m.target for m in noisy} == {"energy_j", "runtime_s"}
    assert all(m.refused for m in noisy)
    assert all(m.reason.startswith("best CV R² ") and "below the gate 0.96" in m.reason
               for m in noisy)
    usable, reason = models.usable("qwen2.5-14b", "A100-40GB", 1, "vllm")
    assert usable == {}
    assert "energy_j fit refused" in reason


def test_a_lower_gate_accepts_what_the_default_refuses():
    noisy = analytical_measurements("qwen2.5-14b", "A100-40GB", noise=0.6, seed=3).table
    strict = fit_target(noisy, "energy_j")
    lenient = fit_target(noisy, "energy_j", gate=strict.candidates[0].cv_r2 - 1.0)
    assert strict.refused
    assert not lenient.refused


def test_too_few_configurations_and_mixed_energy_kinds_are_refused(clean):
    few = clean.table[clean.table.config.isin(clean.table.config.unique()[:2])]
    assert "only 2 distinct configuration(s)" in fit_target(few, "energy_j").reason
    mixed = clean.table.assign(energy_kind=["gross", "idle_subtracted"] * (len(clean.table) // 2))
    assert "mixes gross and idle-subtracted" in fit_target(mixed, "energy_j").reason


def test_save_load_round_trip_is_exact(models, tmp_path):
    path = tmp_path / "models.json"
    path.write_text(models.to_json())
    again = FittedModels.load(path)
    assert again.to_json() == models.to_json()
    X = np.array([[100.0, 50.0, 4.0], [1500.0, 400.0, 16.0]])
    for before, after in zip(models.models, again.models, strict=True):
        if not before.refused:
            assert after.predict(X) == pytest.approx(before.predict(X), rel=0, abs=0)


def test_fits_are_deterministic(clean):
    assert fit_all(clean, seed=4).to_json() == fit_all(clean, seed=4).to_json()


@pytest.mark.parametrize(("text", "message"), [
    ("{not json", "not JSON"),
    ('{"format": "other"}', "format: expected"),
    ('{"format": "wattsched-models/1", "gate_r2": 0.96, "folds": 5, "seed": 0, '
     '"data": {"hash": "x", "rows": 1}, "models": [{"llm": "x"}]}',
     r"models\[0\]\.device: missing"),
])
def test_bad_model_files_fail_clearly(tmp_path, text, message):
    path = tmp_path / "m.json"
    path.write_text(text)
    with pytest.raises(ModelFileError, match=message):
        FittedModels.load(path)


def test_prediction_outside_the_domain_warns_once(models):
    energy = next(m for m in models.models if m.llm == "llama-3.1-8b" and m.target == "energy_j")
    energy._warned = False
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        energy.predict(np.array([[100.0, 50.0, 4.0]]))
        energy.predict(np.array([[4000.0, 50.0, 4.0]]))
        energy.predict(np.array([[8000.0, 50.0, 4.0]]))
    messages = [str(w.message) for w in caught if w.category is DomainWarning]
    assert len(messages) == 1
    assert "input_tokens 4,000-4,000 (measured 64-2,048)" in messages[0]


def work(**overrides) -> pd.DataFrame:
    row = {"llm": "llama-3.1-8b", "device": "H100-SXM", "input_tokens": 512.0,
           "output_tokens": 128.0, "batch": 8.0, "tp": 1}
    return pd.DataFrame([{**row, **overrides}])


def test_fitted_source_prices_what_was_measured_and_leaves_the_rest(models):
    chain = default_chain("vllm", models)
    rows = pd.concat([work(), work(batch=128.0), work(tp=2), work(llm="qwen2.5-14b",
                                                                   device="A100-40GB")],
                     ignore_index=True)
    costs = chain.costs(rows)
    assert costs.source.iloc[0].startswith("fitted:")
    assert costs.source.iloc[1:].tolist() == ["predicted:vllm"] * 3
    notes = chain.notes()
    assert "fits cover only tp1 batch 1-32" in notes[("llama-3.1-8b", "H100-SXM")]
    assert "refused" in notes[("qwen2.5-14b", "A100-40GB")]

    energy = next(m for m in models.models if m.llm == "llama-3.1-8b" and m.target == "energy_j")
    runtime = next(m for m in models.models
                   if m.llm == "llama-3.1-8b" and m.target == "runtime_s")
    X = rows.loc[[0], ["input_tokens", "output_tokens", "batch"]].to_numpy(float)
    assert costs.energy_j.iloc[0] == pytest.approx(energy.predict(X)[0])
    assert costs.runtime_s.iloc[0] == pytest.approx(runtime.predict(X)[0])
    assert costs.replica_s.iloc[0] == pytest.approx(runtime.predict(X)[0] / 8.0)
    truth = analytical_costs(rows.loc[[0]], shipped_constants()["vllm-0.5"])  # The data's.
    assert costs.energy_j.iloc[0] == pytest.approx(truth.energy_j.iloc[0], rel=0.2)
    # Without a fitted ITL, the stack's analytical ITL is scaled by fitted / analytical runtime.
    # Today's vLLM streams a token per decode step: its ITL is the step.
    latency = analytical_costs(rows.loc[[0]], shipped_constants()["vllm"], itl_is_step=True)
    scale = costs.runtime_s.iloc[0] / latency.runtime_s.iloc[0]
    assert costs.itl_s.iloc[0] == pytest.approx(latency.itl_s.iloc[0] * scale)


def test_idle_subtracted_fits_get_the_idle_energy_back(clean):
    gross = fit_all(clean)
    idle_w = 120.0
    measured = analytical_costs(clean.table, shipped_constants()["vllm-0.5"])
    net = clean.table.assign(
        energy_j=clean.table.energy_j - idle_w * measured.replica_s.to_numpy(),
        energy_kind="idle_subtracted", idle_power_w=idle_w)
    subtracted = fit_all(Measurements(net))
    row = work()
    for fitted in (gross, subtracted):
        source = FittedSource(fitted, "vllm")
        assert source.covers(row).all()
    a = FittedSource(gross, "vllm").costs(row)
    b = FittedSource(subtracted, "vllm").costs(row)
    assert b.idle_power_w.iloc[0] == idle_w
    net_model = next(m for m in subtracted.models if m.target == "energy_j")
    X = row.loc[:, ["input_tokens", "output_tokens", "batch"]].to_numpy(float)
    assert b.energy_j.iloc[0] == pytest.approx(net_model.predict(X)[0]
                                               + idle_w * b.replica_s.iloc[0])
    assert b.energy_j.iloc[0] == pytest.approx(a.energy_j.iloc[0], rel=0.15)


def test_a_power_cap_stretches_time_and_keeps_energy(models):
    source = FittedSource(models, "vllm")
    free = source.costs(work())
    capped = source.costs(work(power_cap_w=free.power_w.iloc[0] / 2))
    assert capped.energy_j.iloc[0] == pytest.approx(free.energy_j.iloc[0])
    assert capped.runtime_s.iloc[0] == pytest.approx(2 * free.runtime_s.iloc[0])
    assert capped.power_w.iloc[0] == pytest.approx(free.power_w.iloc[0] / 2)


def test_sweet_spot_of_the_sweetspot_form_matches_its_closed_form():
    m = np.repeat([64.0, 256.0, 1024.0], 6)
    n = np.tile([8.0, 32.0, 128.0, 512.0, 1024.0, 2048.0], 3)
    c0, c1, c2, c3, c4, c5 = 400.0, 0.5, 1e-4, 2.0, 1e-3, 2e-3
    energy = c0 + c1 * m + c2 * m**2 + c3 * n + c4 * m * n + c5 * n**2
    table = pd.DataFrame({"llm": "llama-3.1-8b", "device": "H100-SXM", "tp": 1, "batch": 1.0,
                          "input_tokens": m, "output_tokens": n, "energy_j": energy,
                          "runtime_s": energy / 300, "energy_kind": "gross", "source": "t"})
    from energy_models.measurements.schema import validate

    fitted = fit_all(validate(table, "t"))
    energy_model = next(x for x in fitted.models if x.target == "energy_j")
    assert energy_model.form == "sweetspot"
    chain = CostChain([FittedSource(fitted, "vllm"), AnalyticalSource()])
    spot = sweet_spot(chain, "llama-3.1-8b", "H100-SXM", 256, models=fitted)
    expected = np.sqrt((c0 + c1 * 256 + c2 * 256**2) / c5)
    assert spot.closed_form_tokens == pytest.approx(expected, rel=1e-3)
    assert spot.output_tokens == pytest.approx(expected, rel=0.02)
    assert spot.source == "fitted:vllm:sweetspot"
    assert not spot.at_edge
    assert spot.spread > 1


def test_analytical_sweet_spot_and_heat_map():
    spot = sweet_spot(default_chain(predict=False), "llama-3.1-8b", "H100-SXM", 512, batch=8)
    per_token = spot.curve.energy_per_token_j.to_numpy()
    assert spot.energy_per_token_j == pytest.approx(per_token.min())
    assert per_token[0] > spot.energy_per_token_j < per_token[-1]
    figure = heat_map(default_chain(predict=False), "llama-3.1-8b", "H100-SXM", batch=8,
                      mark_input_tokens=512)
    axes = figure.axes[0]
    assert axes.get_xscale() == "log"
    assert "sweet spot" in axes.get_legend().texts[0].get_text()


def test_models_json_carries_credentials(models):
    body = json.loads(models.to_json())
    entry = next(m for m in body["models"] if m["llm"] == "llama-3.1-8b")
    for key in ("form", "coef", "cv_r2", "cv_mape", "rows", "data_hash", "domain", "refused"):
        assert key in entry
    assert entry["data_hash"].startswith("sha256:")


def test_sweet_spot_outside_the_fitted_batches_uses_the_analytical_range(models):
    chain = default_chain("vllm", models, predict=False)
    inside = sweet_spot(chain, "llama-3.1-8b", "H100-SXM", 512, batch=8, models=models)
    outside = sweet_spot(chain, "llama-3.1-8b", "H100-SXM", 512, batch=64, models=models)
    assert inside.source.startswith("fitted:")
    assert inside.searched == (16, 512)
    assert outside.source == "analytical:vllm"
    assert outside.searched[0] == 1


def test_a_pair_with_too_few_rows_is_listed_as_refused(clean):
    few = Measurements(clean.table.iloc[:2])
    fitted = fit_all(few)
    assert {m.target for m in fitted.models} == {"energy_j", "runtime_s"}
    assert all(m.refused and "distinct configuration" in m.reason for m in fitted.models)


def test_summary_numbers_are_finite_or_none():
    from energy_models.regression.fitting import finite_or_none

    assert finite_or_none(float("-inf")) is None
    assert finite_or_none(float("nan")) is None
    assert finite_or_none(None) is None
    assert finite_or_none(0.1234567891) == 0.123457
