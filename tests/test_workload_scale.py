"""The workload ``scale`` knob: more (or fewer) arrivals over the same horizon."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from workloads.errors import WorkloadError
from workloads.requests import scale_arrivals
from workloads.spec import parse_workload

SYNTHETIC = {"horizon_s": 600, "seed": 2, "traffic": [{"preset": "azure-2023-conv"},
                                                      {"preset": "azure-2023-code"}]}


def trace(n: int = 1000, horizon_s: float = 100.0) -> pd.DataFrame:
    rng = np.random.default_rng(1)
    return pd.DataFrame({"arrival_s": np.sort(rng.uniform(0, horizon_s, n)),
                         "input_tokens": np.arange(n) + 1, "output_tokens": 7,
                         "kind": "chat"})


def test_synthetic_traffic_scales_every_rate():
    base = parse_workload(SYNTHETIC, "w.yaml")
    doubled = parse_workload({**SYNTHETIC, "scale": 2.0}, "w.yaml")
    assert doubled.horizon_s == base.horizon_s
    # Code traffic is bursty (an interarrival CV of several): its count is noisier.
    for kind, rel in (("chat", 0.1), ("code", 0.35)):
        ratio = (doubled.requests.kind == kind).sum() / (base.requests.kind == kind).sum()
        assert ratio == pytest.approx(2.0, rel=rel)


@pytest.mark.parametrize("scale", [0.3, 1.0, 2.5, 4.0])
def test_a_trace_is_copied_shifted_and_thinned_to_its_scale(scale):
    original = trace()
    scaled = scale_arrivals(original, 100.0, scale)
    assert len(scaled) == pytest.approx(scale * len(original), abs=int(np.ceil(scale)) + 1)
    assert scaled.arrival_s.between(0.0, 100.0, inclusive="left").all()
    assert scaled.arrival_s.is_monotonic_increasing
    # Each request travels with its tokens, at most once per copy.
    copies = scaled.input_tokens.value_counts()
    assert copies.max() <= int(np.ceil(scale))
    assert set(scaled.input_tokens) <= set(original.input_tokens)
    if scale == 1.0:
        pd.testing.assert_frame_equal(scaled, original)


def test_thinning_keeps_the_trace_even_over_time():
    half = scale_arrivals(trace(4000), 100.0, 0.5)
    per_decile = np.histogram(half.arrival_s, bins=10, range=(0, 100))[0]
    full = np.histogram(trace(4000).arrival_s, bins=10, range=(0, 100))[0]
    np.testing.assert_allclose(per_decile, full / 2, rtol=0.1)


@pytest.mark.parametrize("scale", [0, -1.0, 1e6, "2"])
def test_a_bad_scale_names_the_field(scale):
    with pytest.raises(WorkloadError, match="scale"):
        parse_workload({**SYNTHETIC, "scale": scale}, "w.yaml")
