"""The measurement schema, its validation and the loaders of the public data."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from energy_models.errors import MeasurementError
from energy_models.measurements import mlenergy, wilkins
from energy_models.measurements.loaders import load_measurements
from energy_models.measurements.schema import (
    MEASUREMENT_COLUMNS,
    read_table,
    to_csv,
    validate,
)
from energy_models.stacks import STACKS


def schema_rows(n: int = 4, **overrides) -> pd.DataFrame:
    rows = pd.DataFrame({
        "llm": "llama-3.1-8b", "device": "H100-SXM", "batch": 1.0,
        "input_tokens": np.linspace(100, 400, n), "output_tokens": np.linspace(10, 40, n),
        "energy_j": np.linspace(50, 200, n), "runtime_s": np.linspace(1, 4, n),
        "energy_kind": "gross", "source": "test",
    })
    for column, value in overrides.items():
        rows[column] = value
    return rows


def test_validate_fills_defaults_and_resolves_aliases():
    rows = schema_rows(llm="meta-llama/Meta-Llama-3.1-8B-Instruct", device="NVIDIA H100 80GB HBM3")
    result = validate(rows, "t.csv")
    assert result.dropped == []
    assert list(result.table.columns) == list(MEASUREMENT_COLUMNS)
    assert set(result.table.llm) == {"llama-3.1-8b"}
    assert set(result.table.device) == {"H100-SXM"}
    assert result.table.tp.tolist() == [1, 1, 1, 1]
    assert result.table.config.is_unique


@pytest.mark.parametrize(("column", "value", "reason"), [
    ("energy_j", np.nan, "energy_j is missing or NaN"),
    ("runtime_s", -1.0, "runtime_s is not positive"),
    ("output_tokens", 0, "output_tokens is not positive"),
    ("input_tokens", "many", "input_tokens is not a number"),
    ("ttft_s", -0.5, "ttft_s is not positive"),
    ("energy_kind", "net", "energy_kind must be one of gross, idle_subtracted"),
])
def test_bad_rows_are_left_out_and_reported_by_row_number(column, value, reason):
    rows = schema_rows().astype({column: object}) if column in schema_rows() else schema_rows()
    rows.loc[2, column] = value
    result = validate(rows, "runs.csv")
    assert result.dropped == [f"runs.csv row 3: {reason}"]
    assert len(result.table) == 3


def test_missing_optional_values_are_kept():
    rows = schema_rows(ttft_s=[0.1, np.nan, 0.2, np.nan])
    assert len(validate(rows, "t").table) == 4


def test_missing_column_and_unknown_names_fail_with_the_fix():
    with pytest.raises(MeasurementError, match="column 'runtime_s' is missing"):
        validate(schema_rows().drop(columns="runtime_s"), "t.csv")
    with pytest.raises(MeasurementError, match=r"t.csv row 1: llm: unknown LLM.*did you mean"):
        validate(schema_rows(llm="llama-3.1-8bb"), "t.csv")


def test_csv_round_trip(tmp_path):
    original = validate(schema_rows(), "t")
    path = tmp_path / "runs.csv"
    path.write_text(to_csv(original))
    again = read_table(path)
    pd.testing.assert_frame_equal(again.table, original.table, check_dtype=False)
    assert again.digest() == original.digest()


def test_unreadable_and_unrecognised_files(tmp_path):
    with pytest.raises(MeasurementError, match="no such file"):
        load_measurements(tmp_path / "absent.csv")
    other = tmp_path / "other.csv"
    other.write_text("a,b\n1,2\n")
    with pytest.raises(MeasurementError, match="not a recognised measurement file"):
        load_measurements(other)
    with pytest.raises(MeasurementError, match="nothing recognised"):
        load_measurements(tmp_path)


def test_wilkins_bad_rows_are_reported(tmp_path):
    header = ("Timestamp,Phase,Runtime (s),GPU Energy (mJ),Number of Output Tokens,"
              "Number of Input Tokens,Iteration,Model,Number of GPUs,Prompt,"
              "Total Number of Tokens,Batch Size,System,CPU Core,GPU Total Memory (MB),"
              "GPU Used Memory (MB)\n")
    lines = [
        "1,tokenizer,0.3,16202,32,0,0,falcon-7b,1,startup,0,32,argonne-swing,22,40960,1",
        "2,start-inference-A-8,1.0,36274,8,8,8,falcon-7b,1,p,16,32,argonne-swing,22,40960,1",
        "3,start-inference-A-16,,70278,16,8,16,falcon-7b,1,p,24,32,argonne-swing,22,40960,1",
        "4,start-inference-A-32,2.0,-5,32,8,32,falcon-7b,1,p,40,32,argonne-swing,22,40960,1",
    ]
    path = tmp_path / "grid.csv"
    path.write_text(header + "\n".join(lines) + "\n")
    result = load_measurements(path)
    assert len(result.table) == 1
    assert result.table.energy_j.iloc[0] == pytest.approx(36.274)
    assert result.dropped == ["wilkins:grid.csv row 3: runtime_s is missing or NaN",
                              "wilkins:grid.csv row 4: energy_j is not positive"]


def test_wilkins_files(shared_data):
    folder = shared_data / "wilkins-energy-inference"
    grid = wilkins.load(folder / "plots" / "independence-test" / "all-stats-raw.csv")
    assert len(grid.table) == 566
    assert grid.dropped == []
    assert grid.table.groupby("llm").size().min() == 80
    assert set(grid.table.tp) == {1, 3, 4}
    assert grid.table.energy_j.max() > 1e5  # millijoules became joules, not kilojoules

    m1 = wilkins.load(folder / "plots" / "independence-test" / "Llama-2-7b-chat-hf-M1-Pro.csv")
    assert len(m1.table) == 79
    assert len(m1.dropped) == 10
    assert any("partial run" in line for line in m1.dropped)
    assert any("not a grid point" in line for line in m1.dropped)
    assert set(m1.table.device) == {"M1-Pro"}

    sweep = wilkins.load(folder / "plots" / "independence-test" / "all-stats.csv")
    assert len(sweep.table) == 2176
    assert set(sweep.table.device) == {"A100-40GB", "V100", "M1-Pro"}
    with pytest.raises(MeasurementError, match="simulation output, not measurements"):
        wilkins.load(folder / "routing__simulation_results.csv")


def test_mlenergy_files(shared_data):
    root = shared_data / "mlenergy-leaderboard-v1v2"
    v1, v2 = mlenergy.measurements_v1(root), mlenergy.measurements_v2(root)
    assert len(v1.table) == 236
    assert set(v1.table.engine) == {"hf"}
    assert all("not in the LLM catalog" in line for line in v1.dropped)
    assert len(v2.table) == 297
    assert set(v2.table.engine) == {"vllm-0.5"}
    assert set(v2.table.engine_version) == {STACKS["vllm-0.5"].measured_versions[0]}
    assert set(v1.table.engine_version) == {STACKS["hf"].measured_versions[0]}
    assert sum("pipeline parallelism" in line for line in v2.dropped) == 17
    both = load_measurements(root)
    assert len(both.table) == len(v1.table) + len(v2.table)


def test_mlenergy_v3_rows_are_todays_vllm_on_h100(shared_data):
    """ML.ENERGY v3: every configuration of the flat file, as vllm (0.11) rows whose numbers
    are the file's (tp counts every GPU of the replica, power is theirs together)."""
    folder = shared_data / "mlenergy-leaderboard-v3-h100"
    if not folder.is_dir():
        pytest.skip("../shared/data/mlenergy-leaderboard-v3-h100 is absent")
    v3 = mlenergy.measurements_v3(folder)
    table = v3.table
    assert len(table) == 222
    assert v3.dropped == []
    assert list(table.columns) == list(MEASUREMENT_COLUMNS)
    assert set(table.engine) == {"vllm"}
    assert table.engine_version.str.contains("0.11", regex=False).all()
    assert set(table.device) == {"H100-SXM"}
    assert set(table.energy_kind) == {"gross"}
    flat = pd.read_csv(folder / mlenergy.V3_FILE).loc[table.index]
    np.testing.assert_array_equal(table.tp.to_numpy(), flat.num_gpus.to_numpy())
    assert (flat.num_gpus != flat.tensor_parallel).any()  # Expert-parallel replicas count too.
    np.testing.assert_allclose(table.mean_power_w, flat.avg_power_watts, rtol=1e-12)
    np.testing.assert_allclose(table.energy_j / table.output_tokens,
                               flat.energy_per_token_joules, rtol=1e-12)
    np.testing.assert_allclose(table.itl_s, flat.median_itl_ms / 1e3, rtol=1e-12)
    assert table.config.str.endswith(".ep").sum() == (flat.expert_parallel > 1).sum()
