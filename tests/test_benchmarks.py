"""Smoke tests: each benchmark runs end to end on a small setting and prints its table."""

from __future__ import annotations

import runpy
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def _main(name: str):
    return runpy.run_path(str(BENCHMARKS / name), run_name="benchmark")["main"]


def test_analytical_accuracy_benchmark(shared_data, capsys):
    assert _main("analytical_accuracy.py")(["--data", str(shared_data)]) == 0
    out = capsys.readouterr().out
    assert "H100-SXM" in out
    assert "energy_mdape_pct" in out
    assert "shipped constants differ" not in out


def test_analytical_accuracy_benchmark_skips_without_data(tmp_path, capsys):
    assert _main("analytical_accuracy.py")(["--data", str(tmp_path)]) == 0
    assert "skipped" in capsys.readouterr().out


def test_plan_default_benchmark(capsys):
    assert _main("plan_default.py")(["--repeats", "1"]) == 0
    out = capsys.readouterr().out
    assert "saving vs best baseline" in out
    assert "ratio highs/cbc" in out


def test_regression_accuracy_benchmark(shared_data, capsys):
    assert _main("regression_accuracy.py")(["--data", str(shared_data)]) == 0
    out = capsys.readouterr().out
    assert "grid targets met" in out
    assert "6/6" in out


def test_regression_accuracy_benchmark_skips_without_data(tmp_path, capsys):
    assert _main("regression_accuracy.py")(["--data", str(tmp_path)]) == 0
    assert "skipped" in capsys.readouterr().out
