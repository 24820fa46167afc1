"""Seeded synthetic traffic from a handful of parameters per request kind.

Token lengths follow the empirical quantiles of a real trace (inverse CDF, interpolated in
log space), coupled by a Gaussian copula with the trace's Spearman rank correlation;
inter-arrival gaps are gamma-distributed with the trace's mean rate and coefficient of variation.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from importlib import resources

import numpy as np
import pandas as pd
import yaml
from scipy import special

from workloads.errors import WorkloadError
from workloads.requests import validate_requests

QUANTILE_LEVELS = np.concatenate([np.linspace(0.0, 0.95, 20), [0.99, 1.0]])


@dataclass(frozen=True)
class TrafficParams:
    """One kind of traffic: ``rate_rps`` requests/s and the shape of their token lengths."""

    kind: str
    rate_rps: float
    interarrival_cv: float
    input_quantiles: tuple[float, ...]
    """Input tokens at QUANTILE_LEVELS (0, 5, ..., 95, 99, 100 %)."""
    output_quantiles: tuple[float, ...]
    spearman_rho: float

    def __post_init__(self) -> None:
        for name in ("input_quantiles", "output_quantiles"):
            object.__setattr__(self, name, tuple(float(v) for v in getattr(self, name)))
            knots = np.asarray(getattr(self, name), dtype=float)
            if len(knots) != len(QUANTILE_LEVELS):
                raise WorkloadError(
                    f"traffic {self.kind!r}: {name} needs {len(QUANTILE_LEVELS)} values "
                    f"(quantiles 0, 5, ..., 95, 99, 100 %)"
                )
            if np.any(knots <= 0) or np.any(np.diff(knots) < 0):
                raise WorkloadError(
                    f"traffic {self.kind!r}: {name} must be positive and non-decreasing"
                )
        if not self.rate_rps > 0:
            raise WorkloadError(f"traffic {self.kind!r}: rate_rps must be positive")
        if not self.interarrival_cv > 0:
            raise WorkloadError(f"traffic {self.kind!r}: interarrival_cv must be positive")
        if not -1 < self.spearman_rho < 1:
            raise WorkloadError(f"traffic {self.kind!r}: spearman_rho must be in (-1, 1)")


@cache
def presets() -> dict[str, TrafficParams]:
    """Bundled parameter sets by name (derived from public traces; see the YAML header)."""
    text = resources.files("workloads").joinpath("data", "azure2023.yaml").read_text()
    raw = yaml.safe_load(text)
    return {name: TrafficParams(**fields) for name, fields in raw.items()}


def _inverse_cdf(u: np.ndarray, knots: tuple[float, ...]) -> np.ndarray:
    return np.exp(np.interp(u, QUANTILE_LEVELS, np.log(np.asarray(knots, dtype=float))))


def generate(traffic: list[TrafficParams], horizon_s: float, seed: int) -> pd.DataFrame:
    """Requests arriving over ``horizon_s`` seconds; the same seed gives the same table."""
    if not horizon_s > 0:
        raise WorkloadError(f"horizon_s must be positive, got {horizon_s}")
    parts = []
    for k, params in enumerate(traffic):
        rng = np.random.default_rng([seed, k])
        shape = 1.0 / params.interarrival_cv**2
        expected = params.rate_rps * horizon_s
        gaps = rng.gamma(shape, 1.0 / (params.rate_rps * shape), size=int(expected * 1.5) + 64)
        arrivals = np.cumsum(gaps)
        while arrivals[-1] < horizon_s:
            more = rng.gamma(shape, 1.0 / (params.rate_rps * shape), size=len(gaps))
            arrivals = np.concatenate([arrivals, arrivals[-1] + np.cumsum(more)])
        arrivals = arrivals[arrivals < horizon_s]
        pearson = 2.0 * np.sin(np.pi * params.spearman_rho / 6.0)
        z = rng.multivariate_normal([0.0, 0.0], [[1.0, pearson], [pearson, 1.0]], len(arrivals))
        u = special.ndtr(z)
        parts.append(
            pd.DataFrame(
                {
                    "arrival_s": arrivals,
                    "input_tokens": np.maximum(1, _inverse_cdf(u[:, 0], params.input_quantiles)),
                    "output_tokens": np.maximum(1, _inverse_cdf(u[:, 1], params.output_quantiles)),
                    "kind": params.kind,
                }
            )
        )
    return validate_requests(pd.concat(parts, ignore_index=True), where="synthetic workload")
