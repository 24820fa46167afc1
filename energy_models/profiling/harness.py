"""The profiling harness: measure an inference backend over a grid of shapes.

For each grid point (input tokens, output tokens, batch) the harness runs the backend to warm
up, waits for the GPUs to settle back to idle (utilisation, power and temperature steady),
measures idle power, then measures a set number of repetitions, each in its own window. Rows
follow the measurement schema with gross energy; idle energy is kept beside it in its own
column, never subtracted. After every point the whole table is rewritten atomically, so a run
that is killed loses at most the point in flight and starts again from there.
"""

from __future__ import annotations

import io
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from itertools import product
from pathlib import Path
from typing import Protocol

import numpy as np
import pandas as pd

from energy_models.errors import MeasurementError
from energy_models.io import write_atomic
from energy_models.measurements.schema import MEASUREMENT_COLUMNS
from energy_models.meters.monitor import EnergyMonitor

EXTRA_COLUMNS = (
    "repetition", "gross_energy_j", "idle_energy_j", "sampled_energy_j", "cpu_energy_j",
    "energy_method", "idle_settled",
)
"""Beside the schema: the whole run's gross energy over its GPUs, the idle share of it
(idle power × time, kept apart), integrated power samples for checking the counter, host CPU
energy from RAPL, how the GPU energy was read, and whether the GPUs settled before the run."""


@dataclass(frozen=True)
class Generation:
    """What one backend call produced and how long its tokens took."""

    output_tokens: int
    ttft_s: float | None = None
    itl_s: float | None = None


class Backend(Protocol):
    name: str
    engine: str

    def version(self) -> str: ...

    def load(self) -> None:
        """Build the model; slow, so kept out of the constructor."""

    def synchronize(self) -> None:
        """Wait for queued device work, so a window's edges are where the work is."""

    def generate(self, input_tokens: int, output_tokens: int, batch: int) -> Generation: ...


class IdleProbe(Protocol):
    """What the harness reads to decide the GPUs are idle (an :class:`NvmlGpu`)."""

    def power_w(self) -> float: ...

    def utilization_pct(self) -> float | None: ...

    def temperature_c(self) -> float: ...


@dataclass(frozen=True)
class Grid:
    input_tokens: tuple[int, ...]
    output_tokens: tuple[int, ...]
    batches: tuple[int, ...]

    def __post_init__(self) -> None:
        for name, values in asdict(self).items():
            if not values or any(int(v) != v or v <= 0 for v in values):
                raise MeasurementError(f"grid {name}: needs positive whole numbers, "
                                       f"got {list(values)}")

    def points(self) -> list[tuple[int, int, int]]:
        """(input, output, batch), small batches first so early results cover every shape."""
        return [(m, n, b) for b, m, n in product(sorted(set(self.batches)),
                                                 sorted(set(self.input_tokens)),
                                                 sorted(set(self.output_tokens)))]


GRIDS = {
    "tiny": Grid((32, 64), (8, 16), (1, 2)),
    "small": Grid((128, 512), (32, 128), (1, 8)),
    "standard": Grid((128, 256, 512, 1024, 2048), (32, 64, 128, 256, 512), (1, 8, 32)),
}
"""``tiny`` for smoke tests, ``small`` for a first look, ``standard`` (5 × 5 × 3) to fit."""


@dataclass(frozen=True)
class IdlePolicy:
    """When the GPUs count as idle again, and how idle power is measured."""

    max_utilization_pct: float = 0.0
    power_band_w: float = 5.0
    """Power must stay within this band over ``steady_s``."""
    temperature_band_c: float = 1.0
    steady_s: float = 5.0
    poll_s: float = 0.5
    timeout_s: float = 120.0
    """Give up waiting after this long; the rows then say ``idle_settled`` is false."""
    idle_window_s: float = 3.0


@dataclass(frozen=True)
class ProfileSettings:
    llm: str
    device: str
    tp: int = 1
    repetitions: int = 3
    warmup: int = 1
    """Unmeasured runs before each point (and once more before the first)."""
    idle: IdlePolicy = field(default_factory=IdlePolicy)


@dataclass
class ProfileResult:
    table: pd.DataFrame
    measured: list[tuple[int, int, int]]
    resumed: list[tuple[int, int, int]]
    unsettled: list[tuple[int, int, int]]


@dataclass(frozen=True)
class Settled:
    settled: bool
    waited_s: float


def wait_for_idle(probes: Sequence[IdleProbe], policy: IdlePolicy,
                  clock: Callable[[], float] = time.monotonic,
                  sleep: Callable[[float], None] = time.sleep) -> Settled:
    """Poll until every GPU has been idle and steady for ``policy.steady_s``, or time out."""
    start = clock()
    history: list[tuple[float, list[float], list[float], list[float]]] = []
    while True:
        now = clock()
        history.append((now, [p.utilization_pct() for p in probes],
                        [p.power_w() for p in probes], [p.temperature_c() for p in probes]))
        # From the last reading at or before the window's start, so it spans all of steady_s.
        first = max((i for i, h in enumerate(history) if h[0] <= now - policy.steady_s),
                    default=0)
        recent = history[first:]
        if now - start >= policy.steady_s and _steady(recent, policy):
            return Settled(True, now - start)
        if now - start >= policy.timeout_s:
            return Settled(False, now - start)
        sleep(policy.poll_s)


def _steady(recent: list, policy: IdlePolicy) -> bool:
    util = np.array([[np.nan if u is None else u for u in h[1]] for h in recent])
    power = np.array([h[2] for h in recent])
    temperature = np.array([h[3] for h in recent])
    # NaN (utilisation unknown, as in MIG mode) leaves the decision to power and temperature.
    return bool((np.isnan(util) | (util <= policy.max_utilization_pct)).all()
                and (np.ptp(power, axis=0) <= policy.power_band_w).all()
                and (np.ptp(temperature, axis=0) <= policy.temperature_band_c).all())


def measure_idle_w(monitor: EnergyMonitor, seconds: float,
                   sleep: Callable[[float], None] = time.sleep) -> float:
    """Mean power of the monitor's GPUs over ``seconds`` of doing nothing."""
    with monitor.window("idle") as window:
        sleep(seconds)
    return window.result.gpu_total_j / window.result.elapsed_s


def read_runs(path: Path) -> pd.DataFrame:
    """A harness output as written (schema and extra columns), CSV or Parquet."""
    try:
        return pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)
    except ImportError as exc:
        raise MeasurementError(f"{path}: Parquet needs pyarrow ({exc}); "
                               f"`pip install pyarrow` or use a .csv name") from None
    except (OSError, ValueError) as exc:
        raise MeasurementError(f"{path}: cannot read it to resume: "
                               f"{str(exc).splitlines()[0]}; move it away to start afresh"
                               ) from None


def write_runs(path: Path, table: pd.DataFrame) -> None:
    if path.suffix == ".parquet":
        buffer = io.BytesIO()
        try:
            table.to_parquet(buffer, index=False)
        except ImportError as exc:
            raise MeasurementError(f"{path}: Parquet needs pyarrow ({exc}); "
                                   f"`pip install pyarrow` or use a .csv name") from None
        write_atomic(path, buffer.getvalue())
    else:
        write_atomic(path, table.to_csv(index=False, float_format="%.10g"))


def _config(point: tuple[int, int, int]) -> str:
    m, n, b = point
    return f"b{b}.m{m}.n{n}"


def check_resume(path: Path, settings: ProfileSettings, engine: str) -> pd.DataFrame | None:
    """The rows already in ``path``, or None; refuses a table of another llm, device or stack."""
    if not path.exists():
        return None
    done = read_runs(path)
    if done.empty:
        return None
    expected = {"llm": settings.llm, "device": settings.device, "tp": settings.tp,
                "engine": engine}
    for column, value in expected.items():
        found = set(done[column].astype(type(value))) if column in done else set()
        if found != {value}:
            raise MeasurementError(
                f"{path}: holds {column} {sorted(map(str, found)) or 'nothing'}, not {value!r}; "
                f"give another --out, or move it away to start afresh")
    return done


def profile(backend: Backend, grid: Grid, settings: ProfileSettings, monitor: EnergyMonitor,
            probes: Sequence[IdleProbe], out: Path, *,
            clock: Callable[[], float] = time.monotonic,
            sleep: Callable[[float], None] = time.sleep,
            progress: Callable[[int, int, str], None] | None = None) -> ProfileResult:
    """Measure every grid point not already in ``out``; rewrite ``out`` after each point."""
    if settings.repetitions < 1:
        raise MeasurementError(f"repetitions must be at least 1, got {settings.repetitions}")
    previous = check_resume(out, settings, backend.engine)
    frames = []
    resumed = []
    points = grid.points()
    if previous is not None:
        counts = previous.groupby("config").size()
        complete = set(counts[counts >= settings.repetitions].index)
        resumed = [p for p in points if _config(p) in complete]
        frames.append(previous[previous["config"].isin(complete)])
    todo = [p for p in points if p not in resumed]
    measured, unsettled = [], []
    if todo:
        for _ in range(settings.warmup):
            backend.generate(*todo[0])
    for done, point in enumerate(todo):
        if progress:
            progress(done, len(todo), _config(point))
        rows, settled = _measure_point(backend, point, settings, monitor, probes, clock, sleep)
        if not settled:
            unsettled.append(point)
        frames.append(rows)
        measured.append(point)
        write_runs(out, pd.concat(frames, ignore_index=True))
    if progress:
        progress(len(todo), len(todo), "done")
    table = (pd.concat(frames, ignore_index=True) if frames
             else pd.DataFrame(columns=[*MEASUREMENT_COLUMNS, *EXTRA_COLUMNS]))
    return ProfileResult(table, measured, resumed, unsettled)


def _measure_point(backend: Backend, point: tuple[int, int, int], settings: ProfileSettings,
                   monitor: EnergyMonitor, probes: Sequence[IdleProbe],
                   clock: Callable[[], float], sleep: Callable[[float], None]
                   ) -> tuple[pd.DataFrame, bool]:
    m, n, b = point
    for _ in range(settings.warmup):
        backend.generate(m, n, b)
    settled = wait_for_idle(probes, settings.idle, clock, sleep).settled
    idle_w = measure_idle_w(monitor, settings.idle.idle_window_s, sleep)
    rows = []
    for repetition in range(settings.repetitions):
        with monitor.window(f"{_config(point)}.r{repetition}") as window:
            generated = backend.generate(m, n, b)
        result = window.result
        elapsed = result.elapsed_s
        gross = result.gpu_total_j
        rows.append({
            "llm": settings.llm, "device": settings.device, "tp": settings.tp, "batch": b,
            "input_tokens": m, "output_tokens": generated.output_tokens,
            "energy_j": gross / b, "runtime_s": elapsed,
            "ttft_s": generated.ttft_s, "itl_s": generated.itl_s,
            "mean_power_w": gross / elapsed, "idle_power_w": idle_w, "energy_kind": "gross",
            "engine": backend.engine, "config": _config(point),
            "source": f"wattsched measure, {backend.name} backend",
            "repetition": repetition, "gross_energy_j": gross, "idle_energy_j": idle_w * elapsed,
            "sampled_energy_j": (sum(result.gpu_sampled_energy_j.values())
                                 if result.gpu_sampled_energy_j else np.nan),
            "cpu_energy_j": result.cpu_total_j if result.cpu_energy_j else np.nan,
            "energy_method": ",".join(sorted(set(result.gpu_method.values()))),
            "idle_settled": settled,
        })
    return pd.DataFrame(rows, columns=[*MEASUREMENT_COLUMNS, *EXTRA_COLUMNS]), settled


def meta_path(path: Path) -> Path:
    return path.with_name(path.name + ".meta.json")


def write_meta(path: Path, meta: dict) -> None:
    """The run's settings and environment beside the table, as ``<out>.meta.json``."""
    write_atomic(meta_path(path), json.dumps(meta, indent=2, sort_keys=True, default=str) + "\n")


def check_meta(path: Path, meta: dict, keys: tuple[str, ...]) -> None:
    """Refuse to resume ``path`` with other settings than those its rows were measured with."""
    if not path.exists() or not meta_path(path).exists():
        return
    try:
        before = json.loads(meta_path(path).read_text())
    except (OSError, ValueError) as exc:
        raise MeasurementError(f"{meta_path(path)}: cannot read it to resume ({exc}); move "
                               f"{path} and it away to start afresh") from None
    for key in keys:
        if before.get(key) != meta[key]:
            raise MeasurementError(
                f"{path}: was measured with {key} {before.get(key)!r}, not {meta[key]!r}; "
                f"give another --out, or move it away to start afresh")


def counter_agreement(table: pd.DataFrame, min_window_s: float = 10.0) -> pd.DataFrame:
    """Counter vs integrated power samples per row whose window is at least ``min_window_s``."""
    rows = table.dropna(subset=["sampled_energy_j"])
    rows = rows[(rows["runtime_s"] >= min_window_s) & (rows["energy_method"] == "counter")]
    return rows.assign(relative_difference=(rows["sampled_energy_j"] / rows["gross_energy_j"]
                                            - 1.0))


def per_point_summary(table: pd.DataFrame) -> pd.DataFrame:
    """Mean energy, runtime and power per grid point (batch, input, output) over repetitions,
    and whether every repetition's idle settled."""
    return table.groupby(["batch", "input_tokens", "output_tokens"], sort=True).agg(
        energy_j=("energy_j", "mean"), runtime_s=("runtime_s", "mean"),
        idle_power_w=("idle_power_w", "mean"), mean_power_w=("mean_power_w", "mean"),
        settled=("idle_settled", "all")).reset_index()
