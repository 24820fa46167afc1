"""Batch jobs: the job file, the schedule on the bundled example, the baselines and the
independent checker."""

from __future__ import annotations

import dataclasses
import json
import re

import numpy as np
import pytest

from energy_models.cost import default_chain
from scheduler.batch import build_batch
from scheduler.inventory import load_fleet
from solvers.batch.baselines import BATCH_BASELINES, run_batch_baseline
from solvers.batch.checker import check_schedule
from solvers.batch.milp import solve_batch_milp
from tests.test_stdout import wattsched
from workloads.errors import WorkloadError
from workloads.jobs import load_jobs

SMALL_JOBS = """
jobs:
  - {id: eval, llm: llama-3.1-8b, requests: 20000, input_tokens: 700, output_tokens: 180,
     release_s: 0, deadline_s: 3600}
  - {id: synth, min_quality: 70, requests: 5000, input_tokens: 300, output_tokens: 600,
     release_s: 1800, deadline_s: 7200}
"""


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    path = tmp_path_factory.mktemp("jobs") / "jobs.yaml"
    path.write_text(SMALL_JOBS)
    fleet = load_fleet(None)
    jobs = load_jobs(path)
    return build_batch(fleet, jobs, default_chain(fleet.defaults.engine, None), 600.0)


def test_every_baseline_and_the_milp_pass_the_checker_and_the_milp_is_no_worse(small):
    problem = small.problem
    results = {name: run_batch_baseline(name, problem) for name in BATCH_BASELINES}
    for name, schedule in results.items():
        report = check_schedule(problem, schedule)
        assert report.ok, (name, report.violations)
    best = min(results.values(), key=lambda s: s.objective_j)
    optimised = solve_batch_milp(problem, gap_rel=1e-4, time_limit_s=60, start=best)
    assert check_schedule(problem, optimised).ok
    assert optimised.objective_j <= best.objective_j * (1 + 1e-9)
    assert optimised.bound_j is not None
    assert optimised.bound_j <= optimised.objective_j * (1 + 1e-9)


def test_the_checker_catches_a_late_job_extra_replicas_and_a_wrong_objective(small):
    problem = small.problem
    good = run_batch_baseline("edf_fastest", problem)
    late = dataclasses.replace(good, slot=np.full_like(good.slot, problem.n_slots - 1))
    assert any("after its deadline" in v for v in check_schedule(problem, late).violations)
    crowded = dataclasses.replace(good, replicas=good.replicas + 100)
    assert any("devices on or loading" in v for v in check_schedule(problem, crowded).violations)
    wrong = dataclasses.replace(good, objective_j=good.objective_j * 0.5)
    assert any("objective" in v for v in check_schedule(problem, wrong).violations)
    short = dataclasses.replace(good, served=good.served * 0.5)
    assert any("requests served" in v for v in check_schedule(problem, short).violations)


def test_batch_replicas_draw_idle_power_between_full_batches(small):
    # An offline queue keeps the batch full, then stops: no online base power above idle.
    assert all(d.base_power_w == d.idle_power_w for d in small.problem.base.deployments)


def test_switching_on_costs_the_load_time_at_idle_power(small):
    problem = small.problem
    schedule = run_batch_baseline("edf_fastest", problem)
    report = check_schedule(problem, schedule)
    starts = np.maximum(np.diff(schedule.replicas, axis=1, prepend=0), 0)
    idle_w = np.array([d.idle_power_w for d in problem.base.deployments])
    switch_j = float(np.sum(starts * (idle_w * problem.load_s)[:, None]))
    assert switch_j > 0
    assert report.energy_j > switch_j


def test_an_impossible_deadline_is_explained(tmp_path):
    path = tmp_path / "jobs.yaml"
    path.write_text("jobs:\n  - {id: huge, llm: llama-3.1-70b, requests: 100000000, "
                    "input_tokens: 4000, output_tokens: 500, deadline_s: 3600}\n")
    result = wattsched("schedule", str(path), "--format", "json", "--time-limit", "10")
    assert result.returncode == 2
    assert result.stdout == ""
    assert "huge" in result.stderr


@pytest.mark.parametrize(("text", "field"), [
    ("jobs:\n  - {id: a, requests: 10, input_tokens: 5, output_tokens: 5, deadline_s: 0}\n",
     "jobs[0]"),
    ("jobs:\n  - {id: a, llm: nope, requests: 10, input_tokens: 5, output_tokens: 5, "
     "deadline_s: 60}\n", "jobs[0].llm"),
    ("jobs:\n  - {id: a, requests: 10, input_tokens: 5, deadline_s: 60}\n", "jobs[0]"),
    ("jobs:\n  - {id: a, requests: 10, input_tokens: 5, output_tokens: 5, deadline_s: 60,"
     " speed: 3}\n", "jobs[0].speed"),
])
def test_bad_job_files_name_the_field(tmp_path, text, field):
    path = tmp_path / "jobs.yaml"
    path.write_text(text)
    with pytest.raises(WorkloadError, match=re.escape(f"{path}: {field}")):
        load_jobs(path)


def test_csv_jobs_match_yaml(tmp_path):
    path = tmp_path / "jobs.csv"
    path.write_text("id,llm,min_quality,requests,input_tokens,output_tokens,release_s,"
                    "deadline_s\neval,llama-3.1-8b,,20000,700,180,0,3600\n"
                    "synth,,70,5000,300,600,1800,7200\n")
    yaml_path = tmp_path / "jobs.yaml"
    yaml_path.write_text(SMALL_JOBS)
    from_csv, from_yaml = load_jobs(path).table, load_jobs(yaml_path).table
    assert from_csv.drop(columns="llm").equals(from_yaml.drop(columns="llm"))
    assert list(from_csv.llm) == list(from_yaml.llm)


def test_schedule_json_on_the_bundled_example_meets_every_deadline_and_beats_each_rule():
    first = wattsched("schedule", "--format", "json")
    assert first.returncode == 0, first.stderr
    doc = json.loads(first.stdout)
    assert doc["deadlines_met"] is True
    for key in ("energy_j", "active_energy_j", "idle_energy_j", "switch_energy_j", "status",
                "gap", "solve_time_s", "jobs", "baselines"):
        assert key in doc
    assert all(job["deadline_met"] and job["finish_s"] <= job["deadline_s"]
               for job in doc["jobs"])
    assert doc["energy_j"] == pytest.approx(
        doc["active_energy_j"] + doc["idle_energy_j"] + doc["switch_energy_j"], abs=0.01)
    for name, baseline in doc["baselines"].items():
        if baseline["feasible"]:
            assert doc["energy_j"] <= baseline["energy_j"] * (1 + 1e-9), name


def test_the_saved_schedule_repeats_byte_for_byte(tmp_path):
    path = tmp_path / "jobs.yaml"
    path.write_text(SMALL_JOBS)
    for name in ("a.json", "b.json"):
        result = wattsched("schedule", str(path), "--out", str(tmp_path / name), "--format",
                           "json")
        assert result.returncode == 0, result.stderr
    assert (tmp_path / "a.json").read_bytes() == (tmp_path / "b.json").read_bytes()


def test_schedule_with_cpsat_passes_the_checker_and_meets_the_deadlines(tmp_path):
    path = tmp_path / "jobs.yaml"
    path.write_text(SMALL_JOBS)
    result = wattsched("schedule", str(path), "--solver", "cpsat", "--slot", "1800",
                       "--time-limit", "10", "--format", "json")
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["solver"] == "cpsat"
    assert doc["deadlines_met"] is True


@pytest.mark.parametrize(("job", "message"), [
    ("release_s: 100, deadline_s: 200", "no whole 300 s slot lies between its release"),
    ("input_tokens: 500000, deadline_s: 2000", "no deployment of the fleet can run it"),
])
def test_a_job_no_slot_or_deployment_can_take_is_named(tmp_path, job, message):
    path = tmp_path / "jobs.yaml"
    fields = "{id: lonely, requests: 10, output_tokens: 5, " + job
    if "input_tokens" not in job:
        fields += ", input_tokens: 5"
    path.write_text(f"jobs:\n  - {fields}}}\n")
    result = wattsched("schedule", str(path))
    assert result.returncode == 2
    assert message in result.stderr
    assert "lonely" in result.stderr
