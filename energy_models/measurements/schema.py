"""The measurement schema: one tidy table of measured inference runs, whatever measured them.

One row is one measured configuration run once: ``batch`` requests of ``input_tokens`` prompt
tokens each, generating ``output_tokens`` tokens each, on ``tp`` devices of one kind.

========================  =====================================================================
column                    meaning
========================  =====================================================================
llm, device               catalog names (aliases are resolved on load)
tp                        devices the replica spans (default 1)
batch                     concurrent requests (a realised average where the engine batches
                          continuously)
input_tokens              prompt tokens per request
output_tokens             generated tokens per request
energy_j                  energy per request: the run's energy over all ``tp`` devices / batch
runtime_s                 wall time of one request, submission to last token
ttft_s, itl_s             time to first token, mean inter-token latency (optional)
mean_power_w              mean power of the ``tp`` devices during the run (optional)
idle_power_w              idle power of the ``tp`` devices measured before the run (optional)
energy_kind               ``gross`` (meter reading) or ``idle_subtracted`` (reading minus idle)
engine                    serving stack, e.g. ``vllm``, ``hf`` (optional)
engine_version            the stack's exact version, e.g. ``vLLM 0.10.1.1`` (optional)
config                    rows with the same config repeat one setting; cross-validation keeps
                          them in one fold (optional; derived from the numbers when absent)
source                    where the row came from
========================  =====================================================================

Rows with a NaN, negative or zero number are reported by row number and left out. A table
whose ``tp`` is not a whole number of devices from 1 to MAX_TP, or that mixes energy kinds
within one (llm, device, tp, engine), is refused whole: that is a malformed table, not a run
gone wrong.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from energy_models.catalog.specs import get_device, get_llm
from energy_models.errors import MeasurementError
from energy_models.inputs import MAX_TABLE_BYTES, message_error, read_bytes, short
from energy_models.registry import UnknownNameError

MEASUREMENT_COLUMNS = (
    "llm", "device", "tp", "batch", "input_tokens", "output_tokens", "energy_j", "runtime_s",
    "ttft_s", "itl_s", "mean_power_w", "idle_power_w", "energy_kind", "engine", "engine_version",
    "config", "source",
)
REQUIRED_COLUMNS = (
    "llm", "device", "batch", "input_tokens", "output_tokens", "energy_j", "runtime_s",
    "energy_kind", "source",
)
POSITIVE_COLUMNS = ("tp", "batch", "input_tokens", "output_tokens", "energy_j", "runtime_s")
OPTIONAL_POSITIVE_COLUMNS = ("ttft_s", "itl_s", "mean_power_w", "idle_power_w")
ENERGY_KINDS = ("gross", "idle_subtracted")
MAX_TP = 1024
"""Devices one replica may span."""
MAX_ROW_VALUES = {"batch": 1_000_000, "input_tokens": 10_000_000, "output_tokens": 10_000_000}
"""Beyond these a row describes no serving run, and the models' arithmetic overflows."""
PAIR_KEY = ("llm", "device", "tp", "engine")
"""What one fitted model covers: an LLM on one device kind, at one parallel degree and stack."""


@dataclass
class Measurements:
    """Validated rows and what was left out of the input, and why."""

    table: pd.DataFrame
    dropped: list[str] = field(default_factory=list)
    """One line per left-out row: ``origin row N: reason``."""

    def __add__(self, other: Measurements) -> Measurements:
        table = pd.concat([self.table, other.table], ignore_index=True)
        return Measurements(table, self.dropped + other.dropped)

    def digest(self) -> str:
        """A hash of the rows, so a fitted model can say which data it came from."""
        text = self.table.loc[:, list(MEASUREMENT_COLUMNS)].to_csv(index=False,
                                                                  float_format="%.10g")
        return "sha256:" + hashlib.sha256(text.encode()).hexdigest()[:16]


def _resolve(values: pd.Series, lookup, column: str, origin: str, rows: pd.Series) -> pd.Series:
    names = {}
    for name in values.unique():
        try:
            names[name] = lookup(str(name)).name
        except UnknownNameError as exc:
            first = int(rows[values == name].iloc[0])
            raise MeasurementError(f"{origin} row {first}: {column}: {exc}; use a catalog "
                                   f"name (see `wattsched catalog`)") from None
    return values.map(names)


def _check_tp(raw: pd.Series, values: pd.Series, origin: str, rows: pd.Series) -> None:
    """A parallel degree is a device count: fractions and overflows are no measurement."""
    bad = values.notna() & (values > 0) & ((values != values.round()) | (values > MAX_TP))
    if bad.any():
        first = int(np.flatnonzero(bad.to_numpy())[0])
        raise MeasurementError(f"{origin} row {int(rows.iloc[first])}: tp: got "
                               f"{short(raw.iloc[first])}; must be a whole number of devices "
                               f"from 1 to {MAX_TP}")


def check_energy_kinds(table: pd.DataFrame, origin: str) -> None:
    """One energy kind per pair: a fit across gross and idle-subtracted rows means nothing."""
    kinds = table.groupby(list(PAIR_KEY), sort=True)["energy_kind"].nunique()
    mixed = kinds[kinds > 1]
    if not mixed.empty:
        llm, device, tp, engine = mixed.index[0]
        stack = f" [{engine}]" if engine else ""
        raise MeasurementError(f"{origin}: energy_kind: {llm} on {device} tp{tp}{stack} mixes "
                               f"{' and '.join(ENERGY_KINDS)} rows; give one kind per (llm, "
                               f"device, tp)")


def validate(raw: pd.DataFrame, origin: str, rows: pd.Series | None = None) -> Measurements:
    """Check a measurement table; bad rows are dropped and reported, bad columns raise.

    ``rows`` gives each row's number in the origin (default: 1-based data row).
    """
    missing = [c for c in REQUIRED_COLUMNS if c not in raw.columns]
    if missing:
        raise MeasurementError(f"{origin}: column {missing[0]!r} is missing; a measurement "
                               f"table needs {', '.join(REQUIRED_COLUMNS)}")
    table = raw.reset_index(drop=True).copy()
    rows = (pd.Series(np.arange(1, len(table) + 1)) if rows is None
            else pd.Series(rows).reset_index(drop=True))
    defaults = {"tp": 1, "engine": "", "engine_version": "", "config": "", "ttft_s": np.nan,
                "itl_s": np.nan, "mean_power_w": np.nan, "idle_power_w": np.nan}
    for column, value in defaults.items():
        if column not in table.columns:
            table[column] = value
    for column in ("engine", "engine_version", "config", "source"):
        # A CSV column left empty reads as NaN floats.
        text = table[column].astype(object)
        table[column] = text.where(text.notna(), "").astype(str)

    reasons = pd.Series("", index=table.index)
    for column in POSITIVE_COLUMNS + OPTIONAL_POSITIVE_COLUMNS:
        values = pd.to_numeric(table[column], errors="coerce")
        text = table[column].astype(str)
        unparsable = values.isna() & table[column].notna() & (text.str.strip() != "")
        reasons[unparsable & (reasons == "")] = f"{column} is not a number"
        if column in POSITIVE_COLUMNS:
            reasons[values.isna() & (reasons == "")] = f"{column} is missing or NaN"
        reasons[(values <= 0) & (reasons == "")] = f"{column} is not positive"
        reasons[np.isinf(values) & (reasons == "")] = f"{column} is infinite"
        if column in MAX_ROW_VALUES:
            reasons[(values > MAX_ROW_VALUES[column]) & (reasons == "")] = (
                f"{column} is above {MAX_ROW_VALUES[column]:,}")
        if column == "tp":
            _check_tp(table[column], values, origin, rows)
        table[column] = values
    kinds = table["energy_kind"].astype(str).str.strip()
    reasons[~kinds.isin(ENERGY_KINDS) & (reasons == "")] = (
        f"energy_kind must be one of {', '.join(ENERGY_KINDS)}")
    table["energy_kind"] = kinds
    for column in ("llm", "device"):
        blank = table[column].isna() | (table[column].astype(str).str.strip() == "")
        reasons[blank & (reasons == "")] = f"{column} is empty"

    bad = reasons != ""
    dropped = [f"{origin} row {int(r)}: {why}" for r, why in zip(rows[bad], reasons[bad],
                                                                 strict=True)]
    keep = table.loc[~bad].copy()
    keep_rows = rows[~bad]
    keep["llm"] = _resolve(keep["llm"].astype(str), get_llm, "llm", origin, keep_rows)
    keep["device"] = _resolve(keep["device"].astype(str), get_device, "device", origin, keep_rows)
    keep["tp"] = keep["tp"].astype(int)
    unnamed = keep["config"] == ""
    keep.loc[unnamed, "config"] = [
        f"b{b:g}.m{m:g}.n{n:g}" for b, m, n in zip(
            keep.loc[unnamed, "batch"], keep.loc[unnamed, "input_tokens"].round(),
            keep.loc[unnamed, "output_tokens"].round(), strict=True)
    ]
    check_energy_kinds(keep, origin)
    return Measurements(keep.loc[:, list(MEASUREMENT_COLUMNS)].reset_index(drop=True), dropped)


def read_table(path: str | Path) -> Measurements:
    """A measurement table written as CSV or Parquet (by this tool or by hand)."""
    path = Path(path)
    data = io.BytesIO(read_bytes(path, message_error(MeasurementError, str(path)),
                                 MAX_TABLE_BYTES))
    try:
        raw = pd.read_parquet(data) if path.suffix == ".parquet" else pd.read_csv(data)
    except ImportError as exc:
        raise MeasurementError(f"{path}: reading Parquet needs pyarrow ({exc}); "
                               f"`pip install pyarrow` or save the table as .csv") from None
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise MeasurementError(f"{path}: cannot read the table: "
                               f"{str(exc).splitlines()[0]}") from None
    return validate(raw, str(path))


def to_csv(measurements: Measurements) -> str:
    return measurements.table.to_csv(index=False, float_format="%.10g")
