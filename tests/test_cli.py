import json

import pytest
import yaml
from typer.testing import CliRunner

from scheduler.cli import app
from solvers.milp import DEFAULT_GAP_REL

runner = CliRunner()


@pytest.fixture(scope="module")
def default_plan(tmp_path_factory):
    out = tmp_path_factory.mktemp("plan") / "plan.json"
    result = runner.invoke(app, ["plan", "--format", "json", "--out", str(out)])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout), out


def test_default_plan_beats_every_baseline(default_plan):
    doc, _ = default_plan
    for key in ("energy_j", "base_energy_j", "slo_attainment", "solve_time_s", "gap", "status"):
        assert key in doc
    assert doc["status"] == "optimal"
    assert doc["gap"] is not None
    assert doc["gap"] <= DEFAULT_GAP_REL
    assert 0.0 <= doc["slo_attainment"] <= 1.0
    assert doc["energy_j"] == pytest.approx(doc["active_energy_j"] + doc["base_energy_j"],
                                            rel=1e-5)
    assert set(doc["baselines"]) >= {"round_robin", "performance_first", "accuracy_first",
                                     "consolidation", "wilkins_threshold"}
    feasible = {k: v for k, v in doc["baselines"].items() if v["energy_j"] is not None}
    assert feasible, "no baseline produced a plan"
    for name, base in feasible.items():
        assert doc["energy_j"] <= base["energy_j"] * (1 + 1e-9), name
        assert 0.0 <= base["slo_attainment"] <= 1.0
    served = sum(r["requests"] for r in doc["routing"])
    assert served == pytest.approx(doc["requests"], rel=1e-6)
    assert {s["source"] for s in doc["sources"]} == {"predicted:vllm", "analytical:cpu"}


def test_out_file_is_the_plan_without_run_timing(default_plan):
    doc, out = default_plan
    saved = json.loads(out.read_text())
    assert "solve_time_s" not in saved
    assert saved["energy_j"] == doc["energy_j"]
    assert saved["replicas"] == doc["replicas"]


def test_same_inputs_give_the_same_plan_byte_for_byte(tmp_path, default_plan):
    _, first = default_plan
    again = tmp_path / "again.json"
    result = runner.invoke(app, ["plan", "--format", "json", "--out", str(again)])
    assert result.exit_code == 0
    assert again.read_bytes() == first.read_bytes()


def test_table_output_names_plan_baselines_and_sources():
    result = runner.invoke(app, ["plan", "--no-baselines"])
    assert result.exit_code == 0, result.output
    assert "Replicas" in result.stdout
    assert "predicted:vllm" in result.stdout


def _fleet_file(tmp_path, pools, llms=("llama-3.1-8b",)):
    path = tmp_path / "fleet.yaml"
    path.write_text(yaml.safe_dump({"pools": pools, "llms": list(llms)}))
    return path


def test_bad_inventory_exits_2_with_one_line_and_writes_nothing(tmp_path):
    fleet = _fleet_file(tmp_path, [{"id": "g", "device": "H100-SMX", "count": 8}])
    out = tmp_path / "plan.json"
    result = runner.invoke(app, ["plan", "--fleet", str(fleet), "--out", str(out)])
    assert result.exit_code == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1
    assert "pools[0].device" in lines[0]
    assert "H100-SXM" in lines[0]
    assert not out.exists()
    assert list(tmp_path.iterdir()) == [fleet]


def test_negative_count_exits_2(tmp_path):
    fleet = _fleet_file(tmp_path, [{"id": "g", "device": "L4", "count": -1}])
    result = runner.invoke(app, ["plan", "--fleet", str(fleet)])
    assert result.exit_code == 2
    assert "pools[0].count" in result.stderr


def test_too_small_fleet_names_the_unmet_demand_class(tmp_path):
    fleet = _fleet_file(tmp_path, [{"id": "g", "device": "L4", "count": 1}])
    out = tmp_path / "plan.json"
    result = runner.invoke(app, ["plan", "--fleet", str(fleet), "--out", str(out)])
    assert result.exit_code == 2
    assert "infeasible" in result.stderr
    assert "class " in result.stderr
    assert not out.exists()


def test_malformed_workload_exits_2(tmp_path):
    work = tmp_path / "w.yaml"
    work.write_text("traffic: [{preset: azure-2023-conv, rate_rps: -2}]\n")
    result = runner.invoke(app, ["plan", "--workload", str(work)])
    assert result.exit_code == 2
    assert "traffic[0].rate_rps" in result.stderr


@pytest.mark.parametrize(("kind", "expected"), [("gpus", "H100-SXM"), ("cpus", "EPYC-7742"),
                                                ("llms", "llama-3.1-8b")])
def test_catalog_lists(kind, expected):
    result = runner.invoke(app, ["catalog", kind])
    assert result.exit_code == 0
    assert expected in result.stdout


@pytest.mark.parametrize("fmt", ["tsv", "csv", "json"])
def test_catalog_for_pipes_keeps_every_cell_whole(fmt):
    import csv
    import io

    from energy_models.catalog.specs import llms

    result = runner.invoke(app, ["catalog", "llms", "--format", fmt])
    assert result.exit_code == 0
    if fmt == "json":
        rows = json.loads(result.stdout)
    else:
        rows = list(csv.DictReader(io.StringIO(result.stdout),
                                   delimiter="\t" if fmt == "tsv" else ","))
    assert [r["name"] for r in rows] == [m.name for m in llms()]
    longest = max((m.quality_source for m in llms()), key=len)
    assert longest in {r["quality_source"] for r in rows}


def test_catalog_piped_without_format_is_tsv():
    result = runner.invoke(app, ["catalog", "gpus"])
    assert result.stdout.splitlines()[0].split("\t")[:2] == ["name", "memory_gb"]


def test_version():
    from importlib.metadata import version

    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.stdout.strip() == f"wattsched {version('wattsched')}"


def test_solver_is_offered_as_a_choice():
    result = runner.invoke(app, ["plan", "--help"], env={"COLUMNS": "200"})
    assert "<highs|cbc|cpsat>" in result.stdout
    bad = runner.invoke(app, ["plan", "--solver", "gurobi"])
    assert bad.exit_code == 2


def test_energy_decimals_tell_close_plans_apart():
    from scheduler.report import kwh_decimals

    assert kwh_decimals([3.6e6, 7.2e6]) == 2
    assert kwh_decimals([3.6e6, 3.6e6 + 36.0]) == 5
    assert kwh_decimals([3.6e6, 3.6e6]) == 2
