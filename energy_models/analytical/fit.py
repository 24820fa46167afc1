"""Fit the analytical model's efficiency constants per serving engine.

Least squares on log errors of energy per request and time per output token, so that every
row weighs by its relative error, with a soft-L1 loss beyond 10 %: a model whose kernels are
unusually fast or slow (FP8 block-quantized experts on vLLM 0.11 run slower than BF16) should
not move the constants every other model is priced with. Bounds keep each constant physical.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.optimize import least_squares

from energy_models.analytical.model import EngineConstants, analytical_costs
from energy_models.errors import CalibrationError

# Neither ML.ENERGY release reports prompt lengths, so prefill efficiency cannot be identified
# from it; hold it at a typical measured prefill MFU instead of letting it drift to a bound.
FIXED = {"mfu_prefill": 0.5}
# name: (initial, lower, upper)
_BOUNDS = {
    "bw_eff": (0.6, 0.05, 1.0),
    "mfu_decode": (0.3, 0.02, 1.0),
    "step_overhead_s": (0.005, 1e-5, 0.2),
    "seq_overhead_s": (1e-4, 0.0, 0.01),
    "tp_overhead": (0.1, 0.0, 1.0),
    "power_mem": (0.4, 0.02, 1.0),
    "power_comp": (0.8, 0.05, 1.0),
}


ROBUST_SCALE = 0.1
"""Log error beyond which a row's pull on the constants grows linearly, not quadratically."""


@dataclass(frozen=True)
class FitResult:
    constants: EngineConstants
    rows: int
    energy_mdape: float
    time_mdape: float


def _predict(table: pd.DataFrame, constants: EngineConstants) -> tuple[np.ndarray, np.ndarray]:
    costs = analytical_costs(table, constants)
    per_token_s = costs["replica_s"] * table["batch"] / table["output_tokens"]
    return costs["energy_j"].to_numpy(), per_token_s.to_numpy()


def fit_engine(table: pd.DataFrame, fixed: Mapping[str, float] | None = None) -> FitResult:
    """Fit one engine's constants to rows in ``energy_models.measurements.mlenergy.FIT_COLUMNS``;
    ``fixed`` holds constants the rows cannot identify, beyond FIXED."""
    held = {**FIXED, **(fixed or {})}
    names = [n for n in _BOUNDS if n not in held]
    if len(table) < len(names):
        raise CalibrationError(f"{len(table)} rows cannot fit {len(names)} constants")
    x0 = np.array([_BOUNDS[n][0] for n in names])
    lower = np.array([_BOUNDS[n][1] for n in names])
    upper = np.array([_BOUNDS[n][2] for n in names])
    log_energy = np.log(table["energy_j"].to_numpy(float))
    log_time = np.log(table["time_per_token_s"].to_numpy(float))

    def build(x: np.ndarray) -> EngineConstants:
        return EngineConstants(**held, **dict(zip(names, x, strict=True)))

    def residuals(x: np.ndarray) -> np.ndarray:
        energy, time = _predict(table, build(x))
        return np.concatenate([np.log(energy) - log_energy, np.log(time) - log_time])

    result = least_squares(residuals, x0, bounds=(lower, upper), x_scale="jac", method="trf",
                           loss="soft_l1", f_scale=ROBUST_SCALE)
    # Six significant digits keep the shipped file readable; the error is far below the fit's.
    constants = build(np.array([float(f"{v:.6g}") for v in result.x]))
    energy, time = _predict(table, constants)
    return FitResult(
        constants=constants,
        rows=len(table),
        energy_mdape=mdape(energy, table["energy_j"].to_numpy(float)),
        time_mdape=mdape(time, table["time_per_token_s"].to_numpy(float)),
    )


PREDICTION_RTOL = 1e-4
"""How far the shipped constants' predictions may sit from a refit's before they are stale.

Predictions, not constants, are compared: a constant the data cannot identify (``tp_overhead``
on ML.ENERGY v1, which has no tensor-parallel row) moves freely between library releases
(0.9999 vs 0.79 seen) without changing one prediction. Constants are shipped at six
significant digits and least_squares stops on relative steps of 1e-8, so releases move the
predictions by about 1e-5 (seen: 9e-6); 1e-4 is ten times that and far below any change
that shows in an error table.
"""


def prediction_drift(table: pd.DataFrame, shipped: EngineConstants,
                     fitted: EngineConstants) -> float:
    """Largest relative difference between two constant sets' energy and time-per-token
    predictions on ``table``'s rows."""
    energy_shipped, time_shipped = _predict(table, shipped)
    energy_fitted, time_fitted = _predict(table, fitted)
    return float(max(np.max(np.abs(energy_fitted / energy_shipped - 1.0)),
                     np.max(np.abs(time_fitted / time_shipped - 1.0))))


def mdape(predicted: np.ndarray, measured: np.ndarray) -> float:
    """Median absolute percentage error, in percent (arrays or equally indexed Series)."""
    predicted, measured = np.asarray(predicted, dtype=float), np.asarray(measured, dtype=float)
    return float(np.median(np.abs(predicted - measured) / measured) * 100.0)


def per_device_errors(table: pd.DataFrame, constants: EngineConstants) -> pd.DataFrame:
    """MdAPE of energy and time per token for each device, with row counts."""
    energy, time = _predict(table, constants)
    scored = table.assign(energy_pred=energy, time_pred=time)
    rows = []
    for device, group in scored.groupby("device", sort=True):
        rows.append(
            {
                "device": device,
                "rows": len(group),
                "energy_mdape_pct": mdape(group.energy_pred.to_numpy(), group.energy_j.to_numpy()),
                "time_mdape_pct": mdape(
                    group.time_pred.to_numpy(), group.time_per_token_s.to_numpy()
                ),
            }
        )
    return pd.DataFrame(rows)


# No shared CPU measurement has a KV cache, so CPU constants are assumed, not fitted:
# llama.cpp-style decoding reaches about half of peak DRAM bandwidth, matrix units a
# third of peak, and a socket draws most of its TDP under all-core load.
ASSUMED_CPU = EngineConstants(
    bw_eff=0.5, mfu_prefill=0.3, mfu_decode=0.3, step_overhead_s=0.005, seq_overhead_s=0.0005,
    tp_overhead=0.0, power_mem=0.7, power_comp=0.9,
)


@dataclass(frozen=True)
class ShippedFit:
    """The constants fitted per engine, how, their error per device, and the rows they fit."""

    constants: dict[str, EngineConstants]
    provenance: dict
    errors: pd.DataFrame
    tables: dict[str, pd.DataFrame]

    def stale(self, shipped: dict[str, EngineConstants],
              rtol: float = PREDICTION_RTOL) -> dict[str, float]:
        """Engines whose ``shipped`` constants predict the fitted rows more than ``rtol`` away
        from this fit, with the largest relative difference (inf for an engine not shipped)."""
        stale = {}
        for engine, table in sorted(self.tables.items()):
            drift = (math.inf if engine not in shipped else
                     prediction_drift(table, shipped[engine], self.constants[engine]))
            if drift > rtol:
                stale[engine] = drift
        return stale


V1V2_FOLDER = "mlenergy-leaderboard-v1v2"
V3_FOLDER = "mlenergy-leaderboard-v3-h100"
TP_OVERHEAD_DONOR = {"hf": "vllm-0.5"}
"""v1 has no tensor-parallel row: ``hf`` takes ``tp_overhead`` from ``vllm-0.5``."""
SHIPPED_FITS = (("vllm-0.5", "ML.ENERGY v2 (vLLM 0.5.4)"),
                ("vllm", "ML.ENERGY v3 (vLLM 0.11.1, H100)"),
                ("hf", "ML.ENERGY v1 (HF/FastChat, batch 1)"))
"""Each fitted stack family and its data, in fitting order (``hf`` borrows a constant from
``vllm-0.5``)."""


def _fit_rows(data_root: Path, engine: str) -> tuple[pd.DataFrame, list[str]]:
    from energy_models.measurements.mlenergy import load_v1, load_v2, load_v3

    if engine == "vllm":
        return load_v3(data_root / V3_FOLDER)
    return {"vllm-0.5": load_v2, "hf": load_v1}[engine](data_root / V1V2_FOLDER)


def fit_shipped_constants(data_root: str | Path) -> ShippedFit:
    """Fit each stack family on its ML.ENERGY release under ``data_root`` (the shared data
    folder); ``cpu`` stays assumed. v1 has no tensor-parallel row, so ``hf`` takes its
    ``tp_overhead`` from ``vllm-0.5`` instead of letting an unidentified constant wander."""
    from energy_models.measurements.mlenergy import ASSUMED_INPUT_TOKENS

    constants: dict[str, EngineConstants] = {"cpu": ASSUMED_CPU}
    provenance: dict = {"assumed_input_tokens": ASSUMED_INPUT_TOKENS, "fits": {}}
    errors, tables = [], {}
    for engine, data in SHIPPED_FITS:
        table, skipped = _fit_rows(Path(data_root), engine)
        donor = TP_OVERHEAD_DONOR.get(engine)
        fixed = {"tp_overhead": constants[donor].tp_overhead} if donor else {}
        result = fit_engine(table, fixed)
        constants[engine] = result.constants
        tables[engine] = table
        provenance["fits"][engine] = {
            "data": data, "rows": result.rows, "skipped_models": skipped,
            "fixed": {**FIXED, **fixed},
            "energy_mdape_pct": round(result.energy_mdape, 2),
            "time_per_token_mdape_pct": round(result.time_mdape, 2),
        }
        errors.append(per_device_errors(table, result.constants).assign(engine=engine))
    provenance["fits"]["cpu"] = {"data": "none: assumed constants (see ASSUMED_CPU)"}
    return ShippedFit(constants, provenance, pd.concat(errors, ignore_index=True), tables)
