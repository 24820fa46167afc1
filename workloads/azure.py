"""The Azure LLM inference trace 2023 (Patel et al., Splitwise, ISCA 2024; CC-BY-4.0).

We never ship the trace: ``derive_params`` turns it into the few numbers the synthetic
generator needs, and those numbers live in ``workloads/data/azure2023.yaml``.

A trace in this format (columns TIMESTAMP, ContextTokens, GeneratedTokens) can also be a
workload's ``trace:``. It has no kind column, so its requests take the workload file's
``kind:`` (beside ``trace:``); without one, the kind its file name says: ``code`` for
``AzureLLMInferenceTrace_code.csv`` or any name with "code" in it, else ``chat``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from workloads.errors import WorkloadError
from workloads.requests import validate_requests
from workloads.synthetic import QUANTILE_LEVELS, TrafficParams

TRACE_FILES = {"chat": "AzureLLMInferenceTrace_conv.csv", "code": "AzureLLMInferenceTrace_code.csv"}


def kind_of_file(path: str | Path) -> str:
    """The request kind an Azure trace's file name implies (see the module docstring)."""
    return "code" if "code" in Path(path).name.lower() else "chat"


def azure_to_requests(table: pd.DataFrame, where: str, kind: str) -> pd.DataFrame:
    """Map the trace's columns (TIMESTAMP, ContextTokens, GeneratedTokens) to a request table."""
    times = pd.to_datetime(table["TIMESTAMP"], errors="coerce")
    if times.isna().any():
        row = int(np.flatnonzero(times.isna().to_numpy())[0])
        raise WorkloadError(f"{where}: row {row}: TIMESTAMP is not a date-time")
    arrival_s = (times - times.min()).dt.total_seconds()
    requests = pd.DataFrame(
        {
            "arrival_s": arrival_s,
            "input_tokens": table["ContextTokens"],
            "output_tokens": table["GeneratedTokens"],
            "kind": kind,
        }
    )
    return validate_requests(requests, where=where)


def load_azure_trace(directory: str | Path, kind: str) -> pd.DataFrame:
    """Load one of the two traces (``chat`` = conversation, ``code``) from ``directory``."""
    if kind not in TRACE_FILES:
        raise WorkloadError(f"unknown Azure trace kind {kind!r}; use one of {sorted(TRACE_FILES)}")
    path = Path(directory) / TRACE_FILES[kind]
    return azure_to_requests(pd.read_csv(path), where=str(path), kind=kind)


def derive_params(requests: pd.DataFrame, kind: str) -> TrafficParams:
    """Rate, burstiness, token quantiles and input/output rank correlation of one trace."""
    arrivals = np.sort(requests["arrival_s"].to_numpy())
    span_s = float(arrivals[-1] - arrivals[0])
    gaps = np.diff(arrivals)
    rho = stats.spearmanr(requests["input_tokens"], requests["output_tokens"]).statistic
    return TrafficParams(
        kind=kind,
        rate_rps=round(len(arrivals) / span_s, 4),
        interarrival_cv=round(float(gaps.std() / gaps.mean()), 3),
        input_quantiles=tuple(
            float(v) for v in np.quantile(requests["input_tokens"], QUANTILE_LEVELS).round()
        ),
        output_quantiles=tuple(
            float(v) for v in np.quantile(requests["output_tokens"], QUANTILE_LEVELS).round()
        ),
        spearman_rho=round(float(rho), 3),
    )
