"""``wattsched plan --replicas``: the replicas running today kept, only the routing solved."""

from __future__ import annotations

import json

import pytest
import yaml
from typer.testing import CliRunner

from scheduler.cli import app
from tests.cli_checks import one_line_error

runner = CliRunner()
TODAY = [{"pool": "h100", "llm": "llama-3.1-8b", "tp": 1, "max_num_seqs": 200, "count": 2},
         {"pool": "h100", "llm": "qwen2.5-14b", "tp": 1, "max_num_seqs": 128, "count": 1}]


def _replicas_file(tmp_path, entries) -> str:
    path = tmp_path / "current.yaml"
    path.write_text(yaml.safe_dump({"replicas": entries}))
    return str(path)


def _plan_json(*args: str) -> dict:
    result = runner.invoke(app, ["plan", "--format", "json", *args])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_replicas_are_kept_and_only_the_routing_is_solved(tmp_path):
    routed = _plan_json("--replicas", _replicas_file(tmp_path, TODAY), "--no-baselines")
    planned = _plan_json("--no-baselines")
    assert routed["solver"] == "lp:highs"
    assert routed["status"] == "optimal"
    assert routed["gap"] == 0.0
    kept = {r["deployment"]: r["replicas"] for r in routed["replicas"]}
    assert kept == {"h100.llama_3.1_8b.tp1.b200": 2, "h100.qwen2.5_14b.tp1.b128": 1}
    served = sum(r["requests"] for r in routed["routing"])
    assert served == pytest.approx(routed["requests"], rel=1e-6)
    # Free to choose its replicas, the planner can only do as well or better.
    assert planned["energy_j"] <= routed["energy_j"] * (1 + 1e-9)


@pytest.mark.parametrize(("entries", "fragments"), [
    ([{**TODAY[0], "pool": "nope"}], ("replicas[0].pool", "unknown pool 'nope'", "h100")),
    ([{**TODAY[0], "llm": "llama-3.1-405b"}], ("replicas[0].llm", "not among the fleet's")),
    ([{**TODAY[0], "llm": "llama-3.1-70b", "max_num_seqs": 8}],
     ("replicas[0]", "cannot run llama-3.1-70b at tp 1")),
    ([TODAY[0], TODAY[0]], ("replicas[1]", "listed twice")),
    ([{**TODAY[0], "count": 0}], ("replicas[0].count",)),
    ([], ("replicas",)),
])
def test_a_bad_replicas_file_is_one_line_naming_file_and_field(tmp_path, entries, fragments):
    path = _replicas_file(tmp_path, entries)
    result = runner.invoke(app, ["plan", "--replicas", path, "--no-baselines"])
    line = one_line_error(result)
    assert path in line
    for fragment in fragments:
        assert fragment in line
    assert result.stdout == ""


def test_replicas_that_cannot_serve_the_demand_are_explained(tmp_path):
    small = [{"pool": "h100", "llm": "llama-3.1-8b", "tp": 1, "max_num_seqs": 8}]
    result = runner.invoke(app, ["plan", "--replicas", _replicas_file(tmp_path, small),
                                 "--no-baselines"])
    line = one_line_error(result)
    assert "among the replicas given" in line
