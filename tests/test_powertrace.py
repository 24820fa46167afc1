"""PowerTrace-Sim runs: parsing, clock alignment, idle power and steady-serving rows."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from energy_models.errors import MeasurementError
from energy_models.measurements.powertrace import (
    idle_power,
    measurement_rows,
    powertrace_rows,
    read_run,
)
from energy_models.measurements.schema import validate

START_EPOCH = 1_700_000_000.0
LOCAL_OFFSET_S = -25200.0
GPUS = ("GPU-aaaa", "GPU-bbbb")
# The fabricated run: idle until 5 s, 4 requests running until 35 s at 200 generated and
# 100 prompt tokens per second, then quiet at a slightly higher power until 40 s.
IDLE_W, BUSY_W, AFTER_W = 100.0, 300.0, 110.0
BUSY_FROM_S, BUSY_TO_S, END_S = 5.0, 35.0, 40.0
RUNNING, GENERATED_PER_S, PROMPTED_PER_S, REQUESTS = 4, 200.0, 100.0, 30


def _manifest(**changes) -> dict:
    manifest = {
        "model": "Qwen/Qwen3-8B", "hardware": "H100", "tp": len(GPUS),
        "clock": {"local_utc_offset_s": LOCAL_OFFSET_S, "power_epoch_offset_s": 0.0,
                  "engine_epoch_offset_s": 0.0, "engine_timestamp_basis": "unix_epoch"},
        "probe": {"window": {"start_epoch": START_EPOCH, "end_epoch": START_EPOCH + END_S},
                  "levels": [{"label": "synthetic", "summary": {"completed": REQUESTS}}]},
        "server": {"active_gpu_uuids": list(GPUS), "max_num_seqs": 256},
        "versions": {"vllm": "0.10.1.1", "gpu_driver": "550.163.01"},
    }
    return {**manifest, **changes}


def _write_run(folder: Path, manifest: dict | None = None) -> Path:
    """A run in PowerTrace-Sim's formats: GPU 1 draws half of GPU 0."""
    folder.mkdir()
    t = np.arange(0.0, END_S + 0.125, 0.25)
    watts = np.where(t < BUSY_FROM_S, IDLE_W, np.where(t <= BUSY_TO_S, BUSY_W, AFTER_W))
    local = pd.to_datetime(START_EPOCH + LOCAL_OFFSET_S + t, unit="s")
    lines = ["timestamp,index,uuid,power.draw [W],clocks.sm [MHz],clocks.mem [MHz],"
             "utilization.gpu [%],utilization.memory [%],memory.used [MiB],temperature.gpu"]
    for stamp, w in zip(local.strftime("%Y/%m/%d %H:%M:%S.%f").str[:-3], watts, strict=True):
        for index, (uuid, share) in enumerate(zip(GPUS, (1.0, 0.5), strict=True)):
            lines.append(f"{stamp},{index},{uuid},{w * share:.2f},1980,2619,50,20,74153,50")
    (folder / "power.csv").write_text("\n".join(lines) + "\n")
    busy_s = np.clip(t, BUSY_FROM_S, BUSY_TO_S) - BUSY_FROM_S
    running = np.where((t >= BUSY_FROM_S) & (t <= BUSY_TO_S), RUNNING, 0)
    engine = pd.DataFrame({
        "timestamp": START_EPOCH + t, "num_requests_running": running.astype(float),
        "num_requests_waiting": 0.0, "gpu_cache_usage_perc": running / 100,
        "prompt_tokens_total": 1.0 + PROMPTED_PER_S * busy_s,
        "generation_tokens_total": 1.0 + GENERATED_PER_S * busy_s,
        "iteration_tokens_total_sum": 2.0, "iteration_tokens_total_count": 1.0,
    })
    engine.to_csv(folder / "engine.csv", index=False, lineterminator="\r\n", float_format="%.17g")
    (folder / "manifest.json").write_text(json.dumps(manifest or _manifest()))
    return folder


def test_synthetic_run_aligns_clocks_and_sums_the_gpus(tmp_path):
    run = read_run(_write_run(tmp_path / "synthetic_h100_tp2"))
    assert (run.device, run.tp, run.engine_version, run.requests) == (
        "H100-SXM", 2, "vLLM 0.10.1.1", REQUESTS)
    assert run.gpus == GPUS
    busy = run.samples[run.samples["num_requests_running"] == RUNNING]
    # Aligned clocks: the power steps up exactly where the engine starts running requests.
    assert busy["t_s"].min() == BUSY_FROM_S
    assert (busy["power_w"] == 1.5 * BUSY_W).all()
    assert run.gpu_power_w.loc[busy.index, GPUS[0]].eq(BUSY_W).all()
    assert run.energy_j(10.0, 30.0) == pytest.approx(1.5 * BUSY_W * 20.0, rel=1e-12)


def test_synthetic_idle_power_per_gpu_before_and_between_requests(tmp_path):
    idle = idle_power(read_run(_write_run(tmp_path / "run")))
    assert idle.pre_request_w == pytest.approx((IDLE_W, IDLE_W / 2))
    assert idle.loaded_idle_w == pytest.approx((AFTER_W, AFTER_W / 2))
    # Before: 0-4.5 s (the engine interval before the first busy sample is left out);
    # between: 35.75-40 s (one engine interval and SETTLE_S after the last work).
    assert (idle.pre_request_samples, idle.loaded_idle_samples) == (19, 18)


def test_synthetic_rows_give_known_power_itl_and_energy(tmp_path):
    rows = measurement_rows(read_run(_write_run(tmp_path / "run"))).table
    # The steady span 5-35 s cut into three 10 s bins.
    assert len(rows) == 3
    output_tokens = GENERATED_PER_S * (BUSY_TO_S - BUSY_FROM_S) / REQUESTS
    itl_s = RUNNING / GENERATED_PER_S
    power_w = 1.5 * BUSY_W
    expected = {
        "batch": RUNNING, "itl_s": itl_s, "mean_power_w": power_w,
        "output_tokens": output_tokens,
        "input_tokens": output_tokens * PROMPTED_PER_S / GENERATED_PER_S,
        "runtime_s": output_tokens * itl_s,
        "energy_j": power_w * 10.0 / (GENERATED_PER_S * 10.0) * output_tokens,
        "idle_power_w": 1.5 * IDLE_W,
    }
    for column, value in expected.items():
        assert rows[column].to_numpy() == pytest.approx(value, rel=1e-9), column
    assert set(rows["engine"]) == {"vllm"}
    assert set(rows["engine_version"]) == {"vLLM 0.10.1.1"}
    assert list(rows["config"]) == ["run.t5-15s", "run.t15-25s", "run.t25-35s"]


def test_on_off_traffic_gives_no_rows(tmp_path):
    folder = _write_run(tmp_path / "run")
    engine = pd.read_csv(folder / "engine.csv")
    # Every third sample sees no request: the server drains between requests.
    engine.loc[engine.index % 3 == 0, "num_requests_running"] = 0.0
    engine.to_csv(folder / "engine.csv", index=False, float_format="%.17g")
    result = measurement_rows(read_run(folder))
    assert result.table.empty
    assert len(result.dropped) == 3
    assert all("no request runs at times" in line for line in result.dropped)


def test_unknown_model_is_left_out_with_a_reason(tmp_path):
    folder = _write_run(tmp_path / "run", _manifest(model="example/not-in-catalog"))
    result = measurement_rows(read_run(folder))
    assert result.table.empty
    assert result.dropped == ["powertrace:run: model 'example/not-in-catalog' is not in the LLM "
                              "catalog; its rows are left out"]


@pytest.mark.parametrize(("filename", "column"), [
    ("power.csv", "power.draw [W]"), ("engine.csv", "generation_tokens_total")])
def test_missing_column_is_one_line_naming_file_and_column(tmp_path, filename, column):
    folder = _write_run(tmp_path / "run")
    pd.read_csv(folder / filename).drop(columns=column).to_csv(folder / filename, index=False)
    with pytest.raises(MeasurementError) as caught:
        read_run(folder)
    message = str(caught.value)
    assert "\n" not in message
    assert str(folder / filename) in message
    assert repr(column) in message


def test_bad_manifest_and_board_name_the_field(tmp_path):
    folder = _write_run(tmp_path / "run", _manifest(tp=0))
    with pytest.raises(MeasurementError, match=r"manifest.json: tp: got 0; must be positive"):
        read_run(folder)
    folder = _write_run(tmp_path / "unknown", _manifest(hardware="L40S"))
    with pytest.raises(MeasurementError, match=r"hardware 'L40S' with memory clock 2619 MHz"):
        read_run(folder)


def test_unreadable_number_names_the_line(tmp_path):
    folder = _write_run(tmp_path / "run")
    text = (folder / "power.csv").read_text().splitlines()
    text[2] = text[2].replace(f",{IDLE_W / 2:.2f},", ",[N/A],")  # GPU 1's first sample
    (folder / "power.csv").write_text("\n".join(text) + "\n")
    with pytest.raises(MeasurementError, match=r"power.csv: column 'power.draw \[W\]' line 3: "
                                               r"got '\[N/A\]'; must be a finite number"):
        read_run(folder)


@pytest.fixture
def powertrace(shared_data) -> Path:
    root = shared_data / "powertrace"
    if not (root / "qwen3-8b_h100_tp1_rate4_validate" / "power.csv").is_file():
        pytest.skip("../shared/data/powertrace is absent")
    return root


def test_h100_run_matches_its_source_notes(powertrace):
    run = read_run(powertrace / "qwen3-8b_h100_tp1_rate4_validate")
    assert (run.device, run.tp, run.engine_version) == ("H100-SXM", 1, "vLLM 0.10.1.1")
    idle = idle_power(run)
    assert idle.pre_request_w[0] == pytest.approx(122.7, rel=0.01)
    assert idle.pre_request_samples > 40
    # SOURCE.md: busy plateau about 417 W, 23.1 kJ over the window.
    running = run.engine.loc[run.engine["num_requests_running"] > 0, "t_s"]
    busy = run.samples["t_s"].between(running.min(), running.max())
    assert run.samples.loc[busy, "power_w"].median() == pytest.approx(417, rel=0.03)
    assert run.energy_j() == pytest.approx(23.1e3, rel=0.01)
    rows = measurement_rows(run).table
    assert len(rows) >= 3
    assert rows["mean_power_w"].to_numpy() == pytest.approx(417, rel=0.03)


def test_gemma_run_reads_both_gpus(powertrace):
    run = read_run(powertrace / "gemma-4-26b-a4b_a100_tp2_rate4")
    assert (run.device, run.tp, len(run.gpus)) == ("A100-80GB", 2, 2)
    # SOURCE.md: idle 87.7 + 84.8 W.
    assert idle_power(run).pre_request_w == pytest.approx((87.7, 84.8), rel=0.01)
    assert run.samples["power_w"].to_numpy() == pytest.approx(
        run.gpu_power_w.sum(axis=1).to_numpy())


def test_all_runs_give_schema_rows(powertrace):
    result = powertrace_rows(powertrace)
    again = validate(result.table, "again")
    assert again.dropped == []
    assert len(again.table) == len(result.table) >= 20
    assert set(result.table["device"]) == {"A100-80GB", "H100-SXM"}
    assert set(result.table["engine_version"]) == {"vLLM 0.10.1.1"}
    reasons = "\n".join(result.dropped)
    assert "gemma-4-26B-A4B-it' is not in the LLM catalog" in reasons
    assert "llama-3.1-70b_h100_tp4_rate4_state_control: no power.csv" in reasons
    assert "burstgpt_replay" in reasons
    # The BurstGPT replay idles between its per-second bursts.
    replay = idle_power(read_run(powertrace / "qwen3-8b_a100_tp1_burstgpt_replay"))
    assert replay.pre_request_samples == 0
    assert replay.loaded_idle_samples > 10
    assert replay.loaded_idle_w[0] == pytest.approx(88.2, rel=0.02)


def test_power_clock_in_another_basis_is_refused(tmp_path):
    clock = {**_manifest()["clock"], "power_timestamp_basis": "unix_epoch"}
    folder = _write_run(tmp_path / "run", _manifest(clock=clock))
    with pytest.raises(MeasurementError, match=r"manifest.json: clock.power_timestamp_basis: "
                                               r"got 'unix_epoch'"):
        read_run(folder)
