"""The request table every workload source produces: one row per request.

Columns: ``arrival_s`` (seconds from the start, finite, >= 0), ``input_tokens`` and
``output_tokens`` (whole numbers from 1 to MAX_TOKENS), ``kind`` (kinds must stay distinct
once the solver reads every character but letters, digits and '_' as '_').

Tables are checked column by column (a trace has millions of rows; a model per row would
cost minutes), with the same one-line ``FILE: FIELD: problem; fix`` errors as every input.
"""

from __future__ import annotations

import io
import re

import numpy as np
import pandas as pd

from energy_models.inputs import MAX_TABLE_BYTES, message_error, read_bytes, short
from workloads.errors import WorkloadError

GOLDEN_RATIO_CONJUGATE = (np.sqrt(5.0) - 1.0) / 2.0
"""Steps of the low-discrepancy sequence that thins a trace evenly."""

REQUEST_COLUMNS = ("arrival_s", "input_tokens", "output_tokens", "kind")
MAX_TOKENS = 10_000_000
"""Tokens of one prompt or completion: far above any model's context, far below int64."""


def check_distinct_kinds(kinds: pd.Series, where: str) -> None:
    """Kinds become solver ids (class ``{kind}.in0.out1``), which merge '-', '_', ' ', ..."""
    seen: dict[str, str] = {}
    for kind in kinds.unique():
        safe = re.sub(r"[^A-Za-z0-9_]", "_", kind)
        if safe in seen:
            raise WorkloadError(f"{where}: kind: kinds {short(seen[safe])} and {short(kind)} "
                                f"are equal once every character but letters, digits and '_' "
                                f"is read as '_'; rename one")
        seen[safe] = kind


def validate_requests(table: pd.DataFrame, where: str) -> pd.DataFrame:
    """Return a clean copy of ``table`` or raise naming the first bad field and row."""
    missing = [c for c in REQUEST_COLUMNS if c not in table.columns]
    if missing:
        raise WorkloadError(f"{where}: missing column {missing[0]!r}; expected {REQUEST_COLUMNS}")
    if table.empty:
        raise WorkloadError(f"{where}: (rows): the trace has no rows; add requests under the "
                            f"header")
    out = table.loc[:, list(REQUEST_COLUMNS)].copy()
    for column in ("arrival_s", "input_tokens", "output_tokens"):
        values = pd.to_numeric(out[column], errors="coerce")
        bad = values.isna() | ~np.isfinite(values)
        if column == "arrival_s":
            bad |= values < 0
            expected = "a finite number of seconds >= 0"
        else:
            bad |= (values < 1) | (values > MAX_TOKENS) | (values != values.round())
            expected = f"a whole number of tokens from 1 to {MAX_TOKENS:,}"
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0])
            raise WorkloadError(
                f"{where}: row {row}: {column}={short(table[column].iloc[row])} is not "
                f"{expected}; fix or drop that row"
            )
        out[column] = values
    out["input_tokens"] = out["input_tokens"].astype(np.int64)
    out["output_tokens"] = out["output_tokens"].astype(np.int64)
    out["kind"] = out["kind"].astype(str)
    check_distinct_kinds(out["kind"], where)
    return out.sort_values(["arrival_s", "kind"], kind="stable").reset_index(drop=True)


def read_request_csv(path: str, azure_kind: str | None = None) -> pd.DataFrame:
    """Read a request CSV: ours (REQUEST_COLUMNS) or the Azure LLM inference trace format.

    An Azure-format trace has no kind column: its requests get ``azure_kind``, by default the
    kind its file name says (see ``workloads.azure.kind_of_file``). Our format carries kinds.
    """
    data = read_bytes(path, message_error(WorkloadError, path), MAX_TABLE_BYTES)
    try:
        table = pd.read_csv(io.BytesIO(data), encoding="utf-8")
    except pd.errors.EmptyDataError:
        raise WorkloadError(f"{path}: (file): empty; give a header "
                            f"({','.join(REQUEST_COLUMNS)}) and one row per request") from None
    except UnicodeDecodeError as exc:
        raise WorkloadError(f"{path}: (file): not UTF-8 text (byte {exc.start}); save it as "
                            f"UTF-8") from None
    except ValueError as exc:
        raise WorkloadError(f"{path}: (file): cannot read CSV ({str(exc).splitlines()[0]}); "
                            f"give a readable CSV file") from None
    if {"TIMESTAMP", "ContextTokens", "GeneratedTokens"} <= set(table.columns):
        from workloads.azure import azure_to_requests, kind_of_file

        return azure_to_requests(table, where=path, kind=azure_kind or kind_of_file(path))
    if azure_kind is not None:
        raise WorkloadError(f"{path}: kind: the trace has its own kind column; give kind: only "
                            f"for an Azure-format trace")
    return validate_requests(table, where=path)


def scale_arrivals(requests: pd.DataFrame, horizon_s: float, scale: float) -> pd.DataFrame:
    """A recorded trace at ``scale`` times its arrival rate over the same horizon, keeping
    its bursts: ceil(scale) copies of it, copy j shifted by j/copies of the horizon
    (wrapping round), thinned evenly to ``scale``/copies of each (request i of copy j is
    kept when the golden-ratio sequence at i x copies + j falls below that share; no
    random numbers). Tokens and kinds travel with their requests."""
    copies = max(int(np.ceil(scale)), 1)
    keep_share = scale / copies
    n = len(requests)
    index = np.arange(n)
    parts = []
    for j in range(copies):
        kept = ((index * copies + j) * GOLDEN_RATIO_CONJUGATE) % 1.0 < keep_share
        part = requests.iloc[np.flatnonzero(kept)].copy()
        part["arrival_s"] = (part["arrival_s"] + j * horizon_s / copies) % horizon_s
        parts.append(part)
    scaled = pd.concat(parts, ignore_index=True)
    return scaled.sort_values("arrival_s", kind="stable").reset_index(drop=True)
