import math
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from energy_models.analytical.fit import (
    PREDICTION_RTOL,
    ShippedFit,
    fit_engine,
    fit_shipped_constants,
    mdape,
)
from energy_models.analytical.model import analytical_costs, shipped_constants
from energy_models.cost import AnalyticalSource, CostChain, default_chain
from energy_models.errors import CalibrationError
from energy_models.measurements.mlenergy import load_v2
from energy_models.predictor.model import analytical_targets
from energy_models.registry import UnknownNameError
from energy_models.stacks import itl_is_step

VLLM = shipped_constants()["vllm"]


def work(**overrides):
    base = {"llm": "llama-3.1-8b", "device": "H100-SXM", "input_tokens": 512,
            "output_tokens": 256, "batch": 32, "tp": 1}
    base.update(overrides)
    return pd.DataFrame([base])


def test_costs_are_consistent():
    cost = analytical_costs(work(), VLLM).iloc[0]
    assert cost.energy_j == pytest.approx(cost.power_w * cost.replica_s)
    assert cost.idle_power_w < cost.power_w <= cost.peak_power_w + 1e-9
    assert cost.ttft_s < cost.runtime_s
    assert cost.replica_s < cost.runtime_s  # batching shares the replica


def test_itl_is_one_step_where_the_stack_streams_a_token_per_step():
    """Today's vLLM chunks other requests' prefills into the steps: its measured ITL (the
    median streamed gap) is one decode step. The older stacks' ITL is the time per output
    token, other requests' prefill stalls included. A request's wall time has the stalls
    either way."""
    long_prompts = pd.concat([work(input_tokens=1024, output_tokens=64, batch=b)
                              for b in (1, 32)], ignore_index=True)
    mean = analytical_costs(long_prompts, VLLM)
    step = analytical_costs(long_prompts, VLLM, itl_is_step=True)
    n, batch = long_prompts.output_tokens, long_prompts.batch
    # replica_s = t_prefill + n t_step / b and ttft = t_prefill + t_step give the step.
    t_step = (step.replica_s - step.ttft_s) / (n / batch - 1.0)
    np.testing.assert_allclose(step.itl_s[1], t_step[1], rtol=1e-9)
    assert step.itl_s[0] == pytest.approx(mean.itl_s[0])  # Alone: nothing stalls it.
    assert mean.itl_s[1] > 1.5 * step.itl_s[1]
    pd.testing.assert_series_equal(step.runtime_s, mean.runtime_s)
    assert step.runtime_s[1] > step.ttft_s[1] + n[1] * step.itl_s[1]
    assert itl_is_step("vllm")
    assert not itl_is_step("vllm-0.5")
    assert not itl_is_step("hf")
    assert not itl_is_step("cpu")
    targets = analytical_targets(pd.concat([long_prompts.assign(engine="vllm"),
                                            long_prompts.assign(engine="vllm-0.5")],
                                           ignore_index=True), shipped_constants())
    np.testing.assert_allclose(targets.itl_s[:2], step.itl_s, rtol=1e-12)
    old = analytical_costs(long_prompts, shipped_constants()["vllm-0.5"])
    np.testing.assert_allclose(targets.itl_s[2:], old.replica_s * batch / n, rtol=1e-12)


def test_energy_per_request_falls_with_batch_and_rises_with_tokens():
    costs = analytical_costs(
        pd.concat([work(batch=1), work(batch=8), work(batch=64), work(output_tokens=512)],
                  ignore_index=True), VLLM)
    assert costs.energy_j[0] > costs.energy_j[1] > costs.energy_j[2]
    assert costs.energy_j[3] > analytical_costs(work(), VLLM).energy_j[0]


def test_faster_memory_means_lower_latency():
    costs = analytical_costs(pd.concat([work(device="A100-40GB"), work(device="H100-SXM"),
                                        work(device="L4")], ignore_index=True), VLLM)
    assert costs.itl_s[1] < costs.itl_s[0] < costs.itl_s[2]


def test_power_cap_trades_time_for_power():
    free = analytical_costs(work(power_cap_w=math.nan), VLLM).iloc[0]
    capped = analytical_costs(work(power_cap_w=200.0), VLLM).iloc[0]
    assert capped.power_w <= 200.0 + 1e-9
    assert capped.itl_s > free.itl_s


def test_chain_reports_its_source_and_keeps_row_order():
    rows = pd.concat([work(device="Xeon-Platinum-8480+"), work(), work(device="L4")],
                     ignore_index=True)
    costs = default_chain(predict=False).costs(rows)
    assert costs.source.tolist() == ["analytical:cpu", "analytical:vllm", "analytical:vllm"]
    direct = analytical_costs(rows.iloc[[1]], VLLM)
    assert costs.energy_j.iloc[1] == pytest.approx(direct.energy_j.iloc[0])
    assert costs.energy_j.iloc[0] != pytest.approx(costs.energy_j.iloc[1])


def test_chain_prefers_the_first_covering_source():
    class Measured:
        name = "measured"

        def covers(self, work):
            return (work.device == "L4").to_numpy()

        def costs(self, work):
            return analytical_costs(work, VLLM) * 2

    chain = CostChain([Measured(), AnalyticalSource()])
    costs = chain.costs(pd.concat([work(), work(device="L4")], ignore_index=True))
    assert costs.source.tolist() == ["analytical:vllm", "measured"]


def test_unknown_names_and_engines_fail_clearly():
    with pytest.raises(UnknownNameError, match="did you mean"):
        default_chain().costs(work(device="H100-SMX"))
    with pytest.raises(CalibrationError, match="engine"):
        AnalyticalSource("tgi").costs(work())


def test_fit_recovers_constants_from_synthetic_measurements():
    rng = np.random.default_rng(0)
    rows = pd.DataFrame({
        "llm": rng.choice(["llama-3.1-8b", "gemma-2-9b", "llama-3.1-70b"], 60),
        "device": rng.choice(["A100-80GB", "H100-SXM"], 60),
        "input_tokens": 256.0,
        "output_tokens": rng.uniform(100, 500, 60),
        "batch": rng.choice([8.0, 32.0, 128.0], 60),
        "tp": 4,
    })
    costs = analytical_costs(rows, VLLM)
    rows["energy_j"] = costs.energy_j
    rows["time_per_token_s"] = costs.replica_s * rows.batch / rows.output_tokens
    fit = fit_engine(rows)
    assert fit.energy_mdape < 1.0
    assert fit.time_mdape < 1.0


def test_shipped_constants_are_the_fit_of_the_shared_data(shared_data):
    fit = fit_shipped_constants(str(shared_data))
    assert fit.stale(shipped_constants()) == {}
    assert set(fit.tables) == {"vllm", "vllm-0.5", "hf"}
    fits = fit.provenance["fits"]
    assert fits["vllm-0.5"]["rows"] > 250  # ML.ENERGY v2
    assert fits["vllm"]["rows"] > 200  # ML.ENERGY v3, H100 only
    assert "v3" in fits["vllm"]["data"]
    assert "v2" in fits["vllm-0.5"]["data"]
    assert "v1" in fits["hf"]["data"]
    # v1 has no tensor-parallel row: hf borrows vllm-0.5's tp_overhead.
    assert fit.constants["hf"].tp_overhead == fit.constants["vllm-0.5"].tp_overhead
    assert fits["hf"]["fixed"]["tp_overhead"] == fit.constants["vllm-0.5"].tp_overhead
    assert "tp_overhead" not in fits["vllm"]["fixed"]
    assert set(fit.errors.engine) == {"vllm", "vllm-0.5", "hf"}
    assert set(fit.errors.device) >= {"A100-40GB", "H100-SXM", "V100", "A40"}
    assert set(fit.errors.loc[fit.errors.engine == "vllm", "device"]) == {"H100-SXM"}


def test_v2_loader_maps_every_model(shared_data):
    table, skipped = load_v2(shared_data / "mlenergy-leaderboard-v1v2")
    assert skipped == []
    assert set(table.device) == {"A100-40GB", "H100-SXM"}
    assert mdape(np.array([1.1, 0.9]), np.array([1.0, 1.0])) == pytest.approx(10.0)


def test_constants_whose_predictions_drift_beyond_the_tolerance_are_stale():
    shipped = shipped_constants()
    vllm = shipped["vllm"]
    table = load_v2_like_rows()
    fit = ShippedFit(shipped, {}, pd.DataFrame(), {"vllm": table})
    assert fit.stale(shipped) == {}
    # bw_eff scales decode time, so predictions move by about as much as it does.
    nudged = replace(vllm, bw_eff=vllm.bw_eff * (1 + PREDICTION_RTOL / 4))
    assert fit.stale({**shipped, "vllm": nudged}) == {}
    moved = replace(vllm, bw_eff=vllm.bw_eff * (1 + 10 * PREDICTION_RTOL))
    assert list(fit.stale({**shipped, "vllm": moved})) == ["vllm"]
    assert fit.stale({"hf": shipped["hf"]}) == {"vllm": math.inf}


def load_v2_like_rows() -> pd.DataFrame:
    """Rows in the fit's columns, priced by the shipped vLLM constants."""
    from energy_models.analytical.fit import _predict

    work = pd.DataFrame({"llm": "llama-3.1-8b", "device": "H100-SXM", "input_tokens": 256,
                         "output_tokens": [64, 256, 512], "batch": [1, 8, 64], "tp": 1})
    energy, time = _predict(work, VLLM)
    return work.assign(energy_j=energy, time_per_token_s=time)
