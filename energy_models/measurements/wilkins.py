"""Loaders for the Wilkins et al. measurements (github.com/grantwilkins/energy-inference).

HF Transformers with the KV cache off, one prompt per generate call, so rows are batch 1 and
runtime grows super-linearly with output length. GPU systems report NVML GPU energy only;
the Apple M1 Pro rows are CPU + GPU (powermetrics). Tokens are nominal except on the M1
grid, where the file gives measured prompt and total token counts.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from energy_models.errors import MeasurementError
from energy_models.measurements.schema import Measurements, validate

ENGINE = "hf-nocache"
SYSTEMS = {
    "argonne-swing": "A100-40GB",
    "Swing AMD+A100": "A100-40GB",
    "Palmetto Intel+A100": "A100-40GB",
    "Palmetto Intel+V100": "V100",
    "M1-Pro": "M1-Pro",
}
SWEEP_MODELS = {
    "Falcon (7B)": "falcon-7b",
    "Falcon (40B)": "falcon-40b",
    "Llama-2 (7B)": "llama-2-7b-chat",
    "Llama-2 (13B)": "llama-2-13b-chat",
    "Llama-2 (70B)": "llama-2-70b-chat",
    "Mistral (7B)": "mistral-7b-v0.1",
    "Mixtral (8x7B)": "mixtral-8x7b",
}
M1_GRID_OUTPUTS = (8, 16, 32, 64, 128, 256, 512)
# Partial reruns on the M1 generated far fewer tokens than asked; CUDA runs set
# min_new_tokens = 0.9 n, so a genuine run lies within these bounds.
M1_GENERATED_SHARE = (0.85, 1.15)


def kind_of(columns: pd.Index) -> str | None:
    """Which Wilkins file a header belongs to, or None."""
    if "GPU Energy (mJ)" in columns:
        return "grid"
    if "System Name" in columns and "GPU Energy (J)" in columns:
        return "m1-grid"
    if "Zeta" in columns and "Total Energy (kWh)" in columns:
        return "simulation"
    if "GPU Energy (J)" in columns and "System" in columns:
        return "sweep"
    return None


def _system_devices(systems: pd.Series, origin: str) -> pd.Series:
    unknown = sorted(set(systems) - set(SYSTEMS))
    if unknown:
        raise MeasurementError(f"{origin}: System: unknown system {unknown[0]!r}; "
                               f"known: {', '.join(SYSTEMS)}")
    return systems.map(SYSTEMS)


def _table(raw: pd.DataFrame, origin: str, rows: pd.Series, **columns) -> Measurements:
    base = {"batch": 1.0, "energy_kind": "gross", "engine": ENGINE, "source": origin}
    return validate(pd.DataFrame({**base, **columns}, index=raw.index), origin, rows)


def load(path: str | Path) -> Measurements:
    """Any of the Wilkins measurement CSVs, as measurement-schema rows."""
    path = Path(path)
    try:
        raw = pd.read_csv(path)
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise MeasurementError(f"{path}: cannot read: {str(exc).splitlines()[0]}") from None
    kind = kind_of(raw.columns)
    origin = f"wilkins:{path.name}"
    if kind is None:
        raise MeasurementError(f"{path}: not a Wilkins et al. measurement file")
    if kind == "simulation":
        raise MeasurementError(f"{path}: routing simulation output, not measurements; "
                               f"use the independence-test or sweep CSVs")
    rows = pd.Series(np.arange(1, len(raw) + 1), index=raw.index)
    inference = raw["Phase"].astype(str).str.contains("inference")
    raw, rows = raw.loc[inference], rows.loc[inference]
    output_column = ("Output Token Limit" if "Output Token Limit" in raw.columns
                     else "Number of Output Tokens")
    nominal_n = pd.to_numeric(raw[output_column], errors="coerce")
    m = pd.to_numeric(raw["Number of Input Tokens"], errors="coerce")
    config = "m" + m.astype(str) + ".n" + nominal_n.astype(str)

    if kind == "grid":
        return _table(raw, origin, rows, llm=raw["Model"], device=_system_devices(
            raw["System"], origin), tp=raw["Number of GPUs"], input_tokens=m,
            output_tokens=nominal_n, energy_j=pd.to_numeric(raw["GPU Energy (mJ)"],
                                                             errors="coerce") / 1000.0,
            runtime_s=raw["Runtime (s)"], config=config)

    energy = pd.to_numeric(raw["GPU Energy (J)"], errors="coerce")
    if kind == "m1-grid":
        generated = pd.to_numeric(raw["Total Number of Tokens"], errors="coerce") - m
        share = generated / nominal_n
        off_grid = ~nominal_n.isin(M1_GRID_OUTPUTS)
        partial = ~off_grid & ~share.between(*M1_GENERATED_SHARE)
        dropped = [f"{origin} row {r}: output tokens {n:g} is not a grid point (a rerun)"
                   for r, n in zip(rows[off_grid], nominal_n[off_grid], strict=True)]
        dropped += [f"{origin} row {r}: generated {g:g} of {n:g} tokens asked (a partial run)"
                    for r, g, n in zip(rows[partial], generated[partial], nominal_n[partial],
                                       strict=True)]
        keep = ~(off_grid | partial)
        clean = _table(
            raw[keep], origin, rows[keep], llm=raw["Model"][keep],
            device=_system_devices(raw["System Name"][keep], origin), tp=1,
            input_tokens=m[keep], output_tokens=generated[keep],
            energy_j=energy[keep] + pd.to_numeric(raw["CPU Energy (J)"][keep], errors="coerce"),
            runtime_s=raw["Runtime (s)"][keep], config=config[keep])
        return Measurements(clean.table, dropped + clean.dropped)

    unknown = sorted(set(raw["Model"]) - set(SWEEP_MODELS))
    if unknown:
        raise MeasurementError(f"{path}: Model: unknown model {unknown[0]!r}; "
                               f"known: {', '.join(SWEEP_MODELS)}")
    devices = _system_devices(raw["System"], origin)
    # The M1 Pro is one SoC: its CPU and GPU energy together are the device's.
    cpu = pd.to_numeric(raw["CPU Energy (J)"], errors="coerce").where(devices == "M1-Pro", 0.0)
    return _table(raw, origin, rows, llm=raw["Model"].map(SWEEP_MODELS), device=devices,
                  tp=raw["Number of GPUs"], input_tokens=m, output_tokens=nominal_n,
                  energy_j=energy + cpu, runtime_s=raw["Runtime (s)"], config=config)
