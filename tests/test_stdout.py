"""What a user's pipe sees: with --format json|yaml, stdout of the real process is exactly one
document, whatever native libraries print; progress and errors go to stderr.

These run the command in a subprocess because ``CliRunner`` sees only Python-level output,
never what a C library writes to file descriptor 1.
"""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import analytical_measurements
from tests.fakes import FakePowercap

SMALL_WORKLOAD = """\
horizon_s: 120
seed: 3
traffic:
  - preset: azure-2023-conv
    rate_rps: 2.0
  - preset: azure-2023-code
    rate_rps: 1.0
"""


def wattsched(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "scheduler", *args], capture_output=True,
                          text=True, timeout=300, cwd=cwd, check=False)


@pytest.fixture(scope="module")
def small_workload(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("workload") / "small.yaml"
    path.write_text(SMALL_WORKLOAD)
    return path


@pytest.fixture(scope="module")
def runs_csv(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("runs") / "runs.csv"
    analytical_measurements(noise=0.02).table.to_csv(path, index=False)
    return path


def one_json_document(result: subprocess.CompletedProcess[str]):
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_default_plan_json_is_one_document_and_stderr_stays_quiet():
    result = wattsched("plan", "--format", "json")
    doc = one_json_document(result)
    assert doc["status"] == "optimal"
    assert set(doc["baselines"]) >= {"round_robin", "performance_first"}
    # HiGHS's banner goes nowhere; piped, progress is not printed either.
    assert result.stderr == ""


@pytest.mark.parametrize("solver", ["highs", "cbc"])
def test_plan_json_for_each_solver(small_workload, solver):
    doc = one_json_document(wattsched("plan", "--workload", str(small_workload), "--solver",
                                      solver, "--no-baselines", "--format", "json"))
    assert doc["solver"] == f"milp:{solver}"


def test_plan_yaml_is_one_document(small_workload):
    result = wattsched("plan", "--workload", str(small_workload), "--no-baselines", "--format",
                       "yaml")
    assert result.returncode == 0, result.stderr
    docs = list(yaml.safe_load_all(result.stdout))
    assert len(docs) == 1
    assert docs[0]["status"] == "optimal"


def test_fit_json(runs_csv):
    rows = one_json_document(wattsched("fit", str(runs_csv), "--format", "json"))
    assert {row["target"] for row in rows} >= {"energy_j", "runtime_s"}


def test_sweetspot_json():
    doc = one_json_document(wattsched("sweetspot", "--llm", "llama-3.1-8b", "--device", "H100",
                                      "--input-tokens", "512", "--format", "json"))
    assert doc["output_tokens"] > 0


def test_predict_json():
    doc = one_json_document(wattsched("predict", "--gpu", "H100", "--llm", "llama-3.1-8b",
                                      "--batch", "8", "--format", "json"))
    assert doc["power_w"] > 0


def test_rank_gpus_json():
    doc = one_json_document(wattsched("rank-gpus", "--llm", "llama-3.1-8b", "--format", "json"))
    assert doc


def test_meters_json(tmp_path):
    tree = FakePowercap.server(tmp_path / "powercap")
    doc = one_json_document(wattsched("meters", "--rapl-root", str(tree.root), "--format",
                                      "json"))
    assert doc["rapl_zones"]


def test_an_error_leaves_stdout_empty_and_says_one_line(tmp_path):
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text("pools: [{id: a, device: H100, count: -1}]\nllms: [llama-3.1-8b]\n")
    result = wattsched("plan", "--fleet", str(fleet), "--format", "json")
    assert result.returncode == 2
    assert result.stdout == ""
    assert len(result.stderr.strip().splitlines()) == 1
    assert str(fleet) in result.stderr


def test_progress_on_a_terminal_is_plain_and_counted(small_workload, tmp_path):
    primary_fd, terminal_fd = pty.openpty()
    with (tmp_path / "plan.json").open("w") as stdout:
        process = subprocess.Popen(
            [sys.executable, "-m", "scheduler", "plan", "--workload", str(small_workload),
             "--format", "json"], stdout=stdout, stderr=terminal_fd)
    os.close(terminal_fd)
    chunks = []
    while True:
        try:
            chunk = os.read(primary_fd, 65536)
        except OSError:  # EIO: the process closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(primary_fd)
    assert process.wait(timeout=300) == 0
    shown = b"".join(chunks).decode(errors="replace")
    assert "baseline 1/" in shown
    assert ".py:" not in shown
    assert json.loads((tmp_path / "plan.json").read_text())["status"] == "optimal"


def test_an_infeasible_fleet_is_one_line_on_stderr(tmp_path, small_workload):
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text("pools: [{id: a, device: L4, count: 1}]\nllms: [llama-3.1-8b]\n"
                     "defaults: {max_utilization: 0.01}\n")
    result = wattsched("plan", "--fleet", str(fleet), "--workload", str(small_workload),
                       "--format", "json")
    assert result.returncode == 2
    assert result.stdout == ""
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "infeasible" in result.stderr
