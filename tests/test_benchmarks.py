"""Smoke tests: each benchmark runs end to end on a small setting and prints its table."""

from __future__ import annotations

import re
import runpy
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def _main(name: str):
    return runpy.run_path(str(BENCHMARKS / name), run_name="benchmark")["main"]


@pytest.fixture
def powertrace_data(shared_data: Path) -> Path:
    if not (shared_data / "powertrace").is_dir():
        pytest.skip("../shared/data/powertrace is absent")
    return shared_data


@pytest.mark.parametrize("name", ["analytical_accuracy", "regression_accuracy", "memory_rules",
                                  "powertrace_rows", "replay_mlenergy", "replay_powertrace"])
def test_a_benchmark_on_data_skips_without_it(name, tmp_path, capsys):
    assert _main(f"{name}.py")(["--data", str(tmp_path)]) == 0
    assert "skipped" in capsys.readouterr().out


def test_analytical_accuracy_benchmark(shared_data, capsys):
    assert _main("analytical_accuracy.py")(["--data", str(shared_data)]) == 0
    out = capsys.readouterr().out
    assert "H100-SXM" in out
    assert "energy_mdape_pct" in out
    assert "shipped constants differ" not in out


def test_plan_default_benchmark(capsys):
    assert _main("plan_default.py")(["--repeats", "1"]) == 0
    out = capsys.readouterr().out
    assert "saving vs best baseline" in out
    assert "ratio highs/cbc" in out


def test_plan_speed_benchmark(capsys):
    assert _main("plan_speed.py")(["--quick"]) == 0
    out = capsys.readouterr().out
    assert "price latency grid" in out
    assert "per-request latency, optimised plan (2000 requests)" in out
    assert "speed-up" in out


def test_regression_accuracy_benchmark(shared_data, capsys):
    assert _main("regression_accuracy.py")(["--data", str(shared_data)]) == 0
    out = capsys.readouterr().out
    assert "grid targets met" in out
    assert "6/6" in out


def test_gpu_calibration_benchmark_skips_without_gpu(monkeypatch, tmp_path, capsys):
    import sys

    from tests.fakes import NVML_ERROR_LIBRARY_NOT_FOUND, FakeNvml

    monkeypatch.setitem(sys.modules, "pynvml", FakeNvml(init_error=NVML_ERROR_LIBRARY_NOT_FOUND))
    assert _main("gpu_calibration.py")(["--out-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "skipped: no GPU" in out
    assert "no NVIDIA driver" in out


def test_gpu_calibration_benchmark_reports_on_tables(tmp_path, capsys):
    from tests.conftest import analytical_measurements

    for llm in ("llama-3.2-1b", "llama-3.1-8b"):
        rows = analytical_measurements(llm, "H200", batches=(1, 8)).table
        runtime = rows["runtime_s"] * 40  # Long enough windows for the agreement check.
        gross = rows["energy_j"] * rows["batch"]
        rows.assign(runtime_s=runtime, idle_power_w=75.0, idle_settled=True,
                    gross_energy_j=gross, sampled_energy_j=gross * 1.02,
                    energy_method="counter").to_csv(tmp_path / f"{llm}.csv", index=False)
    assert _main("gpu_calibration.py")(["--report-only", "--out-dir", str(tmp_path),
                                        "--shapes", "llama-3.2-1b,llama-3.1-8b"]) == 0
    out = capsys.readouterr().out
    assert "total rows: 144" in out
    assert "2.00% (target <= 5%: met)" in out
    assert "sweetspot" in out


def test_predictor_accuracy_benchmark(shared_data, tmp_path, capsys):
    from threadpoolctl import threadpool_limits

    main = _main("predictor_accuracy.py")
    # One OpenMP thread: the trees are small, and spinning threads slow to a crawl on a busy
    # two-core machine.
    with threadpool_limits(1):
        assert main(["--data", str(shared_data), "--splits", "gpu", "--repeats", "1",
                     "--calibrate-stacks", "vllm"]) == 0
    out = capsys.readouterr().out
    assert "780 rows" in out
    assert "leave one GPU out" in out
    assert "the issue's targets" in out
    assert "few-shot calibration" in out
    assert "calibration lowered the error in" in out
    assert main(["--data", str(tmp_path)]) == 0
    assert "skipped" in capsys.readouterr().out


def test_fuzz_cli_benchmark(tmp_path, capsys):
    assert _main("fuzz_cli.py")(["--cases", "20", "--out-dir", str(tmp_path / "failures")]) == 0
    out = capsys.readouterr().out
    assert "fuzz_cli: 20 cases" in out
    assert "exit 0, output checked" in out
    assert "tracebacks" in out
    assert "hangs" in out


def test_memory_rules_benchmark(shared_data, capsys):
    assert _main("memory_rules.py")(["--data", str(shared_data)]) == 0
    out = capsys.readouterr().out
    assert "Measured lowest-J/token setting per (model, task)" in out
    assert "refused:" not in out


def test_powertrace_rows_benchmark(powertrace_data, capsys):
    assert _main("powertrace_rows.py")(["--data", str(powertrace_data)]) == 0
    out = capsys.readouterr().out
    assert "steady-serving rows: 25 (vLLM 0.10.1.1)" in out
    assert "measured vs ML.ENERGY v3 lm-arena-chat" in out
    assert "j_per_token: measured / v3 = " in out
    assert "catalog_idle_w" in out
    assert "H100-SXM" in out


def test_routing_speed_benchmark(capsys):
    assert _main("routing_speed.py")(["--sizes", "S", "--seeds", "0"]) == 0
    out = capsys.readouterr().out
    assert "pinned MILP s" in out
    assert "speed-up vs plan" in out


def test_plan_scale_benchmark(capsys):
    assert _main("plan_scale.py")(["--sizes", "S", "--seeds", "0"]) == 0
    out = capsys.readouterr().out
    assert "peak GB" in out
    assert out.count(" optimal ") >= 2  # S, seed 0: HiGHS and CBC proven, CP-SAT within time
    assert "cpsat vs highs, S seed 0: energy x" in out


def test_batch_scale_benchmark(capsys):
    assert _main("batch_scale.py")(["--jobs", "10", "--time-limit", "20"]) == 0
    out = capsys.readouterr().out
    assert "saving vs best rule" in out
    assert "milp:highs" in out


def test_batch_hardware_choice_benchmark(capsys):
    assert _main("batch_hardware_choice.py")(["--scale", "0.01", "--time-limit", "5",
                                              "--gap", "0.05"]) == 0
    out = capsys.readouterr().out
    assert "all pools" in out
    assert "only h100" in out
    assert "choosing the hardware saves" in out or "only the mixed fleet" in out


def test_replay_mlenergy_benchmark(shared_data, capsys):
    assert _main("replay_mlenergy.py")(["--data", str(shared_data), "--limit", "2"]) == 0
    out = capsys.readouterr().out
    assert "sim tok/s" in out
    assert "J/tok err: median |error|" in out
    # A gross miss means the simulator or the benchmark's bookkeeping broke (a run of
    # decode steps once counted as one step put this at 98 %).
    tok_err = float(re.search(r"tok/s err: median \|error\| ([\d.]+)%", out).group(1))
    assert tok_err < 40.0


def test_replay_powertrace_benchmark(powertrace_data, capsys):
    assert _main("replay_powertrace.py")(["--data", str(powertrace_data), "--seeds", "0"]) == 0
    out = capsys.readouterr().out
    assert "qwen3-8b_h100_tp1_rate4_validate" in out
    assert "energy kJ: median |error|" in out


def test_replay_speed_benchmark(capsys):
    assert _main("replay_speed.py")(["--requests", "2000", "--workers", "1,2"]) == 0
    out = capsys.readouterr().out
    assert "requests/s" in out
    assert "target 1,000,000 requests in 60 s on one core within 2 GB:" in out
