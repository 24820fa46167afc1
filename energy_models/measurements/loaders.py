"""Read measurements from whatever the user points at: our schema table or a raw public file."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from energy_models.errors import MeasurementError
from energy_models.measurements import mlenergy, wilkins
from energy_models.measurements.schema import (
    REQUIRED_COLUMNS,
    Measurements,
    check_energy_kinds,
    read_table,
)

RECOGNISED = ("a measurement table (.csv or .parquet with columns "
              f"{', '.join(REQUIRED_COLUMNS)}), a Wilkins et al. CSV, an ML.ENERGY "
              "v1 *_benchmark.csv, v2_llm_flat.csv or the ML.ENERGY data folder")


def load_measurements(path: str | Path) -> Measurements:
    """Measurements from one file or the ML.ENERGY folder; raises naming what is recognised."""
    path = Path(path)
    if not path.exists():
        raise MeasurementError(f"{path}: no such file or folder")
    if path.is_dir():
        if (path / "v2_llm_flat.csv").exists() or (path / "v1").is_dir():
            parts = []
            if (path / "v1").is_dir():
                parts.append(mlenergy.measurements_v1(path))
            if (path / "v2_llm_flat.csv").exists():
                parts.append(mlenergy.measurements_v2(path))
            return sum(parts[1:], parts[0])
        raise MeasurementError(f"{path}: nothing recognised in this folder; give {RECOGNISED}")
    if path.suffix == ".parquet":
        return read_table(path)
    try:
        header = pd.read_csv(path, nrows=0).columns
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise MeasurementError(f"{path}: cannot read: {str(exc).splitlines()[0]}") from None
    if all(c in header for c in REQUIRED_COLUMNS):
        return read_table(path)
    if wilkins.kind_of(header) is not None:
        return wilkins.load(path)
    if "energy_per_req_J" in header:
        return mlenergy.measurements_v2(path.parent)
    if path.name.endswith("_benchmark.csv") and "response_length" in header:
        return mlenergy.measurements_v1_file(path)
    missing = [c for c in REQUIRED_COLUMNS if c not in header]
    raise MeasurementError(f"{path}: not a recognised measurement file (a schema table lacks "
                           f"column {missing[0]!r}); give {RECOGNISED}")


def load_all(paths: list[Path]) -> Measurements:
    """Every file's measurements together; refused when files mix energy kinds in a pair."""
    loaded = [load_measurements(p) for p in paths]
    together = sum(loaded[1:], loaded[0])
    check_energy_kinds(together.table, ", ".join(map(str, paths)))
    return together
