"""A plan replayed: its replicas with the planner's costs, every request served on a
deployment its class is routed to."""

from __future__ import annotations

import numpy as np
import pytest

from scheduler.inventory import load_fleet
from scheduler.pipeline import run_plan
from scheduler.replay.from_plan import plan_requests, replay_solution, replica_specs
from tests.test_stdout import SMALL_WORKLOAD
from workloads.spec import load_workload


@pytest.fixture(scope="module")
def planned(tmp_path_factory):
    path = tmp_path_factory.mktemp("workload") / "small.yaml"
    path.write_text(SMALL_WORKLOAD)
    workload = load_workload(path)
    return run_plan(load_fleet(), workload, baselines=False), workload


def test_each_replica_costs_what_the_planner_priced(planned):
    outcome, _ = planned
    built, solution = outcome.built, outcome.plan.solution
    problem = built.problem
    specs = replica_specs(built, solution)
    assert len(specs) == int(solution.replicas.sum())
    for spec in specs:
        d = spec.deployment
        row = built.deployments.iloc[d]
        weights = solution.routing[:, d] / solution.routing[:, d].sum()
        steady = [spec.costs.steady_state(int(row.batch), m + row.recompute_tokens, n)
                  for m, n in zip(built.classes.input_tokens, built.classes.output_tokens,
                                  strict=True)]
        replica_s = weights @ np.array([s for s, _ in steady])
        energy_j = weights @ np.array([e for _, e in steady])
        gross_j = (problem.energy_j[:, d]
                   + problem.deployments[d].base_power_w * problem.occupancy_s[:, d])
        assert replica_s == pytest.approx(weights @ problem.occupancy_s[:, d], rel=1e-9)
        assert energy_j == pytest.approx(weights @ gross_j, rel=1e-9)


def test_every_request_is_served_where_its_class_is_routed(planned):
    outcome, workload = planned
    built, solution = outcome.built, outcome.plan.solution
    result = replay_solution(built, solution, workload.requests)
    requests = plan_requests(built, workload.requests)
    assert (result.replica >= 0).all()
    assert np.isfinite(result.e2e_s).all()
    assert (solution.routing[requests.request_class,
                             result.replica_deployment[result.replica]] > 0).all()
    assert result.replica_deployment.tolist() == [
        spec.deployment for spec in replica_specs(built, solution)]
    assert (result.ttft_s > 0).all()
    assert (result.e2e_s >= result.ttft_s).all()
    assert result.end_s >= built.problem.horizon_s
    assert result.energy_j > 0


def test_replay_command_prints_one_json_document_the_same_each_run(tmp_path):
    from tests.test_stdout import one_json_document, wattsched

    path = tmp_path / "small.yaml"
    path.write_text(SMALL_WORKLOAD)
    first = wattsched("replay", "--workload", str(path), "--format", "json")
    doc = one_json_document(first)
    assert first.stderr == ""
    assert "optimised" in doc["plans"]
    assert set(doc["saving_pct"]) == set(doc["plans"]) - {"optimised"}
    optimised = doc["plans"]["optimised"]
    assert optimised["requests"] > 0
    assert optimised["replayed_energy_j"] == pytest.approx(
        optimised["active_energy_j"] + optimised["idle_energy_j"])
    assert 0.0 <= optimised["slo_attainment"] <= 1.0
    assert set(optimised["slo_by_kind"]) == {"chat", "code"}
    for kind in optimised["slo_by_kind"].values():
        assert kind["attainment"] <= min(kind["ttft_met"], kind["itl_met"], kind["e2e_met"])
    assert wattsched("replay", "--workload", str(path), "--format", "json").stdout == first.stdout


def test_a_saved_plan_replays_as_planned_and_on_other_arrivals(tmp_path):
    from tests.test_stdout import one_json_document, wattsched

    path = tmp_path / "small.yaml"
    path.write_text(SMALL_WORKLOAD)
    saved = tmp_path / "plan.json"
    assert wattsched("plan", "--workload", str(path), "--no-baselines", "--out",
                     str(saved)).returncode == 0
    fresh = one_json_document(wattsched("replay", "--workload", str(path), "--format", "json"))
    again = one_json_document(wattsched("replay", "--workload", str(path), "--plan", str(saved),
                                        "--format", "json"))
    # The saved routing is rounded to six digits: the same replay up to that.
    assert again["plans"].keys() == fresh["plans"].keys()
    for name, plan in fresh["plans"].items():
        for key in ("replayed_energy_j", "slo_attainment", "ttft_p99_s", "requests"):
            assert again["plans"][name][key] == pytest.approx(plan[key], rel=1e-6)
    other = one_json_document(wattsched("replay", "--workload", str(path), "--plan",
                                        str(saved), "--seed", "11", "--format", "json"))
    assert other["plans"]["optimised"]["planned_energy_j"] == pytest.approx(
        fresh["plans"]["optimised"]["planned_energy_j"])
    assert other["plans"]["optimised"]["requests"] != fresh["plans"]["optimised"]["requests"]


@pytest.mark.parametrize(("edit", "field"), [
    (lambda doc: doc["replicas"][0].update(deployment="h100.nope.tp1.b8"),
     "replicas[0].deployment"),
    (lambda doc: doc.update(routing=doc["routing"][:1]), "routing"),
    (lambda doc: doc.pop("energy_j"), "energy_j"),
])
def test_a_bad_saved_plan_is_one_line_naming_the_field(tmp_path, edit, field):
    import json

    from tests.test_stdout import wattsched

    path = tmp_path / "small.yaml"
    path.write_text(SMALL_WORKLOAD)
    saved = tmp_path / "plan.json"
    assert wattsched("plan", "--workload", str(path), "--no-baselines", "--out",
                     str(saved)).returncode == 0
    doc = json.loads(saved.read_text())
    edit(doc)
    saved.write_text(json.dumps(doc))
    result = wattsched("replay", "--workload", str(path), "--plan", str(saved))
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert str(saved) in lines[0]
    assert field in lines[0]


def test_a_trace_workload_refuses_a_seed(tmp_path):
    from tests.test_stdout import wattsched

    trace = tmp_path / "trace.csv"
    trace.write_text("arrival_s,input_tokens,output_tokens,kind\n0.5,100,20,chat\n")
    path = tmp_path / "w.yaml"
    path.write_text(f"trace: {trace}\nhorizon_s: 60\n")
    result = wattsched("replay", "--workload", str(path), "--seed", "3")
    assert result.returncode == 2
    assert "seed" in result.stderr


def test_replay_command_names_a_bad_option():
    from tests.test_stdout import wattsched

    result = wattsched("replay", "--time-limit", "-1")
    assert result.returncode == 2
    assert "--time-limit" in result.stderr
    assert result.stdout == ""


def test_plan_replay_reports_the_replay_beside_the_plan(tmp_path):
    from tests.test_stdout import one_json_document, wattsched

    path = tmp_path / "small.yaml"
    path.write_text(SMALL_WORKLOAD)
    doc = one_json_document(wattsched("plan", "--workload", str(path), "--no-baselines",
                                      "--replay", "--format", "json"))
    replay = doc["replay"]
    assert replay["planned_energy_j"] == pytest.approx(doc["energy_j"], rel=1e-5)
    assert replay["requests"] == doc["requests"]
    assert replay["replayed_energy_j"] > 0
    assert 0.0 <= replay["slo_attainment"] <= 1.0
    plain = one_json_document(wattsched("plan", "--workload", str(path), "--no-baselines",
                                        "--no-replay", "--format", "json"))
    assert "replay" not in plain


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    from tests.test_stdout import wattsched

    folder = tmp_path_factory.mktemp("report")
    workload = folder / "small.yaml"
    workload.write_text(SMALL_WORKLOAD)
    result = wattsched("replay", "--workload", str(workload), "--report", str(folder / "out"))
    assert result.returncode == 0, result.stderr
    return folder / "out"


def test_replay_report_is_one_page_with_its_pictures_embedded(report):
    names = {p.name for p in report.iterdir()}
    assert {"index.html", "energy.png", "latency_chat.png", "latency_code.png", "power.png",
            "load.png"} <= names
    for png in report.glob("*.png"):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = (report / "index.html").read_text()
    assert page.count("data:image/png;base64,") == len(list(report.glob("*.png")))
    assert "<table>" in page
    assert "optimised" in page
    assert not [p for p in report.iterdir() if p.suffix == ".tmp"]


def test_replay_report_renders_in_a_headless_browser(report, tmp_path):
    import shutil
    import subprocess

    browser = next((shutil.which(name) for name in ("chromium", "chromium-browser",
                                                    "google-chrome") if shutil.which(name)),
                   None)
    if browser is None:
        pytest.skip("no headless browser installed")
    shot = tmp_path / "page.png"
    subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu",
                    "--disable-background-networking", "--no-first-run",
                    f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}",
                    "--window-size=1200,3000", (report / "index.html").as_uri()],
                   check=True, capture_output=True, timeout=120)
    from matplotlib.image import imread

    pixels = imread(shot)
    # A rendered page: more than a blank screen of one colour.
    assert pixels.std() > 0.05


def test_unused_devices_idle_adds_their_idle_power_over_the_window(planned):
    from energy_models.catalog.specs import get_device
    from scheduler.replay.compare import replay_plans

    outcome, workload = planned
    fleet = load_fleet()
    off, _ = replay_plans(outcome, workload.requests, fleet)
    idle_fleet = fleet.model_copy(update={"unused_devices": "idle"})
    on, _ = replay_plans(outcome, workload.requests, idle_fleet)
    solution, deployments = outcome.plan.solution, outcome.built.deployments
    used = {pool.id: int((solution.replicas * deployments.tp)[deployments.pool == pool.id].sum())
            for pool in fleet.pools}
    unused_w = sum((pool.count - used[pool.id]) * get_device(pool.device).idle_w
                   for pool in fleet.pools)
    assert unused_w > 0
    window_s = off["plans"]["optimised"]["replayed_energy_j"] / off["plans"]["optimised"][
        "mean_power_w"]
    extra_j = on["plans"]["optimised"]["idle_energy_j"] - off["plans"]["optimised"][
        "idle_energy_j"]
    assert extra_j == pytest.approx(unused_w * window_s)
    assert on["plans"]["optimised"]["peak_power_w"] == pytest.approx(
        off["plans"]["optimised"]["peak_power_w"] + unused_w)


def test_a_bare_yaml_off_reads_as_off(tmp_path):
    path = tmp_path / "fleet.yaml"
    path.write_text("pools: [{id: a, device: H100, count: 2}]\nllms: [llama-3.1-8b]\n"
                    "unused_devices: off\n")
    assert load_fleet(path).unused_devices == "off"
    path.write_text("pools: [{id: a, device: H100, count: 2}]\nllms: [llama-3.1-8b]\n"
                    "unused_devices: idle\n")
    assert load_fleet(path).unused_devices == "idle"
