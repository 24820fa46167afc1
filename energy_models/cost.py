"""The cost chain: what a piece of work costs on a device, from the best source available.

Sources are tried in order for every row of work; the first that covers a row prices it, and
the ``source`` column says which one did. Fitted regressions come first where the user gives
them (they cover the (llm, device, tp) they were measured on, at measured batch sizes); the
unseen-GPU/LLM predictor prices every other GPU pair; the chain ends in the analytical model,
which covers every catalogued pair (CPUs, and stacks the predictor was not fitted on).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np
import pandas as pd

from energy_models.analytical.model import (
    WORK_COLUMNS,
    EngineConstants,
    analytical_costs,
    shipped_constants,
)
from energy_models.catalog.specs import get_device
from energy_models.errors import CalibrationError
from energy_models.predictor.model import (
    Calibration,
    Predictor,
    measured_itl_s,
    shipped_predictor,
)
from energy_models.regression.fitting import FittedModel, FittedModels
from energy_models.stacks import CPU_ENGINE, DEFAULT_STACK, itl_is_step

COST_COLUMNS = (
    "energy_j",
    "runtime_s",
    "replica_s",
    "power_w",
    "idle_power_w",
    "peak_power_w",
    "ttft_s",
    "itl_s",
    "source",
)


class CostSource(Protocol):
    """One way of pricing work; ``costs`` returns COST_COLUMNS (``source`` optional: it
    defaults to the source's ``name``, and a source may refine it per row)."""

    name: str

    def covers(self, work: pd.DataFrame) -> np.ndarray:
        """Which rows of ``work`` this source can price (a boolean per row)."""
        ...

    def costs(self, work: pd.DataFrame) -> pd.DataFrame: ...


class AnalyticalSource:
    """Roofline model with fitted constants: ``gpu_engine`` for GPUs, ``cpu`` for CPUs."""

    def __init__(self, gpu_engine: str = DEFAULT_STACK):
        self.gpu_engine = gpu_engine
        self.name = f"analytical:{gpu_engine}"

    def _constants(self, engine: str) -> EngineConstants:
        shipped = shipped_constants()
        if engine not in shipped:
            raise CalibrationError(f"no analytical constants for engine {engine!r}; "
                                   f"known: {sorted(shipped)}")
        return shipped[engine]

    def covers(self, work: pd.DataFrame) -> np.ndarray:
        return np.ones(len(work), dtype=bool)

    def costs(self, work: pd.DataFrame) -> pd.DataFrame:
        kinds = work["device"].map(lambda name: get_device(name).kind)
        parts = []
        for kind, rows in work.groupby(kinds, sort=True):
            engine = CPU_ENGINE if kind == "cpu" else self.gpu_engine
            costs = analytical_costs(rows, self._constants(engine),
                                     itl_is_step=itl_is_step(engine))
            parts.append(costs.assign(source=f"analytical:{engine}"))
        return pd.concat(parts).loc[work.index]


class FittedSource:
    """Regressions fitted to measurements, for the (llm, device, tp) and batch sizes they were
    measured at. Energy and runtime come from the fits; time to first token and inter-token
    latency from their own fits where the data had them, else from the analytical model scaled
    by fitted / analytical runtime. Rows it cannot price are left to the next source, and
    ``notes`` says why."""

    def __init__(self, models: FittedModels, engine: str = DEFAULT_STACK,
                 latency: AnalyticalSource | None = None):
        self.models = models
        self.engine = engine
        self.name = f"fitted:{engine}"
        self.latency = latency or AnalyticalSource(engine)
        self._notes: dict[tuple[str, str], list[str]] = {}

    def _note(self, llm: str, device: str, text: str) -> None:
        notes = self._notes.setdefault((llm, device), [])
        if text not in notes:
            notes.append(text)

    def notes(self) -> dict[tuple[str, str], str]:
        return {pair: "; ".join(texts) for pair, texts in sorted(self._notes.items())}

    def _predict(self, rows: pd.DataFrame) -> tuple[dict[str, FittedModel], dict[str, np.ndarray]]:
        first = rows.iloc[0]
        models, _ = self.models.usable(first.llm, first.device, int(first.tp), self.engine)
        tokens = rows.loc[:, ["input_tokens", "output_tokens", "batch"]].to_numpy(float)
        return models, {target: model.predict(tokens) for target, model in models.items()}

    def _coverage(self, llm: str, device: str, measured: list[int]) -> str:
        """Which tensor-parallel degrees and batch sizes the pair's accepted fits cover."""
        spans = []
        for tp in measured:
            models, _ = self.models.usable(llm, device, tp, self.engine)
            if models:
                lo, hi = models["energy_j"].domain["batch"]
                spans.append(f"tp{tp} batch {lo:g}" + (f"-{hi:g}" if hi > lo else ""))
        if spans:
            return "fits cover only " + ", ".join(spans)
        return "measured only at " + ", ".join(f"tp{tp}" for tp in measured)

    def covers(self, work: pd.DataFrame) -> np.ndarray:
        covered = pd.Series(False, index=work.index)
        for (llm, device, tp), rows in work.groupby(["llm", "device", "tp"], sort=True):
            models, reason = self.models.usable(llm, device, int(tp), self.engine)
            measured = sorted({m.tp for m in self.models.models
                               if (m.llm, m.device) == (llm, device)})
            if not models:
                if tp in measured:
                    self._note(llm, device, f"tp{tp}: {reason}")
                else:
                    self._note(llm, device, self._coverage(llm, device, measured)
                               if measured else "not measured")
                continue
            lo, hi = models["energy_j"].domain["batch"]
            batch = rows["batch"].to_numpy(float)
            in_batch = (batch >= lo * (1 - 1e-9)) & (batch <= hi * (1 + 1e-9))
            if not in_batch.all():
                self._note(llm, device, self._coverage(llm, device, measured))
            if in_batch.any():
                _, predicted = self._predict(rows.loc[in_batch])
                positive = (predicted["energy_j"] > 0) & (predicted["runtime_s"] > 0)
                if not positive.all():
                    self._note(llm, device, f"tp{tp}: the fit predicts non-positive energy or "
                                            f"runtime far outside its domain")
                covered.loc[rows.index[in_batch][positive]] = True
        return covered.to_numpy()

    def costs(self, work: pd.DataFrame) -> pd.DataFrame:
        parts = []
        for _, rows in work.groupby(["llm", "device", "tp"], sort=True):
            models, predicted = self._predict(rows)
            energy_model = models["energy_j"]
            base = self.latency.costs(rows)
            batch = rows["batch"].to_numpy(float)
            tp = rows["tp"].to_numpy(float)
            runtime_s = predicted["runtime_s"]
            replica_s = runtime_s / batch
            idle_w = (energy_model.idle_power_w if energy_model.idle_power_w is not None
                      else get_device(rows["device"].iloc[0]).idle_w * tp)
            energy_j = predicted["energy_j"]
            if energy_model.energy_kind == "idle_subtracted":
                energy_j = energy_j + idle_w * replica_s
            scale = runtime_s / base["runtime_s"].to_numpy(float)
            ttft_s = predicted.get("ttft_s", base["ttft_s"].to_numpy(float) * scale)
            itl_s = predicted.get("itl_s", base["itl_s"].to_numpy(float) * scale)
            power_w = energy_j / replica_s
            stretch = _capped(rows, power_w)
            runtime_s, replica_s = runtime_s * stretch, replica_s * stretch
            ttft_s, itl_s, power_w = ttft_s * stretch, itl_s * stretch, power_w / stretch
            parts.append(pd.DataFrame({
                "energy_j": energy_j, "runtime_s": runtime_s, "replica_s": replica_s,
                "power_w": power_w, "idle_power_w": idle_w * np.ones_like(tp),
                "peak_power_w": np.maximum(base["peak_power_w"].to_numpy(float), power_w),
                "ttft_s": ttft_s, "itl_s": itl_s, "source": f"{self.name}:{energy_model.form}",
            }, index=rows.index))
        return pd.concat(parts).loc[work.index]


def _capped(rows: pd.DataFrame, power_w: np.ndarray) -> np.ndarray:
    """How much a power cap stretches each row's time: a capped device runs slower at the cap;
    the work, so the energy, stays."""
    if "power_cap_w" not in rows.columns:
        return np.ones(len(rows))
    cap = rows["power_cap_w"].to_numpy(float) * rows["tp"].to_numpy(float)
    return np.maximum(1.0, power_w / np.where(np.isfinite(cap), cap, np.inf))


class PredictedSource:
    """The unseen-GPU/LLM predictor, for every GPU pair of a stack it was fitted on: power,
    ITL and energy per token from it (rescaled by a calibration when given); time to first
    token scaled from the analytical model by predicted / analytical ITL."""

    def __init__(self, predictor: Predictor, engine: str = DEFAULT_STACK,
                 calibration: Calibration | None = None):
        self.predictor = predictor
        self.engine = engine
        self.calibration = calibration
        self.name = f"predicted:{engine}" + (":calibrated" if calibration else "")

    def covers(self, work: pd.DataFrame) -> np.ndarray:
        if self.engine not in self.predictor.constants:
            return np.zeros(len(work), dtype=bool)
        kinds = work["device"].map(lambda name: get_device(name).kind)
        return (kinds == "gpu").to_numpy()

    def costs(self, work: pd.DataFrame) -> pd.DataFrame:
        # The predictor learned uncapped devices; the cap is applied once, below.
        free = work.drop(columns="power_cap_w", errors="ignore")
        base = analytical_costs(free, self.predictor.constants[self.engine],
                                itl_is_step=itl_is_step(self.engine))
        predicted = self.predictor.predict(free.assign(engine=self.engine))
        if self.calibration is not None:
            predicted = self.calibration.apply(predicted)
        n = work["output_tokens"].to_numpy(float)
        tp = work["tp"].to_numpy(float)
        energy_j = predicted["energy_per_token_j"].to_numpy() * n
        power_w = predicted["power_w"].to_numpy() * tp
        itl_s = predicted["itl_s"].to_numpy()
        # Predicted over analytical ITL, both as the stack measures it, rescales the times.
        scale = itl_s / measured_itl_s(base, work, self.engine)
        stretch = _capped(work, power_w)
        return pd.DataFrame({
            "energy_j": energy_j, "runtime_s": base["runtime_s"].to_numpy(float) * scale * stretch,
            "replica_s": energy_j / power_w * stretch, "power_w": power_w / stretch,
            "idle_power_w": base["idle_power_w"].to_numpy(float),
            "peak_power_w": np.maximum(base["peak_power_w"].to_numpy(float), power_w / stretch),
            "ttft_s": base["ttft_s"].to_numpy(float) * scale * stretch, "itl_s": itl_s * stretch,
            "source": self.name,
        }, index=work.index)


class CostChain:
    """Prices work (WORK_COLUMNS, optional ``power_cap_w``) with the first covering source."""

    def __init__(self, sources: Sequence[CostSource]):
        if not sources:
            raise CalibrationError("a cost chain needs at least one source")
        self.sources = list(sources)

    def costs(self, work: pd.DataFrame) -> pd.DataFrame:
        missing = [c for c in WORK_COLUMNS if c not in work.columns]
        if missing:
            raise CalibrationError(f"work table lacks column {missing[0]!r}")
        if work.empty:
            return pd.DataFrame(columns=list(COST_COLUMNS))
        chosen = np.full(len(work), -1)
        for i, source in enumerate(self.sources):
            free = np.flatnonzero(chosen < 0)
            if free.size == 0:
                break
            covered = np.asarray(source.covers(work.iloc[free]), dtype=bool)
            chosen[free[covered]] = i
        if (chosen < 0).any():
            row = work.iloc[int(np.flatnonzero(chosen < 0)[0])]
            raise CalibrationError(f"no cost source covers llm {row.llm!r} on device "
                                   f"{row.device!r}")
        parts = []
        for i in sorted(set(chosen)):
            source = self.sources[i]
            costs = source.costs(work.iloc[np.flatnonzero(chosen == i)])
            if "source" not in costs.columns:
                costs = costs.assign(source=source.name)
            parts.append(costs)
        return pd.concat(parts).loc[work.index, list(COST_COLUMNS)]

    def notes(self) -> dict[tuple[str, str], str]:
        """Why sources before the last one left (llm, device) pairs to later sources."""
        found: dict[tuple[str, str], str] = {}
        for source in self.sources:
            for pair, note in getattr(source, "notes", dict)().items():
                found.setdefault(pair, note)
        return found


def default_chain(gpu_engine: str = DEFAULT_STACK, models: FittedModels | None = None,
                  predictor: Predictor | None = None,
                  calibration: Calibration | None = None, predict: bool = True) -> CostChain:
    """Fitted regressions first where given, then (``predict``) the predictor, the shipped one
    unless given, for GPUs, then the analytical model (CPUs, and stacks the predictor does not
    know)."""
    analytical = AnalyticalSource(gpu_engine)
    sources: list[CostSource] = [analytical]
    if predict:
        sources.insert(0, PredictedSource(predictor or shipped_predictor(), gpu_engine,
                                          calibration))
    if models is not None:
        sources.insert(0, FittedSource(models, gpu_engine, analytical))
    return CostChain(sources)
