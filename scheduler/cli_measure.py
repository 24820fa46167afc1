"""``wattsched meters`` and ``wattsched measure``: what this machine can measure, and measuring."""

from __future__ import annotations

import json
import os
import platform
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer
from rich import box
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from energy_models.errors import MeterUnavailableError
from energy_models.meters import (
    DEFAULT_SAMPLE_HZ,
    EnergyMonitor,
    MeterReport,
    PowerSampler,
    survey,
)
from energy_models.meters.rapl import DEFAULT_ROOT
from energy_models.registry import UnknownNameError
from scheduler.console import err, user_errors, wide_console
from scheduler.errors import InputError


class MetersFormat(str, Enum):
    table = "table"
    json = "json"


class GridName(str, Enum):
    tiny = "tiny"
    small = "small"
    standard = "standard"


def _catalog_name(gpu_name: str) -> str | None:
    from energy_models.catalog.specs import get_device

    try:
        return get_device(gpu_name).name
    except UnknownNameError:
        return None


def _report_dict(report: MeterReport) -> dict:
    return {
        "gpus": [{
            "cuda_index": g.cuda_index, "nvml_index": g.nvml_index, "name": g.name,
            "catalog_name": _catalog_name(g.name), "uuid": g.uuid,
            "energy": "counter" if g.energy_counter else "sampled power",
            "why_no_counter": g.why_no_counter, "power": g.power_kind,
            "power_limit_w": g.power_limit_w(), "mig": g.mig,
        } for g in report.gpus],
        "gpu_problem": report.gpu_problem,
        "gpu_notes": report.gpu_notes,
        "driver_version": report.driver_version,
        "rapl_root": str(report.rapl_root),
        "rapl_zones": [{
            "label": z.label, "path": str(z.path), "counted": z.usable,
            "max_energy_range_uj": z.max_energy_range_uj, "why_not": z.why_not,
        } for z in report.zones],
        "cpu_problem": report.cpu_problem,
    }


def meters(
    rapl_root: Annotated[Path, typer.Option(help="Root of the powercap tree (RAPL zones).")] = DEFAULT_ROOT,  # noqa: E501
    fmt: Annotated[MetersFormat, typer.Option("--format", help="What to print on stdout.")] = MetersFormat.table,  # noqa: E501
) -> None:
    """List what this machine can measure, how, and why not where it cannot.

    GPUs through NVML, CPU packages and DRAM through RAPL; exit code 2 when nothing can be
    measured."""
    with user_errors():
        # CUDA numbers GPUs fastest first unless told otherwise; NVML uses PCI order.
        os.environ.setdefault("CUDA_DEVICE_ORDER", "PCI_BUS_ID")
        report = survey(rapl_root)
        nothing = report.nothing
        if nothing:
            raise MeterUnavailableError(nothing)
        doc = _report_dict(report)
        if fmt is MetersFormat.json:
            sys.stdout.write(json.dumps(doc, indent=1) + "\n")
            return
        console = wide_console()
        if report.gpus:
            table = Table(title=f"GPUs (NVML, driver {report.driver_version})",
                          box=box.SIMPLE_HEAD)
            for col in ("cuda", "name", "catalog", "energy", "power reading", "limit W", "note"):
                table.add_column(col, justify="right" if col in {"cuda", "limit W"} else "left")
            for g in doc["gpus"]:
                energy = g["energy"] + (f" ({g['why_no_counter']})" if g["why_no_counter"] else "")
                limit = g["power_limit_w"]
                table.add_row(str(g["cuda_index"]), g["name"], g["catalog_name"] or "[red]unknown",
                              escape(energy), g["power"], "-" if limit is None else f"{limit:g}",
                              escape(g["mig"] or ""))
            console.print(table)
            for note in report.gpu_notes:
                console.print(f"note: {note}", markup=False, highlight=False, soft_wrap=True)
        else:
            console.print(f"GPUs: none measurable: {report.gpu_problem}", markup=False,
                          highlight=False, soft_wrap=True)
        if report.zones:
            table = Table(title=f"CPU energy (RAPL, {report.rapl_root})", box=box.SIMPLE_HEAD)
            for col in ("zone", "path", "counted", "wraps at kJ", "why not"):
                table.add_column(col)
            for z in doc["rapl_zones"]:
                wrap = z["max_energy_range_uj"]
                table.add_row(z["label"], Path(z["path"]).name, "yes" if z["counted"] else "no",
                              "-" if wrap is None else f"{wrap / 1e9:.1f}",
                              escape(z["why_not"] or ""))
            console.print(table)
        else:
            console.print(f"CPU: none measurable: {report.cpu_problem}", markup=False,
                          highlight=False, soft_wrap=True)


def _axis(text: str | None, option: str) -> tuple[int, ...] | None:
    if text is None:
        return None
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise InputError("measure", option, f"{text!r} is not a comma-separated list of "
                         f"whole numbers, e.g. 128,512") from None
    if not values or min(values) <= 0:
        raise InputError("measure", option, f"{text!r}: give positive whole numbers")
    return values


def measure(
    llm: Annotated[str, typer.Option(help="LLM shape to run (catalog name or alias).", show_default=False)],  # noqa: E501
    out: Annotated[Path, typer.Option(help="Measurement table to write (.parquet or .csv); rewritten after each point, and resumed if it exists.", show_default=False)],  # noqa: E501
    backend: Annotated[str, typer.Option(help="Inference backend: hf-random (transformers, random weights from the catalogued shape).")] = "hf-random",  # noqa: E501
    grid: Annotated[GridName, typer.Option(help="Input × output tokens × batch: tiny (32–64 × 8–16 × 1–2), small (128–512 × 32–128 × 1–8), standard (5 × 5 × 3: 128–2048 × 32–512 × 1, 8, 32).")] = GridName.small,  # noqa: E501
    input_tokens: Annotated[str | None, typer.Option(help="Replace the grid's input lengths, e.g. 128,512.")] = None,  # noqa: E501
    output_tokens: Annotated[str | None, typer.Option(help="Replace the grid's output lengths.")] = None,  # noqa: E501
    batch: Annotated[str | None, typer.Option(help="Replace the grid's batch sizes.")] = None,
    repetitions: Annotated[int, typer.Option(help="Measured runs per grid point.")] = 3,
    warmup: Annotated[int, typer.Option(help="Unmeasured runs before each point.")] = 1,
    gpu: Annotated[int, typer.Option(help="CUDA index of the GPU to run on and measure.")] = 0,
    device: Annotated[str | None, typer.Option(help="Catalog name of that GPU (default: from NVML's name).")] = None,  # noqa: E501
    dtype: Annotated[str, typer.Option(help="Weight and activation dtype (torch name).")] = "bfloat16",  # noqa: E501
    sample_hz: Annotated[float, typer.Option(help="Power sampling rate, for checking the energy counter.")] = DEFAULT_SAMPLE_HZ,  # noqa: E501
    settle: Annotated[float, typer.Option(help="Seconds the GPU must stay idle and steady before a point.")] = 5.0,  # noqa: E501
    settle_timeout: Annotated[float, typer.Option(help="Give up waiting for idle after this many seconds (the rows say so).")] = 120.0,  # noqa: E501
    idle_window: Annotated[float, typer.Option(help="Seconds of idle power measured before each point.")] = 3.0,  # noqa: E501
    rapl_root: Annotated[Path, typer.Option(help="Root of the powercap tree, for host CPU energy beside the GPU's.")] = DEFAULT_ROOT,  # noqa: E501
    trace: Annotated[Path | None, typer.Option(help="Also write the GPU's power over the whole run, sampled at --sample-hz (.csv or .parquet).")] = None,  # noqa: E501
) -> None:
    """Measure an LLM shape on this machine's GPU over a grid of token lengths and batches.

    Writes rows in the measurement schema, which `wattsched fit` reads."""
    from energy_models.catalog.specs import get_device, get_llm
    from energy_models.profiling.backends import BACKENDS, make_backend
    from energy_models.profiling.harness import (
        GRIDS,
        Grid,
        IdlePolicy,
        ProfileSettings,
        check_meta,
        check_resume,
        counter_agreement,
        profile,
        write_meta,
        write_runs,
    )
    from scheduler.report import render_measurements

    with user_errors():
        for name, value in (("--repetitions", repetitions), ("--sample-hz", sample_hz),
                            ("--settle", settle), ("--idle-window", idle_window)):
            if value <= 0:
                raise InputError("measure", name, f"{value:g} must be positive")
        if warmup < 0:
            raise InputError("measure", "--warmup", f"{warmup} cannot be negative")
        if backend not in BACKENDS:
            raise InputError("measure", "--backend", str(UnknownNameError(
                "profiling backend", backend, list(BACKENDS))))
        for option, path in (("--out", out), ("--trace", trace)):
            if path is None:
                continue
            if path.suffix not in {".parquet", ".csv"}:
                raise InputError("measure", option, f"{path}: name a .parquet or .csv file")
            if not path.parent.is_dir():
                raise InputError("measure", option, f"folder {path.parent} does not exist")
        spec = get_llm(llm)
        base = GRIDS[grid.value]
        chosen = Grid(_axis(input_tokens, "--input-tokens") or base.input_tokens,
                      _axis(output_tokens, "--output-tokens") or base.output_tokens,
                      _axis(batch, "--batch") or base.batches)

        report = survey(rapl_root)
        if not report.gpus:
            raise MeterUnavailableError(f"no GPU to measure: {report.gpu_problem}")
        chosen_gpus = [g for g in report.gpus if g.cuda_index == gpu]
        if not chosen_gpus:
            raise InputError("measure", "--gpu", f"CUDA sees {len(report.gpus)} GPU(s) here "
                             f"(0–{len(report.gpus) - 1}); got {gpu}")
        meter = chosen_gpus[0]
        if device is None:
            device = _catalog_name(meter.name)
            if device is None:
                raise InputError("measure", "--device", f"the catalog does not know GPU "
                                 f"{meter.name!r}; pass its catalog name with --device")
        else:
            device = get_device(device).name

        positions = max(chosen.input_tokens) + max(chosen.output_tokens)
        runner = make_backend(backend, spec, device=f"cuda:{gpu}", dtype=dtype,
                              max_positions=positions)
        settings = ProfileSettings(
            spec.name, device, repetitions=repetitions, warmup=warmup,
            idle=IdlePolicy(steady_s=settle, poll_s=min(0.5, settle / 5),
                            timeout_s=settle_timeout, idle_window_s=idle_window))
        counters = report.rapl_counters()
        meta = {
            "llm": spec.name, "device": device, "gpu": meter.name, "gpu_uuid": meter.uuid,
            "mig": meter.mig, "driver_version": report.driver_version, "backend": backend,
            "backend_version": runner.version(), "engine": runner.engine,
            "energy": "counter" if meter.energy_counter else f"sampled at {sample_hz:g} Hz",
            "power_reading": meter.power_kind, "power_limit_w": meter.power_limit_w(),
            "rapl_zones": [c.label for c in counters],
            "python": platform.python_version(), "platform": platform.platform(),
            "processor": platform.processor(),
            "grid": {"input_tokens": chosen.input_tokens, "output_tokens": chosen.output_tokens,
                     "batches": chosen.batches},
            "repetitions": repetitions, "warmup": warmup, "dtype": dtype,
            "settle_s": settle, "settle_timeout_s": settle_timeout,
            "idle_window_s": idle_window, "sample_hz": sample_hz,
        }
        # Checked before the slow model build, and before the old meta file is replaced.
        check_resume(out, settings, runner.engine)
        check_meta(out, meta, ("backend", "dtype", "gpu_uuid"))
        if meter.mig:
            err.print(f"note: {meter.mig}", markup=False, highlight=False, soft_wrap=True)
        with err.status(f"building {spec.name} on GPU {gpu} ({backend})"):
            runner.load()
        monitor = EnergyMonitor([meter], counters, sample_hz=sample_hz,
                                compare=True, sync=runner.synchronize)
        write_meta(out, meta)
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TimeElapsedColumn())
        tracer = PowerSampler([meter], sample_hz) if trace else None
        with Progress(*columns, console=err, transient=True) as bar:
            task = bar.add_task("measuring", total=None)

            def progress(done: int, total: int, label: str) -> None:
                bar.update(task, completed=done, total=total, description=f"measuring {label}")

            if tracer:
                tracer.start()
            try:
                result = profile(runner, chosen, settings, monitor, [meter], out,
                                 progress=progress)
            finally:
                monitor.close()
                if tracer:
                    tracer.stop()
        if tracer:
            if tracer.error:
                raise tracer.error
            samples = tracer.trace()
            write_runs(trace, samples.assign(time_s=samples["time_s"] - samples["time_s"].min()))
            err.print(f"power trace written to {trace}", highlight=False)
        render_measurements(wide_console(), result.table, out, resumed=len(result.resumed),
                            agreement=counter_agreement(result.table))
