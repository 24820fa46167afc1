"""The request table every workload source produces: one row per request.

Columns: ``arrival_s`` (seconds from the start), ``input_tokens``, ``output_tokens``, ``kind``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from workloads.errors import WorkloadError

REQUEST_COLUMNS = ("arrival_s", "input_tokens", "output_tokens", "kind")


def validate_requests(table: pd.DataFrame, where: str) -> pd.DataFrame:
    """Return a clean copy of ``table`` or raise naming the first bad field and row."""
    missing = [c for c in REQUEST_COLUMNS if c not in table.columns]
    if missing:
        raise WorkloadError(f"{where}: missing column {missing[0]!r}; expected {REQUEST_COLUMNS}")
    out = table.loc[:, list(REQUEST_COLUMNS)].copy()
    for column in ("arrival_s", "input_tokens", "output_tokens"):
        values = pd.to_numeric(out[column], errors="coerce")
        bad = values.isna() | ~np.isfinite(values)
        if column != "arrival_s":
            bad |= values <= 0
        else:
            bad |= values < 0
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0])
            raise WorkloadError(
                f"{where}: row {row}: {column}={table[column].iloc[row]} is missing, "
                f"not a number or not positive; fix or drop that row"
            )
        out[column] = values
    out["input_tokens"] = out["input_tokens"].round().astype(np.int64)
    out["output_tokens"] = out["output_tokens"].round().astype(np.int64)
    out["kind"] = out["kind"].astype(str)
    return out.sort_values(["arrival_s", "kind"], kind="stable").reset_index(drop=True)


def read_request_csv(path: str) -> pd.DataFrame:
    """Read a request CSV: ours (REQUEST_COLUMNS) or the Azure LLM inference trace format."""
    try:
        table = pd.read_csv(path)
    except (OSError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise WorkloadError(f"{path}: cannot read CSV ({exc}); give a readable CSV file") from exc
    if {"TIMESTAMP", "ContextTokens", "GeneratedTokens"} <= set(table.columns):
        from workloads.azure import azure_to_requests

        return azure_to_requests(table, where=path, kind="chat")
    return validate_requests(table, where=path)
