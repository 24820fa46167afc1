"""Step-level costs: the planner's price per request is their steady state, exactly, and a
calibrated copy reproduces a fitted price."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from energy_models.analytical.model import analytical_costs, shipped_constants
from energy_models.catalog.specs import get_device, get_llm
from energy_models.steps import StepCosts

CASES = [
    ("llama-3.1-8b", "H100-SXM", 500, 200, 32, 1, np.inf),
    ("llama-3.1-70b", "H100-SXM", 2000, 300, 64, 4, 400.0),
    ("llama-3.1-8b", "A100-SXM-80GB", 100, 50, 1, 1, np.inf),
]


@pytest.mark.parametrize(("llm", "device", "tokens_in", "tokens_out", "batch", "tp", "cap_w"),
                         CASES)
def test_steady_state_is_the_planners_price(llm, device, tokens_in, tokens_out, batch, tp,
                                            cap_w):
    work = pd.DataFrame({"llm": [llm], "device": [device], "input_tokens": [tokens_in],
                         "output_tokens": [tokens_out], "batch": [batch], "tp": [tp],
                         "power_cap_w": [cap_w]})
    price = analytical_costs(work, shipped_constants()["vllm"]).iloc[0]
    steps = StepCosts(get_llm(llm), get_device(device), tp, shipped_constants()["vllm"], cap_w)
    replica_s, energy_j = steps.steady_state(batch, tokens_in, tokens_out)
    assert replica_s == pytest.approx(price["replica_s"], rel=1e-12)
    assert energy_j == pytest.approx(price["energy_j"], rel=1e-12)
    assert steps.idle_power_w == pytest.approx(price["idle_power_w"])


def test_prefill_chunks_add_up_to_the_whole_prefill():
    steps = StepCosts(get_llm("llama-3.1-8b"), get_device("H100-SXM"), 1,
                      shipped_constants()["vllm"])
    whole_s, _ = steps.prefill(0, 3000)
    chunks_s = sum(steps.prefill(done, 1000)[0] for done in (0, 1000, 2000))
    assert chunks_s == pytest.approx(whole_s)
    assert steps.prefill(1000, 1000)[0] > steps.prefill(0, 1000)[0] - steps.prefill(0, 0)[0]


def test_a_calibrated_copy_has_the_fitted_steady_state():
    steps = StepCosts(get_llm("llama-3.1-8b"), get_device("H100-SXM"), 1,
                      shipped_constants()["vllm"])
    replica_s, energy_j = steps.steady_state(64, 700, 180)
    fitted = steps.calibrated(64, 700, 180, replica_s=replica_s * 1.3, energy_j=energy_j * 0.8)
    assert fitted.steady_state(64, 700, 180) == pytest.approx((replica_s * 1.3, energy_j * 0.8))
    assert fitted.idle_power_w == steps.idle_power_w
