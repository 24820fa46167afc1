"""Per-request latency of plans: each deployment priced once on a token grid, then looked up.

A plan's SLO attainment and mean latencies need every request's own TTFT, ITL and end-to-end
latency on the deployments its class is routed to. Pricing each request through the cost chain
(gradient-boosted trees for most GPUs) on every route of every plan took most of a run; as the
Vidur simulator does with its execution-time predictor, we evaluate the chain once on a grid
and look up. The grid's input and output token counts lie at quantiles of the workload's (most
points where most requests are, the extremes on it) and, a third as many, evenly in log tokens
between the extremes: the longest prompts are few but have the longest TTFTs, and the cost
model's slope changes out there too. Every routed deployment is priced on it in
one ``chain.costs`` call shared by the optimised plan and every baseline. A request's TTFT and
ITL are bilinear in (log input, log output tokens) between the four grid points around it; its
end-to-end latency is rebuilt from its parts, TTFT + n x decode time per output token, each
interpolated (closer than interpolating the total). tests/test_latency.py bounds the error
against pricing every request.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from energy_models.cost import CostChain

GRID_POINTS = 32
"""Grid points per token axis (input and output) at quantiles of the workload's tokens; half as
many again spread evenly in log tokens (``token_grid``)."""

PRICING_COLUMNS = ("llm", "device", "tp", "batch", "power_cap_w")
"""What the cost chain needs of a deployment besides the tokens."""


def token_grid(tokens: np.ndarray, points: int = GRID_POINTS) -> np.ndarray:
    """Up to ``points`` distinct token counts at equal-count quantiles of ``tokens``, the
    smallest and largest included (most grid points lie where most requests are), and up to
    ``points // 3`` more evenly spaced in log tokens over the same range (the sparse tail)."""
    tokens = np.asarray(tokens, dtype=float)
    if not np.min(tokens) > 0:
        raise ValueError(f"token counts must be positive, got {np.min(tokens):g}")
    quantiles = np.quantile(tokens, np.linspace(0.0, 1.0, max(points, 2)))
    spread = np.geomspace(np.min(tokens), np.max(tokens), max(points // 2, 2))
    return np.unique(np.concatenate([quantiles, spread]))


@dataclass(frozen=True)
class LatencyTable:
    """TTFT, ITL and decode time per output token of some deployments on a token grid."""

    deployments: tuple[str, ...]
    input_tokens: np.ndarray
    """(I,) grid of input tokens, ascending."""
    output_tokens: np.ndarray
    """(O,) grid of output tokens, ascending."""
    ttft_s: np.ndarray
    """(len(deployments), I, O)."""
    itl_s: np.ndarray
    decode_s_per_token: np.ndarray
    """(end-to-end - TTFT) / output tokens: the rest of a request's latency, per token."""

    def lookup(self, deployment: str, input_tokens: np.ndarray,
               output_tokens: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(ttft_s, itl_s, e2e_s) of requests of these token counts on ``deployment``."""
        k = self.deployments.index(deployment)
        m = np.asarray(input_tokens, dtype=float)
        n = np.asarray(output_tokens, dtype=float)
        i0, i1, wi = _bracket(self.input_tokens, m)
        j0, j1, wj = _bracket(self.output_tokens, n)

        def at(values: np.ndarray) -> np.ndarray:
            v = values[k]
            return ((1 - wi) * ((1 - wj) * v[i0, j0] + wj * v[i0, j1])
                    + wi * ((1 - wj) * v[i1, j0] + wj * v[i1, j1]))

        ttft = at(self.ttft_s)
        return ttft, at(self.itl_s), ttft + n * at(self.decode_s_per_token)


def _bracket(grid: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Grid neighbours below and above each value and the weight of the upper one, linear in
    log tokens; values outside the grid take the nearest end."""
    if len(grid) == 1:
        zeros = np.zeros(len(values), dtype=np.intp)
        return zeros, zeros, np.zeros(len(values))
    log_points = np.log(grid)
    lo = np.clip(np.searchsorted(grid, values, side="right") - 1, 0, len(grid) - 2)
    weight = (np.log(values) - log_points[lo]) / (log_points[lo + 1] - log_points[lo])
    return lo, lo + 1, np.clip(weight, 0.0, 1.0)


def price_latency(chain: CostChain, deployments: pd.DataFrame, names: Iterable[str],
                  requests: pd.DataFrame, points: int = GRID_POINTS) -> LatencyTable:
    """Price deployments ``names`` (rows of ``deployments``, by its ``deployment`` column) on
    a grid over ``requests``' token range, in one call to the chain."""
    names = tuple(dict.fromkeys(names))
    inputs = token_grid(requests["input_tokens"].to_numpy(float), points)
    outputs = token_grid(requests["output_tokens"].to_numpy(float), points)
    shape = (len(names), len(inputs), len(outputs))
    if not names:
        empty = np.zeros(shape)
        return LatencyTable(names, inputs, outputs, empty, empty, empty)
    rows = deployments.set_index("deployment").loc[list(names), list(PRICING_COLUMNS)]
    per_point = len(inputs) * len(outputs)
    work = rows.loc[rows.index.repeat(per_point)].reset_index(drop=True)
    m, n = np.meshgrid(inputs, outputs, indexing="ij")
    work["input_tokens"] = np.tile(m.ravel(), len(names))
    work["output_tokens"] = np.tile(n.ravel(), len(names))
    costs = chain.costs(work)
    ttft = costs["ttft_s"].to_numpy(float)
    e2e = costs["runtime_s"].to_numpy(float)
    return LatencyTable(
        deployments=names, input_tokens=inputs, output_tokens=outputs,
        ttft_s=ttft.reshape(shape), itl_s=costs["itl_s"].to_numpy(float).reshape(shape),
        decode_s_per_token=((e2e - ttft) / work["output_tokens"].to_numpy()).reshape(shape),
    )
