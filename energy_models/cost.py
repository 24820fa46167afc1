"""The cost chain: what a piece of work costs on a device, from the best source available.

Sources are tried in order per (llm, device) pair; the first that covers a pair prices all
of its rows, and the ``source`` column says which one did. Today the chain ends in the
analytical model, which covers every catalogued pair.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import pandas as pd

from energy_models.analytical import (
    WORK_COLUMNS,
    EngineConstants,
    analytical_costs,
    shipped_constants,
)
from energy_models.catalog import get_device
from energy_models.errors import CalibrationError

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

    def covers(self, llm: str, device: str) -> bool: ...

    def costs(self, work: pd.DataFrame) -> pd.DataFrame: ...


class AnalyticalSource:
    """Roofline model with fitted constants: ``gpu_engine`` for GPUs, ``cpu`` for CPUs."""

    def __init__(self, gpu_engine: str = "vllm"):
        self.gpu_engine = gpu_engine
        self.name = f"analytical:{gpu_engine}"

    def _constants(self, engine: str) -> EngineConstants:
        shipped = shipped_constants()
        if engine not in shipped:
            raise CalibrationError(f"no analytical constants for engine {engine!r}; "
                                   f"known: {sorted(shipped)}")
        return shipped[engine]

    def covers(self, llm: str, device: str) -> bool:
        return True

    def costs(self, work: pd.DataFrame) -> pd.DataFrame:
        kinds = work["device"].map(lambda name: get_device(name).kind)
        parts = []
        for kind, rows in work.groupby(kinds, sort=True):
            engine = "cpu" if kind == "cpu" else self.gpu_engine
            costs = analytical_costs(rows, self._constants(engine))
            parts.append(costs.assign(source=f"analytical:{engine}"))
        return pd.concat(parts).loc[work.index]


class CostChain:
    """Prices work (WORK_COLUMNS, optional ``power_cap_w``) with the first covering source."""

    def __init__(self, sources: Sequence[CostSource]):
        if not sources:
            raise CalibrationError("a cost chain needs at least one source")
        self.sources = list(sources)

    def source_for(self, llm: str, device: str) -> CostSource:
        for source in self.sources:
            if source.covers(llm, device):
                return source
        raise CalibrationError(f"no cost source covers llm {llm!r} on device {device!r}")

    def costs(self, work: pd.DataFrame) -> pd.DataFrame:
        missing = [c for c in WORK_COLUMNS if c not in work.columns]
        if missing:
            raise CalibrationError(f"work table lacks column {missing[0]!r}")
        if work.empty:
            return pd.DataFrame(columns=list(COST_COLUMNS))
        chosen = [self.source_for(llm, dev) for llm, dev in zip(work.llm, work.device, strict=True)]
        names = pd.Series([s.name for s in chosen], index=work.index)
        parts = []
        for name, rows in work.groupby(names, sort=True):
            source = next(s for s in self.sources if s.name == name)
            costs = source.costs(rows)
            if "source" not in costs.columns:
                costs = costs.assign(source=name)
            parts.append(costs)
        return pd.concat(parts).loc[work.index, list(COST_COLUMNS)]


def default_chain(gpu_engine: str = "vllm") -> CostChain:
    return CostChain([AnalyticalSource(gpu_engine)])
