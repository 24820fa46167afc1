"""Seeded synthetic traffic from a handful of parameters per request kind.

Token lengths follow the empirical quantiles of a real trace (inverse CDF, interpolated in
log space), coupled by a Gaussian copula with the trace's Spearman rank correlation;
inter-arrival gaps are gamma-distributed with the trace's mean rate and coefficient of variation.
"""

from __future__ import annotations

import math
from functools import cache
from importlib import resources
from typing import Annotated

import numpy as np
import pandas as pd
from pydantic import ConfigDict, Field, field_validator
from pydantic.dataclasses import dataclass

from energy_models.inputs import message_error, parse_yaml, validate
from workloads.errors import WorkloadError
from workloads.requests import validate_requests

QUANTILE_LEVELS = np.concatenate([np.linspace(0.0, 0.95, 20), [0.99, 1.0]])
MAX_REQUESTS = 10_000_000
"""Requests a synthetic workload may hold: about 1 GB of request table and binning."""

Tokens = Annotated[float, Field(gt=0, strict=True)]


@dataclass(frozen=True, config=ConfigDict(extra="forbid", allow_inf_nan=False))
class TrafficParams:
    """One kind of traffic: ``rate_rps`` requests/s and the shape of their token lengths."""

    kind: Annotated[str, Field(min_length=1, strict=True)]
    rate_rps: Annotated[float, Field(gt=0, strict=True)]
    interarrival_cv: Annotated[float, Field(gt=0, strict=True)]
    input_quantiles: tuple[Tokens, ...]
    """Input tokens at QUANTILE_LEVELS (0, 5, ..., 95, 99, 100 %)."""
    output_quantiles: tuple[Tokens, ...]
    spearman_rho: Annotated[float, Field(gt=-1, lt=1, strict=True)]

    @field_validator("input_quantiles", "output_quantiles")
    @classmethod
    def _quantiles(cls, knots: tuple[float, ...]) -> tuple[float, ...]:
        if len(knots) != len(QUANTILE_LEVELS):
            raise ValueError(f"needs {len(QUANTILE_LEVELS)} values (quantiles 0, 5, ..., 95, "
                             f"99, 100 %), got {len(knots)}")
        if np.any(np.diff(knots) < 0):
            raise ValueError("must be non-decreasing (token counts at rising quantiles)")
        return knots


@cache
def presets() -> dict[str, TrafficParams]:
    """Bundled parameter sets by name (derived from public traces; see the YAML header)."""
    where = "azure2023.yaml"
    text = resources.files("workloads").joinpath("data", where).read_text()
    error = message_error(WorkloadError, where)
    return validate(dict[str, TrafficParams], parse_yaml(text, error), error)


def volume_problem(traffic: list[TrafficParams], horizon_s: float) -> tuple[str, str] | None:
    """(field, problem) when the traffic would give under one or over MAX_REQUESTS requests.

    Checked before generating: the generator allocates in proportion to rate x horizon, and
    a bursty renewal process started at t = 0 gives a burst even at a vanishing rate.
    """
    total = 0.0
    for i, params in enumerate(traffic):
        expected = params.rate_rps * horizon_s
        if expected < 1:
            return (f"traffic[{i}].rate_rps",
                    f"{params.rate_rps:g} req/s over {horizon_s:g} s is {expected:.3g} expected "
                    f"requests; use at least {1 / horizon_s:.3g} req/s or a longer horizon_s")
        total += expected
    if total > MAX_REQUESTS:
        return ("horizon_s", f"rates x horizon_s {horizon_s:g} s give {total:,.0f} requests, "
                             f"over the {MAX_REQUESTS:,} limit; shorten horizon_s or lower "
                             f"rate_rps")
    return None


def _inverse_cdf(u: np.ndarray, knots: tuple[float, ...]) -> np.ndarray:
    return np.exp(np.interp(u, QUANTILE_LEVELS, np.log(np.asarray(knots, dtype=float))))


_ERFC = np.frompyfunc(math.erfc, 1, 1)


def _normal_cdf(z: np.ndarray) -> np.ndarray:
    """Standard normal CDF; math.erfc keeps the tails exact without importing SciPy."""
    return _ERFC(-z / math.sqrt(2.0)).astype(float) / 2.0


def _tokens(u: np.ndarray, knots: tuple[float, ...]) -> np.ndarray:
    """Whole token counts, at least one."""
    return np.maximum(1.0, np.round(_inverse_cdf(u, knots)))


def generate(traffic: list[TrafficParams], horizon_s: float, seed: int,
             where: str = "synthetic workload") -> pd.DataFrame:
    """Requests arriving over ``horizon_s`` seconds; the same seed gives the same table.

    ``where`` names the workload in errors (its file)."""
    if not 0 < horizon_s < float("inf"):
        raise WorkloadError(f"{where}: horizon_s: got {horizon_s}; must be positive")
    problem = volume_problem(traffic, horizon_s)
    if problem is not None:
        raise WorkloadError("{}: {}: {}".format(where, *problem))
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
        u = _normal_cdf(z)
        parts.append(
            pd.DataFrame(
                {
                    "arrival_s": arrivals,
                    "input_tokens": _tokens(u[:, 0], params.input_quantiles),
                    "output_tokens": _tokens(u[:, 1], params.output_quantiles),
                    "kind": params.kind,
                }
            )
        )
    requests = pd.concat(parts, ignore_index=True)
    if requests.empty:
        raise WorkloadError(f"{where}: traffic: no request arrives within horizon_s = "
                            f"{horizon_s:g} s at these rates; raise rate_rps or horizon_s")
    return validate_requests(requests, where=where)
