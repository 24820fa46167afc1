"""Binning requests into demand classes: requests alike in kind and token lengths."""

from __future__ import annotations

import numpy as np
import pandas as pd

from workloads.errors import WorkloadError


def _log_edges(values: np.ndarray, bins: int) -> np.ndarray:
    """Edges at equal-count quantiles of log tokens, deduplicated; outer edges open."""
    inner = np.unique(np.quantile(values, np.linspace(0, 1, bins + 1)[1:-1]))
    return np.concatenate([[0.0], inner, [np.inf]])


def bin_requests(
    requests: pd.DataFrame, input_bins: int = 4, output_bins: int = 3
) -> tuple[pd.DataFrame, pd.Series]:
    """Classes per kind on an input x output grid of equal-count bins.

    Returns the class table (``class_id``, ``kind``, ``count``, mean ``input_tokens`` and
    ``output_tokens``, ``input_p90``, ``output_p90``, ``context_max``) and each request's class id.
    """
    if input_bins < 1 or output_bins < 1:
        raise WorkloadError("input_bins and output_bins must be at least 1")
    if requests.empty:
        raise WorkloadError("the workload has no requests; give a trace or a positive rate")
    labels = pd.Series("", index=requests.index, dtype=object)
    for kind, group in requests.groupby("kind", sort=True):
        in_edges = _log_edges(group["input_tokens"].to_numpy(), input_bins)
        out_edges = _log_edges(group["output_tokens"].to_numpy(), output_bins)
        i = np.searchsorted(in_edges, group["input_tokens"].to_numpy(), side="right") - 1
        j = np.searchsorted(out_edges, group["output_tokens"].to_numpy(), side="right") - 1
        labels.loc[group.index] = [f"{kind}.in{a}.out{b}" for a, b in zip(i, j, strict=True)]
    table = requests.assign(class_id=labels, context=requests.input_tokens + requests.output_tokens)
    classes = (
        table.groupby("class_id", sort=True)
        .agg(
            kind=("kind", "first"),
            count=("kind", "size"),
            input_tokens=("input_tokens", "mean"),
            output_tokens=("output_tokens", "mean"),
            input_p90=("input_tokens", lambda s: float(np.quantile(s, 0.9))),
            output_p90=("output_tokens", lambda s: float(np.quantile(s, 0.9))),
            context_max=("context", "max"),
        )
        .reset_index()
    )
    return classes, labels.rename("class_id")
