"""Base power (what an online replica draws whatever its load) and ``plan --verify``."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from scheduler.build import base_power_w
from scheduler.inventory import load_fleet
from scheduler.pipeline import run_plan
from scheduler.replay.verify import burst_factor, verify_plan
from tests.test_stdout import SMALL_WORKLOAD, one_json_document, wattsched
from workloads.errors import WorkloadError
from workloads.spec import load_workload, parse_workload


def family(throughput: list[float], power_w: list[float], idle_w: float = 50.0,
           recompute_tokens: list[float] | None = None):
    """One (pool, llm, tp) family with one class, levels in batch order: occupancy
    1/throughput, gross energy power x occupancy."""
    candidates = pd.DataFrame({"pool": "p", "llm": "m", "tp": 1, "idle_power_w": idle_w,
                               "batch": range(len(throughput)),
                               "recompute_tokens": recompute_tokens or 0.0})
    occupancy = 1.0 / np.array([throughput])
    gross = occupancy * np.array([power_w])
    return candidates, occupancy, gross, np.ones_like(occupancy)


def test_a_concave_family_is_priced_on_its_hull_chords():
    # Power jumps to 300 W at the first level, then grows 10 W per request/s.
    candidates, occupancy, gross, weights = family([1.0, 10.0, 20.0], [300.0, 390.0, 490.0])
    base = base_power_w(candidates, occupancy, gross, weights)
    assert base[0] == pytest.approx(50.0)  # the chord from idle at zero load
    assert base[1] == pytest.approx(390.0 - 10.0 * 10.0)
    assert base[2] == pytest.approx(490.0 - 10.0 * 20.0)
    # Exact at full load: base plus the per-request rest gives the level's own power.
    per_request_j = gross[0] - base * occupancy[0]
    assert base + per_request_j / occupancy[0] == pytest.approx([300.0, 390.0, 490.0])


def test_a_preempting_level_is_priced_against_the_curve_not_part_of_it():
    # The largest batch preempts: less throughput than the level below for more power. It
    # must not bend the curve the other levels are priced on.
    clean = base_power_w(*family([1.0, 10.0, 20.0], [300.0, 390.0, 490.0]))
    candidates, occupancy, gross, weights = family([1.0, 10.0, 20.0, 15.0],
                                                   [300.0, 390.0, 490.0, 520.0],
                                                   recompute_tokens=[0, 0, 0, 300])
    base = base_power_w(candidates, occupancy, gross, weights)
    assert base[:3] == pytest.approx(clean)
    assert base[3] == pytest.approx(520.0 - 10.0 * 15.0)


def test_the_base_stays_below_every_class_so_each_class_is_exact_at_full_load():
    candidates = pd.DataFrame({"pool": "p", "llm": "m", "tp": 1, "idle_power_w": 50.0,
                               "batch": [1, 2], "recompute_tokens": 0.0})
    occupancy = np.array([[1.0, 0.1], [1.0, 0.1]])
    power = np.array([[300.0, 480.0], [250.0, 200.0]])  # class 1 draws little at level 2
    weights = np.array([[1.0, 9.0], [1.0, 1.0]])
    base = base_power_w(candidates, occupancy, power * occupancy, weights)
    assert base[1] <= 200.0 + 1e-9
    assert np.all(power * occupancy - base[None, :] * occupancy >= -1e-12)


def test_a_level_below_the_hull_keeps_its_own_point_and_stays_within_bounds():
    # The middle level draws more than the hull (a bad level): it is priced through its own
    # point with the hull's slope, and every base lies between idle and the level's power.
    candidates, occupancy, gross, weights = family([1.0, 10.0, 20.0], [300.0, 480.0, 490.0])
    base = base_power_w(candidates, occupancy, gross, weights)
    power = gross[0] / occupancy[0]
    assert np.all(base >= 50.0 - 1e-9)
    assert np.all(base <= power + 1e-9)
    assert base[2] == pytest.approx(490.0 - 1.0 * 20.0)  # hull 480 -> 490 over 10 -> 20


def test_burst_factor_is_the_busiest_windows_rate_over_the_mean():
    steady = np.arange(0.0, 100.0, 1.0)
    assert burst_factor(steady, 100.0) == pytest.approx(1.0)
    bursty = np.concatenate([steady, np.full(90, 55.0)])  # 90 more in one 10 s window
    assert burst_factor(bursty, 100.0) == pytest.approx(100.0 / 19.0, rel=0.02)


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    path = tmp_path_factory.mktemp("verify") / "small.yaml"
    path.write_text(SMALL_WORKLOAD)
    return path


def test_online_replicas_draw_more_than_idle_whenever_they_are_on(small):
    built = run_plan(load_fleet(), load_workload(small), baselines=False).built
    deployments = built.problem.deployments
    assert all(d.base_power_w >= d.idle_power_w for d in deployments)
    assert np.mean([d.base_power_w > 1.5 * d.idle_power_w for d in deployments]) > 0.5


def test_targets_already_met_need_no_re_solve(small, tmp_path):
    lenient = tmp_path / "lenient.yaml"
    lenient.write_text(SMALL_WORKLOAD + "slo_attainment: {chat: 0.05, code: 0.05}\n")
    workload = load_workload(lenient)
    outcome = run_plan(load_fleet(), workload, baselines=False)
    verification = verify_plan(outcome, workload, load_fleet())
    assert verification.met
    assert verification.solves == 0
    assert verification.plan is outcome.plan
    assert len(verification.rounds) == 1


def test_verify_meets_every_target_in_replay_or_says_why(small):
    doc = one_json_document(wattsched("plan", "--workload", str(small), "--no-baselines",
                                      "--verify", "--format", "json"))
    verify = doc["verify"]
    rounds = verify["rounds"]
    assert verify["re_solves"] >= len(rounds) - 1
    assert rounds[0]["headroom"] == {"chat": 1.0, "code": 1.0}
    by_kind = doc["replay"]["slo_by_kind"]
    if verify["met"]:
        assert all(by_kind[kind]["attainment"] >= 0.99 for kind in by_kind)
        # The plan kept is the cheapest replay that met every target.
        met = [r["replayed_energy_j"] for r in rounds if r["met"]]
        assert doc["replay"]["replayed_energy_j"] == pytest.approx(min(met), rel=1e-5)
    else:
        assert "short of target" in verify["reason"]
    # The first round is the plan before any tightening, missing a target.
    assert not rounds[0]["met"]


def test_an_slo_attainment_for_a_kind_with_no_requests_is_refused():
    raw = {"horizon_s": 60, "seed": 1, "traffic": [{"preset": "azure-2023-conv"}],
           "slo_attainment": {"code": 0.9}}
    with pytest.raises(WorkloadError, match=r"slo_attainment\.code"):
        parse_workload(raw, "w.yaml")


def test_an_slo_attainment_above_one_is_refused():
    raw = {"horizon_s": 60, "seed": 1, "traffic": [{"preset": "azure-2023-conv"}],
           "slo_attainment": {"chat": 1.5}}
    with pytest.raises(WorkloadError, match="slo_attainment"):
        parse_workload(raw, "w.yaml")


def test_no_room_to_queue_anywhere_still_leaves_a_class_its_closest_deployments(small):
    import dataclasses

    from scheduler.replay.verify import _room_to_queue

    problem = run_plan(load_fleet(), load_workload(small), baselines=False).built.problem
    strict = dataclasses.replace(problem, classes=tuple(
        dataclasses.replace(c, slo_ttft_s=1e-6) for c in problem.classes))
    allowed = _room_to_queue(strict) & strict.servable
    assert allowed.any(axis=1).all()
    assert allowed.sum() < _room_to_queue(problem).sum()


def test_a_baseline_is_verified_by_its_own_rule(small):
    workload = load_workload(small)
    outcome = run_plan(load_fleet(), workload)
    verification = verify_plan(outcome, workload, load_fleet(), name="performance_first")
    assert verification.plan.name == "performance_first"
    assert verification.plan.solution.solver == "baseline:performance_first"
    if verification.met:
        assert all(v["attainment"] >= 0.99 for v in verification.replayed["slo_by_kind"].values())
    else:
        assert "short of target" in verification.reason


def test_a_refining_miss_is_blamed_on_the_kinds_it_lowered_so_no_solve_repeats(small,
                                                                                 monkeypatch):
    """Kinds share replicas: here chat meets its target only while code keeps a little more
    headroom than code needs itself, so lowering code's headroom shows up as a chat miss.
    The search must still converge without solving the same tightened problem twice."""
    import dataclasses
    from types import SimpleNamespace

    from scheduler.replay import verify

    workload = load_workload(small)
    outcome = run_plan(load_fleet(), workload, baselines=False)
    original = outcome.built.problem.occupancy_s
    kinds = outcome.built.classes.kind.to_numpy()
    solved: list[tuple[float, float]] = []
    code = workload.requests.arrival_s[workload.requests.kind == "code"].to_numpy(float)
    first = max(verify.HEADROOM_FACTOR, burst_factor(code, workload.horizon_s))
    code_needs, chat_needs_code = 0.99 * first ** 0.5, 1.01 * first ** 0.5

    def solve(problem):
        ratio = problem.occupancy_s[original > 0] / original[original > 0]
        rows = (original > 0).nonzero()[0]
        solved.append(tuple(round(float(ratio[rows == k].max()), 9) for k in
                            [int((kinds == kind).nonzero()[0][0]) for kind in ("chat", "code")]))
        return outcome.plan.solution

    def make_plan(name, built, solution, requests, latency):
        chat, code = solved[-1]
        return SimpleNamespace(energy_j=chat + code, solution=solution,
                               headroom={"chat": chat, "code": code})

    def replay_plan(built, plan, requests, fleet):
        room = getattr(plan, "headroom", {"chat": 1.0, "code": 1.0})
        met = {"code": room["code"] >= code_needs,
               "chat": room["chat"] >= 1.3 and room["code"] >= chat_needs_code}
        return None, {"replayed_energy_j": room["chat"] + room["code"],
                      "slo_by_kind": {k: {"attainment": 1.0 if ok else 0.5}
                                      for k, ok in met.items()}}

    monkeypatch.setattr(verify, "make_plan", make_plan)
    monkeypatch.setattr(verify, "replay_plan", replay_plan)
    monkeypatch.setattr(verify, "price_latency", lambda *args: None)
    verification = verify.verify_plan(dataclasses.replace(outcome, solve=solve), workload,
                                      load_fleet(), max_rounds=20, refine_rounds=10)
    assert verification.met
    assert len(solved) == len(set(solved))
    kept = verification.plan.headroom
    assert kept["code"] >= chat_needs_code
    assert kept["chat"] >= 1.3
