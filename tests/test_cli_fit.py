"""`wattsched fit`, `plan --models` and `sweetspot` on small synthetic measurement tables.

The clean pair's rows come from the analytical model itself, so a regression can reproduce them
and must pass the R² gate; the noisy pair's rows carry lognormal noise the gate must refuse.
"""

import csv
import itertools
import json

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from energy_models.analytical.model import analytical_costs, shipped_constants
from energy_models.measurements.schema import MEASUREMENT_COLUMNS, REQUIRED_COLUMNS
from energy_models.regression.fitting import FittedModels
from scheduler.cli import app
from tests.cli_checks import one_line_error

runner = CliRunner()

CLEAN = ("llama-3.1-8b", "H100-SXM")
NOISY = ("qwen2.5-14b", "A100-40GB")
INPUT_TOKENS = (64, 128, 256, 512, 1024, 2048)
OUTPUT_TOKENS = (16, 32, 64, 128, 256, 512)
BATCHES = (1, 8, 32)
GRID_ROWS = len(INPUT_TOKENS) * len(OUTPUT_TOKENS) * len(BATCHES)
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def measurement_rows(llm: str, device: str, *, noise: float = 0.0, seed: int = 0) -> pd.DataFrame:
    """A grid of schema rows priced by the shipped analytical model, optionally noisy."""
    work = pd.DataFrame(list(itertools.product(INPUT_TOKENS, OUTPUT_TOKENS, BATCHES)),
                        columns=["input_tokens", "output_tokens", "batch"])
    work = work.assign(llm=llm, device=device, tp=1)
    # vllm-0.5's constants: on this grid its runtime is near-linear in tokens and batch, so
    # the smooth forms pass the gate (today's vllm adds curvature the linear forms miss).
    costs = analytical_costs(work, shipped_constants()["vllm-0.5"])
    energy = costs["energy_j"].to_numpy(float)
    runtime = costs["runtime_s"].to_numpy(float)
    if noise:
        rng = np.random.default_rng(seed)
        energy = energy * rng.lognormal(0.0, noise, len(work))
        runtime = runtime * rng.lognormal(0.0, noise, len(work))
    return work.assign(energy_j=energy, runtime_s=runtime, energy_kind="gross", engine="vllm",
                       source="synthetic")


@pytest.fixture(scope="module")
def data_csv(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "measurements.csv"
    table = pd.concat([measurement_rows(*CLEAN), measurement_rows(*NOISY, noise=0.6, seed=7)],
                      ignore_index=True)
    assert set(REQUIRED_COLUMNS) <= set(table.columns) <= set(MEASUREMENT_COLUMNS)
    table.to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def models_json(tmp_path_factory, data_csv):
    out = tmp_path_factory.mktemp("models") / "models.json"
    result = runner.invoke(app, ["fit", str(data_csv), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert out.is_file()
    return out


def _flat(text: str) -> str:
    """Rich wraps long lines at the console width; compare words, not line breaks."""
    return " ".join(text.split())


# --- fit ---------------------------------------------------------------------------------


def test_fit_table_names_pairs_and_refuses_the_noisy_one_with_its_reason(data_csv):
    result = runner.invoke(app, ["fit", str(data_csv)])
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "gate: CV R² >= 0.96" in out
    rows = {}
    for line in out.splitlines():
        words = line.split()
        if len(words) >= 4 and (words[0], words[1]) in {CLEAN, NOISY}:
            rows[(words[0], words[1], words[3])] = line
    assert set(rows) == {(*pair, target) for pair in (CLEAN, NOISY)
                         for target in ("energy", "runtime")}
    for target in ("energy", "runtime"):
        assert rows[(*CLEAN, target)].rstrip().endswith("no")
        assert "yes (" in rows[(*NOISY, target)]
    reasons = [line for line in out.splitlines() if line.startswith("(")]
    assert len(reasons) == 2
    for line in reasons:
        assert "qwen2.5-14b on A100-40GB" in line
        assert "below the gate 0.96" in line
    assert "engine: vllm" in out


def test_fit_json_lists_every_pair_and_target_with_typed_fields(data_csv):
    result = runner.invoke(app, ["fit", str(data_csv), "--format", "json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert isinstance(rows, list)
    assert len(rows) == 4
    for row in rows:
        assert {"llm", "device", "form", "r2", "cv_r2", "cv_mape", "rows", "refused"} <= set(row)
        assert isinstance(row["llm"], str)
        assert isinstance(row["device"], str)
        assert isinstance(row["form"], str)
        assert row["form"]
        for key in ("r2", "cv_r2", "cv_mape"):
            assert isinstance(row[key], float), (key, row)
        assert isinstance(row["rows"], int)
        assert row["rows"] == GRID_ROWS
        assert isinstance(row["refused"], bool)
    by_pair = {(r["llm"], r["device"], r["target"]): r for r in rows}
    for target in ("energy_j", "runtime_s"):
        clean, noisy = by_pair[(*CLEAN, target)], by_pair[(*NOISY, target)]
        assert clean["refused"] is False
        assert clean["cv_r2"] >= 0.96
        assert clean["reason"] == ""
        assert noisy["refused"] is True
        assert noisy["cv_r2"] < 0.96
        assert "below the gate" in noisy["reason"]
    # The energy rows come straight from the analytical model: a near-perfect fit.
    assert by_pair[(*CLEAN, "energy_j")]["cv_r2"] > 0.999
    assert by_pair[(*CLEAN, "energy_j")]["cv_mape"] < 1.0


def test_fit_out_file_loads_back_with_accepted_and_refused_pairs(models_json):
    models = FittedModels.load(models_json)
    assert models.data_rows == 2 * GRID_ROWS
    assert models.gate == 0.96
    assert models.folds == 5
    assert models.seed == 0
    usable, reason = models.usable(*CLEAN, 1, "vllm")
    assert set(usable) == {"energy_j", "runtime_s"}
    assert reason == ""
    assert usable["energy_j"].domain["batch"] == (1.0, 32.0)
    assert usable["energy_j"].domain["input_tokens"] == (64.0, 2048.0)
    assert usable["energy_j"].domain["output_tokens"] == (16.0, 512.0)
    usable, reason = models.usable(*NOISY, 1, "vllm")
    assert usable == {}
    assert "energy_j fit refused" in reason
    assert "runtime_s fit refused" in reason


def test_fit_is_byte_for_byte_reproducible(tmp_path, data_csv, models_json):
    again = tmp_path / "again.json"
    result = runner.invoke(app, ["fit", str(data_csv), "--seed", "0", "--out", str(again)])
    assert result.exit_code == 0, result.output
    assert f"models written to {again}" in _flat(result.stderr)
    assert again.read_bytes() == models_json.read_bytes()


def test_fit_reports_left_out_rows_by_number_and_fits_the_rest(tmp_path, data_csv):
    with data_csv.open(newline="") as handle:
        rows = list(csv.reader(handle))
    header = rows[0]
    rows[3][header.index("energy_j")] = "nan"
    rows[5][header.index("runtime_s")] = "-1"
    rows[8][header.index("batch")] = ""
    bad = tmp_path / "bad.csv"
    with bad.open("w", newline="") as handle:
        csv.writer(handle).writerows(rows)
    result = runner.invoke(app, ["fit", str(bad), "--format", "json"])
    assert result.exit_code == 0, result.output
    err = result.stderr
    assert "left out 3 row(s)" in err
    assert f"{bad} row 3: energy_j is missing or NaN" in _flat(err)
    assert f"{bad} row 5: runtime_s is not positive" in _flat(err)
    assert f"{bad} row 8: batch is missing or NaN" in _flat(err)
    fitted = {(r["llm"], r["target"]): r for r in json.loads(result.stdout)}
    assert fitted[(CLEAN[0], "energy_j")]["rows"] == GRID_ROWS - 3
    assert fitted[(NOISY[0], "energy_j")]["rows"] == GRID_ROWS
    assert fitted[(CLEAN[0], "energy_j")]["refused"] is False


def test_fit_lists_ten_left_out_rows_unless_show_dropped(tmp_path):
    table = measurement_rows(*CLEAN)
    table.loc[:11, "energy_j"] = -1.0
    path = tmp_path / "many-bad.csv"
    table.to_csv(path, index=False)

    short = runner.invoke(app, ["fit", str(path), "--format", "json"])
    assert short.exit_code == 0, short.output
    assert "left out 12 row(s)" in short.stderr
    assert short.stderr.count("energy_j is not positive") == 10
    assert "... and 2 more (--show-dropped lists them)" in short.stderr

    full = runner.invoke(app, ["fit", str(path), "--format", "json", "--show-dropped"])
    assert full.exit_code == 0, full.output
    assert full.stderr.count("energy_j is not positive") == 12
    assert "more (--show-dropped" not in full.stderr
    assert f"{path} row 12: energy_j is not positive" in _flat(full.stderr)


def test_fit_refuses_a_pair_with_too_few_distinct_configurations(tmp_path):
    table = measurement_rows(*CLEAN)
    two = table[(table.batch == 1) & (table.output_tokens == 16) & (table.input_tokens <= 128)]
    repeated = pd.concat([two] * 3, ignore_index=True)  # six rows, two configurations
    path = tmp_path / "repeats.csv"
    repeated.to_csv(path, index=False)
    result = runner.invoke(app, ["fit", str(path), "--format", "json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert {r["target"] for r in rows} == {"energy_j", "runtime_s"}
    for row in rows:
        assert row["refused"] is True
        assert row["rows"] == 6
        assert row["form"] is None
        assert row["r2"] is None
        assert "only 2 distinct configuration(s)" in row["reason"]


@pytest.mark.parametrize(("args", "expected"), [
    (["--gate", "1.5"], "--gate: 1.5 is not in (0, 1]"),
    (["--gate", "0"], "--gate: 0 is not in (0, 1]"),
    (["--folds", "1"], "--folds: 1 folds cannot cross-validate"),
])
def test_fit_bad_option_exits_2_and_writes_nothing(tmp_path, data_csv, args, expected):
    out = tmp_path / "models.json"
    result = runner.invoke(app, ["fit", str(data_csv), "--out", str(out), *args])
    assert expected in one_line_error(result)
    assert list(tmp_path.iterdir()) == []


def test_fit_unrecognised_csv_exits_2_naming_what_is_recognised(tmp_path):
    junk = tmp_path / "junk.csv"
    junk.write_text("a,b\n1,2\n")
    out = tmp_path / "models.json"
    result = runner.invoke(app, ["fit", str(junk), "--out", str(out)])
    line = one_line_error(result)
    assert "junk.csv" in line
    assert "not a recognised measurement file" in line
    assert "'llm'" in line
    assert "Wilkins" in line
    assert list(tmp_path.iterdir()) == [junk]


def test_fit_missing_file_exits_2(tmp_path):
    out = tmp_path / "models.json"
    result = runner.invoke(app, ["fit", str(tmp_path / "nope.csv"), "--out", str(out)])
    line = one_line_error(result)
    assert "nope.csv: no such file or folder" in line
    assert list(tmp_path.iterdir()) == []


def test_fit_folder_without_measurements_exits_2(tmp_path):
    folder = tmp_path / "empty"
    folder.mkdir()
    result = runner.invoke(app, ["fit", str(folder)])
    assert "nothing recognised in this folder" in one_line_error(result)


def test_fit_unknown_llm_exits_2_suggesting_the_closest_name(tmp_path):
    table = measurement_rows(*CLEAN)
    table.loc[4:, "llm"] = "llama-3.1-8c"
    path = tmp_path / "typo.csv"
    table.to_csv(path, index=False)
    out = tmp_path / "models.json"
    result = runner.invoke(app, ["fit", str(path), "--out", str(out)])
    line = one_line_error(result)
    assert f"{path} row 5: llm" in line
    assert "'llama-3.1-8c'" in line
    assert "did you mean 'llama-3.1-8b'" in line
    assert list(tmp_path.iterdir()) == [path]


def test_fit_with_only_bad_rows_exits_2(tmp_path):
    table = measurement_rows(*CLEAN).head(5).assign(runtime_s=0.0)
    path = tmp_path / "zero.csv"
    table.to_csv(path, index=False)
    out = tmp_path / "models.json"
    result = runner.invoke(app, ["fit", str(path), "--out", str(out)])
    assert result.exit_code == 2
    assert "left out 5 row(s)" in result.stderr
    assert "no usable rows" in result.stderr
    assert not out.exists()


# --- plan --models -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def fitted_plan(models_json):
    result = runner.invoke(app, ["plan", "--models", str(models_json), "--format", "json",
                                 "--no-baselines"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout), result.stderr


def test_plan_prices_the_fitted_pair_at_measured_batches_only(fitted_plan):
    doc, _ = fitted_plan
    sources = doc["sources"]
    fitted = [s for s in sources if s["source"].startswith("fitted:")]
    assert len(fitted) == 1
    entry = fitted[0]
    assert (entry["llm"], entry["device"]) == CLEAN
    assert entry["note"] == ""
    settings = entry["deployments"].split()
    assert settings
    assert all(s.startswith("tp1/") for s in settings)
    assert "tp1/b128" not in settings
    # Batch 128 of the default fleet lies outside the measured 1-32: predicted, with a note.
    fallback = [s for s in sources if (s["llm"], s["device"]) == CLEAN
                and s["source"].startswith("predicted:")]
    assert len(fallback) == 1
    assert "tp1/b128" in fallback[0]["deployments"].split()
    assert "batch 1-32" in fallback[0]["note"]


def test_plan_predicts_the_refused_pair_and_says_why(fitted_plan):
    doc, _ = fitted_plan
    refused = [s for s in doc["sources"] if (s["llm"], s["device"]) == NOISY]
    assert refused
    for entry in refused:
        assert entry["source"] == "predicted:vllm"
        assert "refused" in entry["note"]
        assert "below the gate" in entry["note"]


def test_plan_predicts_unmeasured_gpu_pairs_and_prices_cpus_analytically(fitted_plan):
    doc, _ = fitted_plan
    others = [s for s in doc["sources"] if (s["llm"], s["device"]) not in {CLEAN, NOISY}]
    assert others
    for entry in others:
        assert entry["source"] in {"predicted:vllm", "analytical:cpu"}, entry
        assert entry["note"] == "not measured"
    assert {s["source"] for s in others} == {"predicted:vllm", "analytical:cpu"}


def test_plan_warns_once_per_target_when_the_fit_extrapolates(fitted_plan):
    _, err = fitted_plan
    warnings = [line for line in err.splitlines() if line.startswith("warning: ")]
    assert len(warnings) == len({line.split(" asked for")[0] for line in warnings})
    assert any("llama-3.1-8b on H100-SXM tp1" in line and "extrapolating" in line
               for line in warnings)


def test_plan_table_shows_fitted_source(models_json):
    result = runner.invoke(app, ["plan", "--models", str(models_json), "--no-baselines"])
    assert result.exit_code == 0, result.output
    assert "fitted:" in result.stdout
    assert "why not fitted" in result.stdout


@pytest.mark.parametrize(("content", "expected"), [
    ("not json", "not JSON"),
    ('{"format": "other"}', "format: expected 'wattsched-models/1'"),
    ('{"format": "wattsched-models/1"}', "gate_r2: missing"),
])
def test_plan_with_bad_models_file_exits_2(tmp_path, content, expected):
    models = tmp_path / "models.json"
    models.write_text(content)
    result = runner.invoke(app, ["plan", "--models", str(models), "--no-baselines"])
    line = one_line_error(result)
    assert str(models) in line
    assert expected in line


# --- sweetspot ---------------------------------------------------------------------------


def _analytical_energy(llm: str, device: str, m: float, n: np.ndarray,
                       batch: float = 1, stack: str = "vllm") -> np.ndarray:
    work = pd.DataFrame({"llm": llm, "device": device, "input_tokens": float(m),
                         "output_tokens": n, "batch": float(batch), "tp": 1})
    return analytical_costs(work, shipped_constants()[stack])["energy_j"].to_numpy(float)


def test_sweetspot_table_for_an_analytical_pair():
    result = runner.invoke(app, ["sweetspot", "--llm", "llama-3.1-8b", "--device", "H100-SXM",
                                 "--input-tokens", "512"])
    assert result.exit_code == 0, result.output
    text = _flat(result.stdout)
    assert "Sweet spot of llama-3.1-8b on H100-SXM (tp 1, batch 1) for 512 input tokens" in text
    assert "(analytical:vllm)" in text
    assert "Energy per output token by output length" in text
    assert "1.00x" in text


def test_sweetspot_json_is_the_minimum_of_the_analytical_curve():
    result = runner.invoke(app, ["sweetspot", "--llm", "llama-3.1-8b", "--device", "H100-SXM",
                                 "--input-tokens", "512", "--format", "json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert {"output_tokens", "energy_per_token_j", "source", "at_edge", "spread"} <= set(doc)
    assert doc["source"] == "analytical:vllm"
    assert isinstance(doc["at_edge"], bool)
    assert doc["at_edge"] is False
    assert doc["spread"] > 1.0
    n = doc["output_tokens"]
    lo, hi = doc["searched_output_tokens"]
    assert lo < n < hi
    # The reported energy is the analytical model's at that length, and it is a minimum.
    here, half, double = _analytical_energy(*CLEAN, 512, np.array([n, n / 2, n * 2]))
    assert doc["energy_per_token_j"] == pytest.approx(here / n, rel=1e-3)
    assert here / n <= half / (n / 2)
    assert here / n <= double / (n * 2)


def test_sweetspot_with_models_uses_the_fit_within_its_measured_range(models_json):
    result = runner.invoke(app, ["sweetspot", "--llm", "llama-3.1-8b", "--device", "H100-SXM",
                                 "--input-tokens", "512", "--models", str(models_json),
                                 "--format", "json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["source"].startswith("fitted:")
    assert doc["searched_output_tokens"] == [16.0, 512.0]
    assert 16.0 <= doc["output_tokens"] <= 512.0
    # The fit reproduces the analytical rows it was fitted to (CV MAPE well under 1%).
    n = doc["output_tokens"]
    expected = _analytical_energy(*CLEAN, 512, np.array([n]), stack="vllm-0.5")[0] / n
    assert doc["energy_per_token_j"] == pytest.approx(expected, rel=0.02)


def test_sweetspot_with_models_falls_back_for_a_refused_pair(models_json):
    result = runner.invoke(app, ["sweetspot", "--llm", NOISY[0], "--device", NOISY[1],
                                 "--input-tokens", "512", "--models", str(models_json),
                                 "--format", "json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["source"] == "analytical:vllm"
    assert doc["searched_output_tokens"][0] == 1.0


def test_sweetspot_plot_writes_a_png(tmp_path):
    plot = tmp_path / "heat.png"
    result = runner.invoke(app, ["sweetspot", "--llm", "llama-3.1-8b", "--device", "H100-SXM",
                                 "--input-tokens", "512", "--plot", str(plot), "--format",
                                 "json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["source"] == "analytical:vllm"
    assert plot.read_bytes()[:8] == PNG_MAGIC
    assert plot.stat().st_size > 10_000
    assert f"heat map written to {plot}" in _flat(result.stderr)
    assert [p.name for p in tmp_path.iterdir()] == ["heat.png"]


@pytest.mark.parametrize(("args", "expected"), [
    (["--llm", "llama-3.1-8b", "--device", "H100-SXM", "--input-tokens", "-5"],
     "--input-tokens/--batch/--tp: must be positive"),
    (["--llm", "llama-3.1-8b", "--device", "H100-SXM", "--input-tokens", "512", "--batch", "0"],
     "must be positive"),
    (["--llm", "llama-3.1-8x", "--device", "H100-SXM", "--input-tokens", "512"],
     "unknown LLM 'llama-3.1-8x'; did you mean 'llama-3.1-8b'?"),
    (["--llm", "llama-3.1-8b", "--device", "H100-SMX", "--input-tokens", "512"],
     "did you mean 'H100-SXM'?"),
    (["--llm", "llama-3.1-8b", "--device", "H100-SXM", "--input-tokens", "200000"],
     "leave no room for output"),
    (["--llm", "llama-3.1-8b", "--device", "H100-SXM", "--input-tokens", "512", "--engine",
      "nope"], "no analytical constants for engine 'nope'"),
])
def test_sweetspot_bad_input_exits_2(tmp_path, args, expected):
    plot = tmp_path / "heat.png"
    result = runner.invoke(app, ["sweetspot", *args, "--plot", str(plot)])
    assert expected in one_line_error(result)
    assert not plot.exists()


def test_sweetspot_nan_input_tokens_exits_2():
    result = runner.invoke(app, ["sweetspot", "--llm", "llama-3.1-8b", "--device", "H100-SXM",
                                 "--input-tokens", "nan", "--format", "json"])
    assert result.exit_code == 2
