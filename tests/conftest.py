"""Shared fixtures: the location of ../shared/data (tests that read it skip when absent).

Property tests draw the same examples on every run (hypothesis profile ``repeatable``), so
a CI run cannot fail on a case the last run never saw; ``HYPOTHESIS_PROFILE=explore make
test`` draws fresh random ones to hunt for new failures.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import settings

settings.register_profile("repeatable", derandomize=True, database=None)
settings.register_profile("explore", derandomize=False)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "repeatable"))

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is absent")
    return SHARED_DATA


def analytical_measurements(llm: str = "llama-3.1-8b", device: str = "H100-SXM", *,
                            batches=(1,), tp: int = 1, noise: float = 0.0, seed: int = 0):
    """Schema rows priced by the analytical model on a token grid, with optional lognormal
    noise: data whose best form is known to be smooth."""
    import numpy as np
    import pandas as pd

    from energy_models.analytical.model import analytical_costs, shipped_constants
    from energy_models.measurements.schema import validate

    m, n, b = np.meshgrid([64, 128, 256, 512, 1024, 2048], [16, 32, 64, 128, 256, 512],
                          list(batches))
    work = pd.DataFrame({"llm": llm, "device": device, "input_tokens": m.ravel(),
                         "output_tokens": n.ravel(), "batch": b.ravel(), "tp": tp})
    # vllm-0.5's constants: on this grid its runtime is near-linear in tokens and batch, so
    # the smooth forms pass the gate (today's vllm adds curvature the linear forms miss).
    costs = analytical_costs(work, shipped_constants()["vllm-0.5"])
    rng = np.random.default_rng(seed)
    scale = rng.lognormal(0.0, noise, size=(2, len(work))) if noise else np.ones((2, len(work)))
    rows = work.assign(energy_j=costs.energy_j * scale[0], runtime_s=costs.runtime_s * scale[1],
                       energy_kind="gross", engine="vllm", source="synthetic")
    return validate(rows, "synthetic")
