"""Measurement windows over GPUs and RAPL zones, and a background power sampler.

Windows are named, may nest and overlap, and open and close independently: each keeps its own
starting readings of monotonic counters, so one window never disturbs another. A GPU without an
energy counter is measured by integrating power polled on a background thread (trapezoids,
interpolated at the window's edges), and the method used is recorded per GPU and window.
"""

from __future__ import annotations

import bisect
import contextlib
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

import numpy as np

from energy_models.errors import MeterError
from energy_models.meters.periodic import Periodic
from energy_models.meters.rapl import RaplCounter, RaplPoller

if TYPE_CHECKING:
    import pandas as pd

DEFAULT_SAMPLE_HZ = 10.0


class PowerSource(Protocol):
    cuda_index: int
    energy_counter: bool

    def power_w(self) -> float: ...

    def energy_mj(self) -> int: ...


class PowerSampler(Periodic):
    """Polls the power of each GPU at ``rate_hz`` on a background thread.

    Keeps ``(time, power per GPU)`` samples; :meth:`energy_j` integrates them between two times
    and :meth:`trace` returns them as a table.
    """

    def __init__(self, gpus: Sequence[PowerSource], rate_hz: float = DEFAULT_SAMPLE_HZ,
                 clock: Callable[[], float] = time.monotonic):
        if rate_hz <= 0:
            raise ValueError(f"rate_hz must be positive, got {rate_hz}")
        super().__init__(self.sample, 1.0 / rate_hz, "power-sampler")
        self.gpus = list(gpus)
        self.rate_hz = rate_hz
        self.clock = clock
        self._times: list[float] = []
        self._power: list[list[float]] = []
        self._lock = threading.Lock()

    def sample(self) -> None:
        """Take one reading of every GPU now."""
        with self._lock:  # Readings from two threads stay in time order.
            powers = [gpu.power_w() for gpu in self.gpus]
            now = self.clock()
            self._times.append(now)
            self._power.append(powers)

    def start(self) -> None:
        """Sample now, then on the thread; the window edges take their own samples too."""
        if not self.running:
            self.sample()
            super().start()

    def stop(self) -> None:
        if self.running:
            super().stop()
            if self.error is None:
                self.sample()

    def __enter__(self) -> PowerSampler:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def energy_j(self, position: int, start: float, end: float) -> float:
        """Energy of the GPU at ``position`` between two clock times, from the samples."""
        with self._lock:
            times = np.array(self._times)
            power = np.array([row[position] for row in self._power])
        if len(times) < 2 or start < times[0] or end > times[-1]:
            raise MeterError(f"power samples cover {times[0] if len(times) else 0:.3f}–"
                             f"{times[-1] if len(times) else 0:.3f} s, not the window "
                             f"{start:.3f}–{end:.3f} s")
        inside = (times > start) & (times < end)
        t = np.concatenate([[start], times[inside], [end]])
        p = np.interp(t, times, power)
        return float(np.sum((p[1:] + p[:-1]) / 2 * np.diff(t)))

    def forget_before(self, moment: float) -> None:
        """Drop samples no open window needs, keeping the one just before ``moment``."""
        with self._lock:
            cut = max(0, bisect.bisect_left(self._times, moment) - 1)
            del self._times[:cut]
            del self._power[:cut]

    def trace(self) -> pd.DataFrame:
        """Samples so far: ``time_s`` (clock time), ``gpu`` (CUDA index), ``power_w``."""
        with self._lock:
            times = list(self._times)
            power = [list(row) for row in self._power]
        rows = [(t, gpu.cuda_index, row[i]) for t, row in zip(times, power, strict=True)
                for i, gpu in enumerate(self.gpus)]
        import pandas as pd

        return pd.DataFrame(rows, columns=["time_s", "gpu", "power_w"])


@dataclass(frozen=True)
class Measurement:
    """What one window measured. GPUs are keyed by CUDA index, RAPL zones by label."""

    name: str
    elapsed_s: float
    gpu_energy_j: dict[int, float]
    gpu_method: dict[int, str]
    """``counter``, or ``sampled at N Hz`` where power was integrated."""
    cpu_energy_j: dict[str, float] = field(default_factory=dict)
    gpu_sampled_energy_j: dict[int, float] = field(default_factory=dict)
    """Integrated power samples, beside the counter, where the monitor was asked to compare."""

    @property
    def gpu_total_j(self) -> float:
        return sum(self.gpu_energy_j.values())

    @property
    def cpu_total_j(self) -> float:
        return sum(self.cpu_energy_j.values())


@dataclass(frozen=True)
class _Start:
    time: float
    counters_mj: dict[int, int]
    cpu_uj: dict[str, int]


class Window:
    """A context manager's handle; ``result`` is set when the block ends."""

    def __init__(self, name: str):
        self.name = name
        self.result: Measurement | None = None


class EnergyMonitor:
    """Measures named windows over a set of GPUs and RAPL zones.

    ``compare`` also samples power for GPUs that have a counter, so each window reports both
    (to check one against the other). ``sync`` runs at each window edge, e.g.
    ``torch.cuda.synchronize``, so queued GPU work is inside the window it belongs to.
    """

    def __init__(self, gpus: Sequence[PowerSource] = (), rapl: Sequence[RaplCounter] = (), *,
                 sample_hz: float = DEFAULT_SAMPLE_HZ, compare: bool = False,
                 clock: Callable[[], float] = time.monotonic,
                 sync: Callable[[], None] | None = None):
        if not gpus and not rapl:
            raise MeterError("an energy monitor needs at least one GPU or RAPL zone")
        physical = [getattr(gpu, "nvml_index", gpu.cuda_index) for gpu in gpus]
        if len(set(physical)) < len(physical):
            raise MeterError("two of the GPUs are MIG instances of one physical GPU, whose "
                             "energy NVML reports once; measure it through one of them")
        self.gpus = list(gpus)
        self.rapl = list(rapl)
        self.clock = clock
        self.sync = sync
        self.compare = compare
        self._sampled = [i for i, gpu in enumerate(self.gpus) if compare or not gpu.energy_counter]
        self.sampler = (PowerSampler([self.gpus[i] for i in self._sampled], sample_hz, clock)
                        if self._sampled else None)
        self._poller = RaplPoller(self.rapl) if self.rapl else None
        self._open: dict[str, _Start] = {}

    def _read(self) -> tuple[float, dict[int, int], dict[str, int]]:
        if self.sync is not None:
            self.sync()
        now = self.clock()
        counters = {gpu.cuda_index: gpu.energy_mj() for gpu in self.gpus if gpu.energy_counter}
        cpu = self._poller.read_all() if self._poller else {}
        if self._poller and self._poller.error:
            raise self._poller.error
        return now, counters, cpu

    def begin_window(self, name: str) -> None:
        if name in self._open:
            raise MeterError(f"window {name!r} is already open; give overlapping windows "
                             f"different names")
        if not self._open:
            if self.sampler:
                self.sampler.start()
            if self._poller:
                self._poller.start()
        try:
            if self._open and self.sampler:
                self.sampler.sample()
            now, counters, cpu = self._read()
        except BaseException:
            self._settle()  # Threads started for this window stop with it.
            raise
        self._open[name] = _Start(now, counters, cpu)

    def end_window(self, name: str) -> Measurement:
        start = self._open.pop(name, None)
        if start is None:
            raise MeterError(f"window {name!r} was never opened (open: "
                             f"{', '.join(self._open) or 'none'})")
        try:
            now, counters, cpu = self._read()
            energy: dict[int, float] = {}
            method: dict[int, str] = {}
            sampled: dict[int, float] = {}
            if self.sampler:
                if self.sampler.error:
                    raise self.sampler.error
                self.sampler.sample()
            for position, gpu in enumerate(self.gpus):
                index = gpu.cuda_index
                if gpu.energy_counter:
                    energy[index] = (counters[index] - start.counters_mj[index]) / 1000.0
                    method[index] = "counter"
                if position in self._sampled:
                    value = self.sampler.energy_j(self._sampled.index(position), start.time,
                                                  now)
                    sampled[index] = value
                    if not gpu.energy_counter:
                        energy[index] = value
                        method[index] = f"sampled at {self.sampler.rate_hz:g} Hz"
        finally:
            self._settle()
        return Measurement(
            name, now - start.time, energy, method,
            {label: (cpu[label] - start.cpu_uj[label]) / 1e6 for label in cpu},
            sampled if self.compare else {})

    def _settle(self) -> None:
        if self._open:
            if self.sampler:
                self.sampler.forget_before(min(s.time for s in self._open.values()))
            return
        try:
            if self.sampler:
                self.sampler.stop()
                self.sampler.forget_before(self.clock())
        finally:
            if self._poller:
                self._poller.stop()

    @contextlib.contextmanager
    def window(self, name: str) -> Iterator[Window]:
        """``with monitor.window("step") as w: ...``, then ``w.result``."""
        handle = Window(name)
        self.begin_window(name)
        try:
            yield handle
        except BaseException:
            self._open.pop(name, None)
            self._settle()
            raise
        handle.result = self.end_window(name)

    def close(self) -> None:
        self._open.clear()
        self._settle()
