"""Energy meters: NVIDIA GPUs through NVML, CPU packages and DRAM through RAPL.

:func:`survey` says what this machine can measure and, where it cannot, why; the command line
decides what to do about it. :class:`EnergyMonitor` measures named windows over what was found.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from energy_models.errors import MeterUnavailableError
from energy_models.meters import nvml, rapl
from energy_models.meters.monitor import (
    DEFAULT_SAMPLE_HZ,
    EnergyMonitor,
    Measurement,
    PowerSampler,
    Window,
)
from energy_models.meters.nvml import NvmlGpu
from energy_models.meters.rapl import RaplCounter, RaplZone

__all__ = [
    "DEFAULT_SAMPLE_HZ", "EnergyMonitor", "Measurement", "MeterReport", "NvmlGpu",
    "PowerSampler", "RaplCounter", "RaplZone", "Window", "survey",
]


@dataclass
class MeterReport:
    """What can be measured here, and why not where something cannot."""

    rapl_root: Path
    gpus: list[NvmlGpu] = field(default_factory=list)
    gpu_problem: str | None = None
    gpu_notes: list[str] = field(default_factory=list)
    driver_version: str | None = None
    zones: list[RaplZone] = field(default_factory=list)
    cpu_problem: str | None = None

    @property
    def counted_zones(self) -> list[RaplZone]:
        return [zone for zone in self.zones if zone.usable]

    @property
    def nothing(self) -> str | None:
        """One line saying why nothing at all can be measured, or None."""
        if self.gpus or self.counted_zones:
            return None
        cpu = self.cpu_problem or next(
            (f"{z.label}: {z.why_not}" for z in self.zones if z.counted), "no RAPL zone")
        return f"nothing to measure on this machine: GPU: {self.gpu_problem}; CPU: {cpu}"

    def rapl_counters(self) -> list[RaplCounter]:
        return [RaplCounter(zone, self.rapl_root) for zone in self.counted_zones]


def survey(rapl_root: Path = rapl.DEFAULT_ROOT,
           environ: Mapping[str, str] | None = None) -> MeterReport:
    report = MeterReport(rapl_root)
    try:
        library = nvml.library()
        report.driver_version = nvml.driver_version(library)
        report.gpus, report.gpu_notes = nvml.visible_gpus(library, environ)
    except MeterUnavailableError as exc:
        report.gpu_problem = str(exc)
    try:
        report.zones = rapl.discover(rapl_root)
    except MeterUnavailableError as exc:
        report.cpu_problem = str(exc)
    return report
