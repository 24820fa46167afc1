"""Measured vLLM serving runs of PowerTrace-Sim (github.com/grantwilkins/powertrace-sim).

One run is a folder of three files:

- ``power.csv``: an ``nvidia-smi --query-gpu`` log, one row per GPU per 250 ms sample, stamped
  in local wall time (the manifest's ``clock.local_utc_offset_s`` turns it into unix time);
- ``engine.csv``: vLLM's Prometheus gauges (``num_requests_running``, ...) and cumulative
  counters (``prompt_tokens_total``, ``generation_tokens_total``, ...), stamped in unix time;
- ``manifest.json``: model, GPUs, tensor-parallel degree, clocks, vLLM version and the client's
  request count.

``read_run`` aligns the clocks and interpolates the engine onto the power grid; ``idle_power``
gives idle watts per GPU before the first request and between requests; ``measurement_rows``
turns the steady part of the busy period into measurement-schema rows.
"""

from __future__ import annotations

import io
import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from energy_models.catalog.specs import get_llm
from energy_models.errors import MeasurementError
from energy_models.inputs import (
    MAX_TABLE_BYTES,
    load_json,
    message_error,
    read_bytes,
    short,
    validate,
)
from energy_models.measurements.schema import MEASUREMENT_COLUMNS, Measurements
from energy_models.measurements.schema import validate as validate_rows
from energy_models.registry import UnknownNameError

POWER_FILE, ENGINE_FILE, MANIFEST_FILE = "power.csv", "engine.csv", "manifest.json"
POWER_COLUMNS = ("timestamp", "uuid", "power.draw [W]", "clocks.mem [MHz]")
POWER_TIME_FORMAT = "%Y/%m/%d %H:%M:%S.%f"
GAUGES = ("num_requests_running", "num_requests_waiting", "gpu_cache_usage_perc")
COUNTERS = ("prompt_tokens_total", "generation_tokens_total")
ENGINE_COLUMNS = ("timestamp", *GAUGES, *COUNTERS)

# The manifest names the GPU family only; the memory clock nvidia-smi logs tells the board
# apart: HBM2 1215 MHz (A100 40GB, 1555 GB/s), HBM2e 1593 MHz (A100 SXM4 80GB, 2039 GB/s),
# HBM3 2619 MHz (H100 SXM5, 3.35 TB/s). Add a board here when a run on it arrives.
BOARDS = {("A100", 1215): "A100-40GB", ("A100", 1593): "A100-80GB", ("H100", 2619): "H100-SXM"}

WINDOW_S = 10.0
"""Shortest steady-serving bin: 40 power samples, and thousands of generated tokens at these
rates, so a bin's J/token is not noise, while the batch still varies from bin to bin."""
SETTLE_S = 0.25
"""Quiet time a sample needs behind it, beyond the engine interval around the work, to count as
idle. In these logs power falls back within one sample of the work ending: on the BurstGPT
replay the median of quiet samples moves by 0.3 W between 0 and 0.5 s of settling."""


class _Read(BaseModel):
    """The part of the manifest used here; the rest of it is ignored."""

    model_config = ConfigDict(frozen=True, extra="ignore", strict=True, allow_inf_nan=False)


class _Clock(_Read):
    # The alignment below assumes these bases; a manifest that says otherwise is refused.
    power_timestamp_basis: Literal["local_wall_time"] = "local_wall_time"
    engine_timestamp_basis: Literal["unix_epoch"] = "unix_epoch"
    local_utc_offset_s: float
    power_epoch_offset_s: float = 0.0
    engine_epoch_offset_s: float = 0.0


class _Window(_Read):
    start_epoch: float


class _Summary(_Read):
    completed: int = Field(ge=0)


class _Level(_Read):
    summary: _Summary


class _Probe(_Read):
    window: _Window
    levels: list[_Level] = []
    sessions: list[Any] = []


class _Server(_Read):
    active_gpu_uuids: list[str] = Field(min_length=1)


class _Versions(_Read):
    vllm: str


class _Manifest(_Read):
    model: str
    hardware: str
    tp: int = Field(ge=1)
    clock: _Clock
    probe: _Probe
    server: _Server
    versions: _Versions


@dataclass(frozen=True)
class PowerTraceRun:
    """One measured run, clocks aligned; times are seconds from the manifest's window start."""

    name: str
    """The run's folder name."""
    model: str
    """Hugging Face id the engine served."""
    device: str
    """Catalog name of the GPU board."""
    tp: int
    engine_version: str
    """e.g. ``vLLM 0.10.1.1``."""
    requests: int
    """Requests the client completed."""
    gpus: tuple[str, ...]
    """UUIDs of the replica's GPUs, in the manifest's order."""
    samples: pd.DataFrame
    """The power grid: ``t_s``, ``power_w`` (all the replica's GPUs), and the engine's gauges
    and counters linearly interpolated onto it."""
    gpu_power_w: pd.DataFrame
    """Power per GPU on the same grid, one column per UUID."""
    engine: pd.DataFrame
    """The engine's own rows: ``t_s``, gauges and counters."""

    def energy_j(self, start_s: float | None = None, end_s: float | None = None) -> float:
        """Energy of all the replica's GPUs (trapezoid of the samples) over [start_s, end_s],
        by default the whole log."""
        t = self.samples["t_s"].to_numpy()
        return _integral(t, self.samples["power_w"].to_numpy(),
                         t[0] if start_s is None else start_s, t[-1] if end_s is None else end_s)


@dataclass(frozen=True)
class IdlePower:
    """Median idle power per GPU (in ``PowerTraceRun.gpus`` order) and the samples behind it;
    NaN where there were none."""

    pre_request_w: tuple[float, ...]
    """Model loaded, before the engine saw its first request."""
    pre_request_samples: int
    loaded_idle_w: tuple[float, ...]
    """Between requests: no request running or waiting and no tokens counted for SETTLE_S."""
    loaded_idle_samples: int


def _read_csv(path: Path, columns: tuple[str, ...], what: str) -> pd.DataFrame:
    data = read_bytes(path, message_error(MeasurementError, str(path)), MAX_TABLE_BYTES)
    try:
        frame = pd.read_csv(io.BytesIO(data), skipinitialspace=True)
    except (ValueError, pd.errors.ParserError) as exc:
        raise MeasurementError(f"{path}: cannot read as CSV: "
                               f"{str(exc).splitlines()[0]}") from None
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise MeasurementError(f"{path}: column {missing[0]!r} is missing; {what} needs "
                               f"{', '.join(columns)}")
    if frame.empty:
        raise MeasurementError(f"{path}: no rows; {what} needs at least two samples")
    return frame


def _numbers(frame: pd.DataFrame, column: str, path: Path) -> np.ndarray:
    values = pd.to_numeric(frame[column], errors="coerce").to_numpy(dtype=float)
    bad = ~np.isfinite(values)
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        raise MeasurementError(f"{path}: column {column!r} line {first + 2}: got "
                               f"{short(frame[column].iloc[first])}; must be a finite number")
    return values


def _power(path: Path, manifest: _Manifest) -> tuple[pd.DataFrame, float]:
    """Power per GPU indexed by unix time, and the median memory clock (MHz)."""
    frame = _read_csv(path, POWER_COLUMNS, "an nvidia-smi power log")
    stamps = pd.to_datetime(frame["timestamp"], format=POWER_TIME_FORMAT, errors="coerce")
    if stamps.isna().any():
        first = int(np.flatnonzero(stamps.isna().to_numpy())[0])
        raise MeasurementError(f"{path}: column 'timestamp' line {first + 2}: got "
                               f"{short(frame['timestamp'].iloc[first])}; must be local time "
                               f"as YYYY/MM/DD HH:MM:SS.mmm")
    # Local wall time read as if UTC, less the local offset, is unix time.
    epoch = ((stamps - pd.Timestamp("1970-01-01")).dt.total_seconds().to_numpy()
             - manifest.clock.local_utc_offset_s + manifest.clock.power_epoch_offset_s)
    gpus = manifest.server.active_gpu_uuids
    frame = frame.assign(epoch=epoch, power_w=_numbers(frame, "power.draw [W]", path),
                         mem_mhz=_numbers(frame, "clocks.mem [MHz]", path))
    frame = frame[frame["uuid"].isin(gpus)]
    absent = [g for g in gpus if g not in set(frame["uuid"])]
    if absent:
        raise MeasurementError(f"{path}: column 'uuid': no samples of {absent[0]}, a GPU the "
                               f"manifest's server.active_gpu_uuids names")
    # A sample counts when every GPU of the replica has a reading at that instant.
    wide = frame.groupby(["epoch", "uuid"])["power_w"].mean().unstack()[gpus].dropna()
    if len(wide) < 2:
        raise MeasurementError(f"{path}: fewer than two samples with every GPU of the replica")
    return wide, float(frame["mem_mhz"].median())


def _engine(path: Path, manifest: _Manifest) -> pd.DataFrame:
    frame = _read_csv(path, ENGINE_COLUMNS, "a vLLM metrics log")
    engine = pd.DataFrame({c: _numbers(frame, c, path) for c in ENGINE_COLUMNS})
    engine["timestamp"] += manifest.clock.engine_epoch_offset_s
    engine = engine.sort_values("timestamp").drop_duplicates("timestamp")
    if len(engine) < 2:
        raise MeasurementError(f"{path}: fewer than two samples; a metrics log needs two")
    return engine.reset_index(drop=True)


def _board(manifest: _Manifest, memory_mhz: float, origin: Path) -> str:
    board = BOARDS.get((manifest.hardware, round(memory_mhz)))
    if board is None:
        known = ", ".join(f"{h} at {m} MHz" for h, m in BOARDS)
        raise MeasurementError(f"{origin}: hardware {manifest.hardware!r} with memory clock "
                               f"{memory_mhz:g} MHz is no known board ({known}); add it to "
                               f"powertrace.BOARDS")
    return board


def read_run(folder: str | Path) -> PowerTraceRun:
    """Parse and align one run folder; errors are one line naming the file and column."""
    folder = Path(folder)
    manifest_path = folder / MANIFEST_FILE
    error = message_error(MeasurementError, str(manifest_path))
    manifest = validate(_Manifest, load_json(manifest_path, error), error)
    requests = (sum(level.summary.completed for level in manifest.probe.levels)
                if manifest.probe.levels else len(manifest.probe.sessions))
    if requests < 1:
        raise error("probe", "no completed requests in levels[].summary.completed or sessions")
    power, memory_mhz = _power(folder / POWER_FILE, manifest)
    engine = _engine(folder / ENGINE_FILE, manifest)
    start = manifest.probe.window.start_epoch
    t_s = power.index.to_numpy() - start
    engine_t = engine["timestamp"].to_numpy() - start
    samples = pd.DataFrame({"t_s": t_s, "power_w": power.sum(axis=1).to_numpy()})
    for column in (*GAUGES, *COUNTERS):
        samples[column] = np.interp(t_s, engine_t, engine[column].to_numpy())
    gpu_power = power.reset_index(drop=True)
    gpu_power.columns = list(power.columns)
    return PowerTraceRun(
        name=folder.name, model=manifest.model,
        device=_board(manifest, memory_mhz, folder / POWER_FILE), tp=manifest.tp,
        engine_version=f"vLLM {manifest.versions.vllm}", requests=requests,
        gpus=tuple(manifest.server.active_gpu_uuids), samples=samples, gpu_power_w=gpu_power,
        engine=engine.drop(columns="timestamp").assign(t_s=engine_t),
    )


def _integral(t: np.ndarray, y: np.ndarray, start: float, end: float) -> float:
    """Trapezoid of y(t), linearly interpolated, over [start, end]."""
    grid = np.concatenate([[start], t[(t > start) & (t < end)], [end]])
    return float(np.trapezoid(np.interp(grid, t, y), grid))


def _work_intervals(engine: pd.DataFrame) -> np.ndarray:
    """[start, end] rows around every engine sample that shows work: a request running or
    waiting, or tokens counted since the previous sample. Short requests can start and end
    between two samples, so the counters catch what the gauges miss; the interval reaches to
    the neighbouring samples because the work lies somewhere between them."""
    t = engine["t_s"].to_numpy()
    counted = np.zeros(len(t), dtype=bool)
    for column in COUNTERS:
        counted[1:] |= np.diff(engine[column].to_numpy()) > 0
    queued = (engine["num_requests_running"] > 0) | (engine["num_requests_waiting"] > 0)
    rows = np.flatnonzero(queued.to_numpy() | counted)
    return np.column_stack([t[np.maximum(rows - 1, 0)], t[np.minimum(rows + 1, len(t) - 1)]])


def idle_power(run: PowerTraceRun) -> IdlePower:
    """Idle watts per GPU before the first request, and between requests once serving."""
    t = run.samples["t_s"].to_numpy()
    work = _work_intervals(run.engine)
    if len(work) == 0:
        before = np.ones(len(t), dtype=bool)
        between = np.zeros(len(t), dtype=bool)
    else:
        before = t < work[0, 0]
        # Quiet for SETTLE_S before the sample, while the engine is still logged.
        overlaps = ((work[:, 0][None, :] <= t[:, None])
                    & (work[:, 1][None, :] >= t[:, None] - SETTLE_S)).any(axis=1)
        between = (t > work[0, 1]) & ~overlaps & (t <= run.engine["t_s"].iloc[-1])

    def medians(mask: np.ndarray) -> tuple[float, ...]:
        if not mask.any():
            return tuple(float("nan") for _ in run.gpus)
        return tuple(float(run.gpu_power_w.loc[mask, gpu].median()) for gpu in run.gpus)

    return IdlePower(medians(before), int(before.sum()), medians(between), int(between.sum()))


def steady_windows(run: PowerTraceRun) -> tuple[list[tuple[float, float]], list[str]]:
    """Bins of steady serving, [start_s, end_s], and why the rest of the busy period is left out.

    Steady serving starts when the running-request gauge first reaches its median while busy
    (the ramp-up is over) and ends when it is last at or above it (the drain begins). That span
    is cut into equal bins of at least WINDOW_S; a bin in which the gauge falls to 0 mixes idle
    with serving (on-off traffic) and is left out.
    """
    engine = run.engine
    t = engine["t_s"].to_numpy()
    running = engine["num_requests_running"].to_numpy()
    if not (running > 0).any():
        return [], [f"powertrace:{run.name}: no request ever runs"]
    level = float(np.median(running[running > 0]))
    at_level = t[running >= level]
    first, last = float(at_level[0]), float(at_level[-1])
    count = int((last - first) // WINDOW_S)
    if count == 0:
        return [], [f"powertrace:{run.name}: the steady span ({first:.1f}-{last:.1f} s, "
                    f"running >= {level:g}) is shorter than one {WINDOW_S:g} s bin"]
    edges = np.linspace(first, last, count + 1)
    kept, dropped = [], []
    for start, end in itertools.pairwise(edges):
        inside = (t >= start) & (t <= end)
        if (running[inside] == 0).any():
            dropped.append(f"powertrace:{run.name} {start:.1f}-{end:.1f} s: no request runs "
                           f"at times (on-off traffic, not steady serving)")
        else:
            kept.append((float(start), float(end)))
    return kept, dropped


def measurement_rows(run: PowerTraceRun) -> Measurements:
    """Steady-serving bins as measurement-schema rows (gross GPU energy, all ``tp`` GPUs).

    Per bin of T seconds with G tokens generated and P prompt tokens counted:
    ``batch`` is the time-mean of running requests; ``itl_s`` = batch x T / G, the mean time a
    running request waits per output token (other requests' prefills included). vLLM does not
    count requests per bin, so a request is the run's mean: ``output_tokens`` = n, the run's
    generated tokens over the client's completed requests, and the bin's work is G / n such
    requests, each with ``input_tokens`` = n x P / G. Then ``runtime_s`` = n x itl_s (decode
    time, no TTFT: as the ML.ENERGY rows) and ``energy_j`` = bin energy x n / G, which equals
    mean_power_w x runtime_s / batch.
    """
    origin = f"powertrace:{run.name}"
    try:
        llm = get_llm(run.model).name
    except UnknownNameError:
        return _no_rows(f"{origin}: model {run.model!r} is not in the LLM catalog; its rows "
                        f"are left out")
    windows, dropped = steady_windows(run)
    engine = run.engine
    t = engine["t_s"].to_numpy()
    generated = engine["generation_tokens_total"].to_numpy()
    prompted = engine["prompt_tokens_total"].to_numpy()
    output_tokens = (generated[-1] - generated[0]) / run.requests
    idle_w = sum(idle_power(run).pre_request_w)
    rows = []
    for start, end in windows:
        seconds = end - start
        tokens = float(np.interp(end, t, generated) - np.interp(start, t, generated))
        if tokens <= 0:
            dropped.append(f"{origin} {start:.1f}-{end:.1f} s: no tokens generated")
            continue
        prompt = float(np.interp(end, t, prompted) - np.interp(start, t, prompted))
        batch = _integral(t, engine["num_requests_running"].to_numpy(), start, end) / seconds
        energy = run.energy_j(start, end)
        itl = batch * seconds / tokens
        rows.append({
            "llm": llm, "device": run.device, "tp": run.tp, "batch": batch,
            "input_tokens": output_tokens * prompt / tokens, "output_tokens": output_tokens,
            "energy_j": energy * output_tokens / tokens, "runtime_s": output_tokens * itl,
            "itl_s": itl, "mean_power_w": energy / seconds, "idle_power_w": idle_w,
            "energy_kind": "gross", "engine": "vllm", "engine_version": run.engine_version,
            "config": f"{run.name}.t{start:.0f}-{end:.0f}s", "source": origin,
        })
    if not rows:
        return _no_rows(*dropped)
    result = validate_rows(pd.DataFrame(rows), origin)
    return Measurements(result.table, dropped + result.dropped)


def _no_rows(*reasons: str) -> Measurements:
    return Measurements(pd.DataFrame(columns=list(MEASUREMENT_COLUMNS)), list(reasons))


def powertrace_rows(root: str | Path) -> Measurements:
    """Rows of every run folder under ``root`` that has a power log; the rest are reported."""
    parts = []
    for folder in sorted(p for p in Path(root).iterdir() if p.is_dir()):
        if (folder / POWER_FILE).exists():
            parts.append(measurement_rows(read_run(folder)))
        else:
            parts.append(_no_rows(f"powertrace:{folder.name}: no {POWER_FILE}"))
    tables = [part.table for part in parts if not part.table.empty]
    table = (pd.concat(tables, ignore_index=True) if tables
             else pd.DataFrame(columns=list(MEASUREMENT_COLUMNS)))
    return Measurements(table, [line for part in parts for line in part.dropped])
