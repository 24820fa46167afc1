"""The replay's serving simulation: one request's timeline from the step costs, the planner's
steady state reproduced on a saturated replica, KV preemption, routing shares, determinism."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from energy_models.analytical.model import shipped_constants
from energy_models.catalog.specs import get_device, get_llm
from energy_models.steps import StepCosts
from scheduler.replay.engine import ReplicaSpec, vllm_replica, vllm_token_budget
from scheduler.replay.simulate import Requests, simulate
from scheduler.replay.summary import weighted_percentile

LLM, DEVICE = "llama-3.1-8b", "H100-SXM"


def costs() -> StepCosts:
    return StepCosts(get_llm(LLM), get_device(DEVICE), 1, shipped_constants()["vllm"])


def replica(rid: str = "r0", deployment: int = 0, *, max_batch: int = 64,
            kv_capacity_tokens: int | None = None) -> ReplicaSpec:
    spec = vllm_replica(rid, deployment, costs(), max_batch)
    if kv_capacity_tokens is None:
        return spec
    return dataclasses.replace(spec, kv_capacity_tokens=kv_capacity_tokens)


def requests(arrival_s, input_tokens, output_tokens, request_class=0) -> Requests:
    arrival_s = np.asarray(arrival_s, dtype=float)
    n = len(arrival_s)
    return Requests(arrival_s, np.broadcast_to(request_class, n).astype(int),
                    np.broadcast_to(input_tokens, n).astype(int),
                    np.broadcast_to(output_tokens, n).astype(int))


def test_one_request_alone_takes_its_prefill_then_one_step_per_token():
    step_costs = costs()
    result = simulate([replica()], np.ones((1, 1)), requests([1.0], 500, 4), horizon_s=10.0)
    prefill_s, prefill_w = step_costs.prefill(0, 500)
    steps = [step_costs.decode_step(1, 500 + k) for k in (1, 2, 3)]
    assert result.ttft_s[0] == pytest.approx(prefill_s)
    assert result.e2e_s[0] == pytest.approx(prefill_s + sum(s for s, _ in steps))
    assert sorted(result.itl_s) == pytest.approx(sorted(s for s, _ in steps))
    assert result.itl_count.tolist() == [1, 1, 1]
    busy_j = prefill_s * prefill_w + sum(s * w for s, w in steps)
    assert result.busy_energy_j[0] == pytest.approx(busy_j)
    idle_j = step_costs.idle_power_w * (10.0 - result.busy_s[0])
    assert result.energy_j == pytest.approx(busy_j + idle_j)


def test_a_saturated_replica_reproduces_the_planners_steady_state():
    # Requests arrive faster than the replica serves them, so it runs full batches.
    batch, tokens_in, tokens_out = 32, 400, 200
    step_costs = costs()
    planned_s, planned_j = step_costs.steady_state(batch, tokens_in, tokens_out)
    n = 2000
    arrival_s = np.arange(n) * planned_s * 0.5
    result = simulate([replica(max_batch=batch)], np.ones((1, 1)),
                      requests(arrival_s, tokens_in, tokens_out))
    assert np.isfinite(result.e2e_s).all()
    assert result.busy_s[0] / n == pytest.approx(planned_s, rel=0.03)
    assert result.busy_energy_j[0] / n == pytest.approx(planned_j, rel=0.03)


def test_a_small_kv_cache_preempts_and_still_serves_every_token():
    # Room for about four sequences at full length, eight admitted at once.
    result = simulate([replica(max_batch=8, kv_capacity_tokens=4 * 1024)], np.ones((1, 1)),
                      requests(np.zeros(16), 512, 400))
    assert result.preemptions[0] > 0
    assert np.isfinite(result.e2e_s).all()
    assert result.itl_count.sum() == 399 * 16


def test_a_request_longer_than_the_cache_is_not_served():
    result = simulate([replica(kv_capacity_tokens=1024)], np.ones((1, 1)),
                      requests([0.0, 0.0], [2000, 100], 10))
    assert result.replica.tolist() == [-1, 0]
    assert np.isnan(result.e2e_s[0])
    assert np.isfinite(result.e2e_s[1])


def test_routing_follows_the_plans_shares_and_balances_replicas():
    specs = [replica("a0", 0), replica("a1", 0), replica("b0", 1)]
    shares = np.array([[300.0, 100.0]])
    result = simulate(specs, shares, requests(np.arange(400) * 0.01, 100, 20))
    counts = np.bincount(result.replica, minlength=3)
    assert counts[0] + counts[1] == 300
    assert counts[2] == 100
    assert abs(int(counts[0]) - int(counts[1])) <= 30


def test_the_same_requests_replay_the_same_way():
    rng = np.random.default_rng(3)
    arrival_s = np.sort(rng.uniform(0, 60, 300))
    load = requests(arrival_s, rng.integers(50, 2000, 300), rng.integers(1, 500, 300))
    first = simulate([replica("a"), replica("b")], np.ones((1, 1)), load)
    again = simulate([replica("a"), replica("b")], np.ones((1, 1)), load)
    assert np.array_equal(first.e2e_s, again.e2e_s, equal_nan=True)
    assert np.array_equal(first.itl_s, again.itl_s)
    assert first.energy_j == again.energy_j


def test_replicas_in_parallel_replay_exactly_as_one_by_one():
    rng = np.random.default_rng(4)
    arrival_s = np.sort(rng.uniform(0, 30, 300))
    load = requests(arrival_s, rng.integers(50, 2000, 300), rng.integers(1, 300, 300))
    specs = [replica("a"), replica("b"), replica("c", 1)]
    shares = np.array([[2.0, 1.0]])
    alone = simulate(specs, shares, load, horizon_s=30.0)
    parallel = simulate(specs, shares, load, horizon_s=30.0, workers=2)
    np.testing.assert_array_equal(alone.replica, parallel.replica)
    np.testing.assert_array_equal(alone.e2e_s, parallel.e2e_s)
    np.testing.assert_array_equal(alone.itl_s, parallel.itl_s)
    assert alone.energy_j == parallel.energy_j


def test_power_over_time_keeps_the_energy_and_idles_between_steps():
    from scheduler.replay.summary import power_over_time

    # Replica c belongs to a deployment no class is routed to: it only idles.
    result = simulate([replica("a"), replica("b"), replica("c", 1)], np.array([[1.0, 0.0]]),
                      requests([0.5, 3.2, 3.3], 800, 50), horizon_s=10.0)
    starts, power = power_over_time(result, resolution_s=0.5)
    assert len(starts) == power.shape[1]
    assert (power.sum(axis=1) * 0.5).sum() == pytest.approx(result.energy_j)
    idle_w = costs().idle_power_w
    assert power[:, -1] == pytest.approx([idle_w] * 3)
    assert power[2] == pytest.approx(np.full(power.shape[1], idle_w))
    assert power.max() > idle_w


def test_vllms_token_budget_follows_its_defaults_by_device():
    assert vllm_token_budget(get_device("H100-SXM")) == 8192
    assert vllm_token_budget(get_device("A100-80GB")) == 2048
    assert vllm_token_budget(get_device("L4")) == 2048


def test_runs_of_decode_steps_change_nothing_but_the_speed(monkeypatch):
    # Bursty mixed traffic on two small-cache replicas: runs are cut by arrivals, end at
    # finishes and stop where the KV blocks do; step by step must give the same timelines.
    import scheduler.replay.engine as engine

    rng = np.random.default_rng(5)
    n = 400
    arrival_s = np.sort(np.concatenate([rng.uniform(0, 60, n // 2),
                                        rng.uniform(20, 22, n // 2)]))
    work = Requests(arrival_s, np.zeros(n, dtype=int), rng.integers(20, 1500, n),
                    rng.integers(1, 300, n))
    specs = [replica("a", max_batch=32, kv_capacity_tokens=16 * 1024),
             replica("b", max_batch=8)]
    by_runs = simulate(specs, np.ones((1, 1)), work, horizon_s=60.0)
    monkeypatch.setattr(engine, "MAX_RUN_STEPS", 1)
    by_steps = simulate(specs, np.ones((1, 1)), work, horizon_s=60.0)
    assert (by_runs.steps[0]["steps"] > 1).any()
    assert len(by_runs.steps[0]["steps"]) < len(by_steps.steps[0]["steps"])
    assert by_runs.preemptions.tolist() == by_steps.preemptions.tolist()
    np.testing.assert_array_equal(by_runs.replica, by_steps.replica)
    for field in ("ttft_s", "e2e_s", "tpot_s"):
        np.testing.assert_allclose(getattr(by_runs, field), getattr(by_steps, field),
                                   rtol=1e-6, atol=1e-9)
    assert by_runs.energy_j == pytest.approx(by_steps.energy_j, rel=1e-6)
    assert by_runs.itl_count.sum() == by_steps.itl_count.sum()
    for q in (50, 90, 99):
        assert weighted_percentile(by_runs.itl_s, by_runs.itl_count, q) == pytest.approx(
            weighted_percentile(by_steps.itl_s, by_steps.itl_count, q), rel=1e-6)
