"""The ``wattsched`` command line.

Module-level imports stay light (typer, rich): ``wattsched --help`` must not wait for pandas,
scikit-learn or the solvers; each command imports what it needs in its body.
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

from energy_models.io import write_atomic
from energy_models.regression.defaults import DEFAULT_FOLDS, DEFAULT_GATE_R2
from energy_models.stacks import DEFAULT_STACK
from scheduler.cli_measure import measure, meters
from scheduler.cli_predict import predict, rank_gpus
from scheduler.console import (
    err,
    results_only_on_stdout,
    user_errors,
    warnings_to_stderr,
    wide_console,
)
from scheduler.errors import InputError
from solvers import PLAN_SOLVERS

if TYPE_CHECKING:
    from energy_models.regression.fitting import FittedModels

app = typer.Typer(
    help="Plan energy-optimal LLM inference on heterogeneous GPU/CPU fleets.",
    no_args_is_help=True,
    add_completion=False,
)


SolverName = Enum("SolverName", {name: name for name in PLAN_SOLVERS}, type=str)


def _version(show: bool) -> None:
    if show:
        from importlib.metadata import version

        print(f"wattsched {version('wattsched')}")
        raise typer.Exit


@app.callback()
def _options(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")] = False,  # noqa: E501
) -> None:
    """Plan energy-optimal LLM inference on heterogeneous GPU/CPU fleets."""


class Format(str, Enum):
    table = "table"
    json = "json"
    yaml = "yaml"


def load_models(path: Path | None) -> FittedModels | None:
    from energy_models.regression.fitting import FittedModels

    return None if path is None else FittedModels.load(path)


def announcer(status):
    """A progress callback: the status line, and on a terminal a line per step. Piped or
    logged, stderr keeps only warnings and errors: one line on failure."""
    def progress(message: str) -> None:
        status.update(message)
        if err.is_terminal:
            err.print(message, highlight=False)

    return progress


def require_seconds(option: str, value: float, example: str) -> None:
    """A duration option must be a finite number of seconds > 0."""
    if not (math.isfinite(value) and value > 0):
        raise InputError("command line", option, f"got {value:g}; give a finite number of "
                                                 f"seconds > 0, e.g. {option} {example}")


def require_gap(value: float, example: str) -> None:
    """``--gap`` must be a relative gap in [0, 1)."""
    if not (math.isfinite(value) and 0 <= value < 1):
        raise InputError("command line", "--gap",
                         f"got {value:g}; give a relative gap in [0, 1), e.g. --gap {example}")


def write_option(path: Path, option: str, data: str | bytes) -> None:
    """Write an output file atomically; a path that cannot be written is the option's error."""
    try:
        write_atomic(path, data)
    except OSError as exc:
        raise InputError(str(path), option, f"cannot write: {exc.strerror}") from None


def write_document(path: Path, doc: dict) -> None:
    """``--out``: the document as YAML for .yaml/.yml, else JSON."""
    from scheduler.report import to_json, to_yaml

    write_option(path, "--out", to_yaml(doc) if path.suffix in {".yaml", ".yml"}
                 else to_json(doc))


def write_png(path: Path, figure, dpi: float | None = None) -> None:
    """``--plot``: a matplotlib figure as PNG."""
    import io

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi)
    write_option(path, "--plot", buffer.getvalue())


@app.command()
def plan(
    fleet: Annotated[Path | None, typer.Option(help="Fleet inventory YAML (default: the bundled example fleet).")] = None,  # noqa: E501
    workload: Annotated[Path | None, typer.Option(help="Workload YAML (default: bundled seeded chat and code traffic).")] = None,  # noqa: E501
    out: Annotated[Path | None, typer.Option(help="Also write the plan here, atomically (JSON, or YAML for .yaml/.yml).")] = None,  # noqa: E501
    fmt: Annotated[Format, typer.Option("--format", help="What to print on stdout.")] = Format.table,  # noqa: E501
    solver: Annotated[SolverName, typer.Option(help="Backend: HiGHS or CBC (MILP), or CP-SAT (integer scaling, see solvers/cpsat.py).")] = SolverName.highs,  # noqa: E501
    time_limit: Annotated[float, typer.Option(help="Solver time limit in seconds; the best plan found is kept with its gap.")] = 30.0,  # noqa: E501
    gap: Annotated[float, typer.Option(help="Stop once the plan is proven within this relative gap of the optimum (0.005 = 0.5 %); the gap reached is reported.")] = 0.005,  # noqa: E501
    baselines: Annotated[bool, typer.Option(help="Compare with the rules operators use today.")] = True,  # noqa: E501
    models: Annotated[Path | None, typer.Option(help="Fitted regressions from `wattsched fit`; they price the pairs they cover before the analytical model.")] = None,  # noqa: E501
    replicas: Annotated[Path | None, typer.Option(help="Replicas you run today (YAML); keeps them and optimises only the routing, exactly.")] = None,  # noqa: E501
    replay: Annotated[bool, typer.Option("--replay/--no-replay", help="Replay the optimised plan on the workload's arrivals, request by request, and report its energy and SLOs beside the plan's (about a second on the bundled default).")] = True,  # noqa: E501
    verify: Annotated[bool, typer.Option("--verify", help="Replay the plan and, where a request kind misses its SLO attainment target (workload slo_attainment, default 0.99), tighten and solve again until it meets it (about a minute on the bundled default).")] = False,  # noqa: E501
) -> None:
    """Plan replicas and routing with the least energy, and compare with the baselines."""
    from scheduler.inventory import load_fleet, load_replicas
    from scheduler.pipeline import run_plan
    from scheduler.report import plan_document, render_tables, to_json, to_yaml, verify_document
    from workloads.spec import load_workload

    with user_errors(), warnings_to_stderr():
        require_seconds("--time-limit", time_limit, "30")
        require_gap(gap, "0.005")
        with err.status("loading fleet and workload") as status:
            fleet_spec = load_fleet(fleet)
            work = load_workload(workload)
            fitted = load_models(models)
            current = None if replicas is None else load_replicas(replicas, fleet_spec)

            progress = announcer(status)
            outcome = run_plan(fleet_spec, work, models=fitted, solver=solver.value,
                               time_limit_s=time_limit, gap_rel=gap, baselines=baselines,
                               replicas=current, progress=progress)
            replayed = verified = None
            if verify:
                from scheduler.replay.verify import verify_plan

                verification = verify_plan(outcome, work, fleet_spec, progress=progress)
                outcome = dataclasses.replace(outcome, plan=verification.plan)
                replayed, verified = verification.replayed, verify_document(verification)
            elif replay:
                from scheduler.replay.compare import replay_plan

                progress("replaying the plan on the workload's arrivals")
                _, replayed = replay_plan(outcome.built, outcome.plan, work.requests,
                                          fleet_spec)
        doc = plan_document(outcome.plan, outcome.baselines, fleet=fleet_spec.name,
                            workload=work.name, sources=outcome.sources(), replayed=replayed,
                            verified=verified)
        if out is not None:
            # The saved plan leaves out wall-clock timing so equal inputs give equal bytes.
            write_document(out, {k: v for k, v in doc.items() if k != "solve_time_s"})
        if fmt is Format.json:
            sys.stdout.write(to_json(doc))
        elif fmt is Format.yaml:
            sys.stdout.write(to_yaml(doc))
        else:
            render_tables(wide_console(), outcome.plan, outcome.baselines, outcome.sources(),
                          replayed, verified)
            if out is not None:
                err.print(f"plan written to {out}", highlight=False)


class ReplayFormat(str, Enum):
    table = "table"
    json = "json"


@app.command()
def replay(
    fleet: Annotated[Path | None, typer.Option(help="Fleet inventory YAML (default: the bundled example fleet).")] = None,  # noqa: E501
    workload: Annotated[Path | None, typer.Option(help="Workload YAML (default: bundled seeded chat and code traffic).")] = None,  # noqa: E501
    fmt: Annotated[ReplayFormat, typer.Option("--format", help="What to print on stdout.")] = ReplayFormat.table,  # noqa: E501
    time_limit: Annotated[float, typer.Option(help="Solver time limit in seconds for the plan.")] = 30.0,  # noqa: E501
    models: Annotated[Path | None, typer.Option(help="Fitted regressions from `wattsched fit`.")] = None,  # noqa: E501
    report: Annotated[Path | None, typer.Option(help="Write index.html (one self-contained page) and the PNGs behind it to this folder.")] = None,  # noqa: E501
    saved: Annotated[Path | None, typer.Option("--plan", help="Replay this saved plan (from `wattsched plan --out`) as the optimised one instead of planning it.")] = None,  # noqa: E501
    seed: Annotated[int | None, typer.Option(min=0, help="Draw the workload's synthetic traffic with this seed instead of its own: a plan checked on arrivals it was not planned on.")] = None,  # noqa: E501
) -> None:
    """Plan (or take a saved plan), then replay it and every baseline on the workload's
    arrivals, request by request (continuous batching, chunked prefill, KV cache): energy
    and SLOs as served."""
    from scheduler.inventory import load_fleet
    from scheduler.pipeline import run_plan
    from scheduler.replay.compare import replay_plans
    from scheduler.report import render_replay, to_json
    from workloads.spec import load_workload

    with user_errors(), warnings_to_stderr():
        require_seconds("--time-limit", time_limit, "30")
        with err.status("loading fleet and workload") as status:
            fleet_spec = load_fleet(fleet)
            work = load_workload(workload, seed)
            fitted = load_models(models)

            progress = announcer(status)
            outcome = run_plan(fleet_spec, work, models=fitted, time_limit_s=time_limit,
                               progress=progress)
            optimised = None
            if saved is not None:
                from scheduler.saved_plan import load_saved_plan

                optimised = load_saved_plan(saved, outcome.built)
            compared, replays = replay_plans(outcome, work.requests, fleet_spec, progress,
                                             optimised)
            doc = {"fleet": fleet_spec.name, "workload": work.name, **compared}
            if report is not None:
                from scheduler.replay.report import write_report

                progress(f"writing the report to {report}")
                write_report(report, doc, replays, outcome.built, work.requests)
        if fmt is ReplayFormat.json:
            sys.stdout.write(to_json(doc))
        else:
            render_replay(wide_console(), doc)


class BatchSolver(str, Enum):
    milp = "milp"
    cpsat = "cpsat"


@app.command()
def schedule(
    jobs: Annotated[Path | None, typer.Argument(help="Jobs file (YAML or CSV; default: the bundled nightly example).", show_default=False)] = None,  # noqa: E501
    fleet: Annotated[Path | None, typer.Option(help="Fleet inventory YAML (default: the bundled example fleet).")] = None,  # noqa: E501
    solver: Annotated[BatchSolver, typer.Option(help="milp (HiGHS, time-indexed) or cpsat (OR-Tools CP-SAT with interval variables; small problems).")] = BatchSolver.milp,  # noqa: E501
    slot: Annotated[float, typer.Option(help="Slot length in seconds: replicas switch on and off at slot boundaries.")] = 300.0,  # noqa: E501
    time_limit: Annotated[float, typer.Option(help="Solver time limit in seconds; the best schedule found is kept with its gap.")] = 60.0,  # noqa: E501
    gap: Annotated[float, typer.Option(help="Stop once the schedule is proven within this relative gap (0.02 = 2 %).")] = 0.02,  # noqa: E501
    out: Annotated[Path | None, typer.Option(help="Also write the schedule here, atomically (JSON, or YAML for .yaml/.yml).")] = None,  # noqa: E501
    fmt: Annotated[Format, typer.Option("--format", help="What to print on stdout.")] = Format.table,  # noqa: E501
    plot: Annotated[Path | None, typer.Option(help="Write a PNG: replicas on over time and each job's span against its deadline.")] = None,  # noqa: E501
) -> None:
    """Schedule offline batch jobs with deadlines for the least energy, against today's rules.

    Decides which replicas are on in which slots (switching one on costs its model-load
    time at idle power) and which share of each job runs where and when, under pool
    inventory, memory and rack power caps at every slot."""
    from scheduler.batch import run_schedule, schedule_document
    from scheduler.inventory import load_fleet
    from scheduler.report import render_schedule, to_json, to_yaml
    from workloads.jobs import load_jobs

    with user_errors(), warnings_to_stderr():
        require_seconds("--slot", slot, "300")
        require_seconds("--time-limit", time_limit, "60")
        require_gap(gap, "0.02")
        with err.status("loading fleet and jobs") as status:
            fleet_spec = load_fleet(fleet)
            job_spec = load_jobs(jobs)
            outcome = run_schedule(fleet_spec, job_spec, solver=solver.value, slot_s=slot,
                                   time_limit_s=time_limit, gap_rel=gap,
                                   progress=status.update)
        doc = schedule_document(outcome, fleet=fleet_spec.name)
        if out is not None:
            write_document(out, schedule_document(outcome, fleet=fleet_spec.name, timing=False))
        if plot is not None:
            from scheduler.schedule_plot import gantt

            write_png(plot, gantt(outcome.built, outcome.schedule,
                                  f"{job_spec.name} on {fleet_spec.name}: least-energy "
                                  f"schedule"), dpi=110)
        if fmt is Format.json:
            sys.stdout.write(to_json(doc))
        elif fmt is Format.yaml:
            sys.stdout.write(to_yaml(doc))
        else:
            render_schedule(wide_console(), doc)
        for path, what in ((out, "schedule"), (plot, "plot")):
            if path is not None:
                err.print(f"{what} written to {path}", highlight=False)


class FitFormat(str, Enum):
    table = "table"
    json = "json"


@app.command()
def fit(
    data: Annotated[list[Path], typer.Argument(help="Measurements: schema tables (.csv/.parquet), Wilkins et al. CSVs, ML.ENERGY files or its data folder.", show_default=False)],  # noqa: E501
    out: Annotated[Path | None, typer.Option(help="Write the fitted models here (JSON, atomically), for `plan --models`.")] = None,  # noqa: E501
    gate: Annotated[float, typer.Option(help="Refuse a fit whose cross-validated R² is below this.")] = DEFAULT_GATE_R2,  # noqa: E501
    folds: Annotated[int, typer.Option(help="Grouped K-fold cross-validation folds.")] = DEFAULT_FOLDS,  # noqa: E501
    seed: Annotated[int, typer.Option(help="Seed of the fold assignment.")] = 0,
    fmt: Annotated[FitFormat, typer.Option("--format", help="What to print on stdout.")] = FitFormat.table,  # noqa: E501
    show_dropped: Annotated[bool, typer.Option(help="List every left-out row, not the first 10.")] = False,  # noqa: E501
) -> None:
    """Fit energy and runtime regressions per (llm, device), the form chosen by grouped CV.

    Fits below the R² gate are refused and the planner falls back for their pairs."""
    from energy_models.errors import MeasurementError
    from energy_models.measurements.loaders import load_all
    from energy_models.regression.fitting import fit_all
    from scheduler.report import render_fit_table

    with user_errors():
        if not 0 < gate <= 1:
            raise InputError("fit", "--gate", f"{gate:g} is not in (0, 1]; e.g. --gate 0.96")
        if folds < 2:
            raise InputError("fit", "--folds", f"{folds} folds cannot cross-validate; use >= 2")
        with err.status("loading measurements") as status:
            measurements = load_all(data)
            if measurements.dropped:
                err.print(f"left out {len(measurements.dropped)} row(s):", highlight=False)
                shown = measurements.dropped if show_dropped else measurements.dropped[:10]
                for line in shown:
                    err.print(f"  {line}", highlight=False, soft_wrap=True)
                if len(shown) < len(measurements.dropped):
                    err.print(f"  ... and {len(measurements.dropped) - len(shown)} more "
                              f"(--show-dropped lists them)", highlight=False)
            if measurements.table.empty:
                raise MeasurementError(f"{', '.join(map(str, data))}: no usable rows")
            models = fit_all(measurements, gate=gate, folds=folds, seed=seed,
                             progress=status.update)
        if out is not None:
            write_option(out, "--out", models.to_json())
        rows = models.summary_rows()
        if fmt is FitFormat.json:
            sys.stdout.write(json.dumps(rows, indent=1, allow_nan=False) + "\n")
        else:
            render_fit_table(wide_console(), rows, folds=folds, gate=gate)
        if out is not None:
            err.print(f"models written to {out}", highlight=False)


@app.command()
def sweetspot(
    llm: Annotated[str, typer.Option(help="LLM (catalog name or alias).", show_default=False)],
    device: Annotated[str, typer.Option(help="GPU or CPU (catalog name or alias).", show_default=False)],  # noqa: E501
    input_tokens: Annotated[float, typer.Option(help="Prompt length m.", show_default=False)],
    batch: Annotated[float, typer.Option(help="Concurrent requests per replica.")] = 1,
    tp: Annotated[int, typer.Option(help="Devices per replica (tensor parallel).")] = 1,
    models: Annotated[Path | None, typer.Option(help="Fitted regressions from `wattsched fit`; otherwise the analytical model.")] = None,  # noqa: E501
    engine: Annotated[str, typer.Option(help="Serving-stack family of the analytical model: vllm, vllm-0.5 or hf.")] = DEFAULT_STACK,  # noqa: E501
    plot: Annotated[Path | None, typer.Option(help="Write a PNG heat map of energy per output token over (m, n).")] = None,  # noqa: E501
    fmt: Annotated[FitFormat, typer.Option("--format", help="What to print on stdout.")] = FitFormat.table,  # noqa: E501
) -> None:
    """The output length with the least energy per output token for one prompt length."""
    from energy_models.analytical.sweetspot import heat_map, sweet_spot
    from energy_models.catalog.specs import get_device, get_llm
    from energy_models.cost import default_chain
    from energy_models.memory import serving_memory
    from scheduler.report import render_sweet_spot

    with user_errors(), warnings_to_stderr():
        if not (math.isfinite(input_tokens) and input_tokens > 0 and math.isfinite(batch)
                and batch > 0 and tp >= 1):
            raise InputError("sweetspot", "--input-tokens/--batch/--tp",
                             "must be positive; e.g. --input-tokens 512 --batch 1 --tp 1")
        # The weights and one sequence of the prompt and a first output token must fit,
        # whatever the searched output lengths; beyond that vLLM preempts, it does not refuse.
        memory = serving_memory(get_llm(llm), get_device(device), tp, math.ceil(batch),
                                input_tokens + 1)
        if memory.problem is not None:
            raise InputError("command line", "--llm/--device",
                             f"{memory.problem}; raise --tp or pick a larger device")
        fitted = load_models(models)
        # The predictor's tree corrections are steps in output length; a sweet spot is a
        # property of the curve's shape, so it comes from fits or the analytical model.
        chain = default_chain(engine, fitted, predict=False)
        spot = sweet_spot(chain, llm, device, input_tokens, batch=batch, tp=tp, models=fitted,
                          engine=engine)
        if plot is not None:
            write_png(plot, heat_map(chain, llm, device, batch=batch, tp=tp, models=fitted,
                                     engine=engine, mark_input_tokens=input_tokens))
        if fmt is FitFormat.json:
            sys.stdout.write(json.dumps(spot.summary(), indent=1, allow_nan=False) + "\n")
        else:
            render_sweet_spot(wide_console(), spot)
        if plot is not None:
            err.print(f"heat map written to {plot}", highlight=False)


class CatalogKind(str, Enum):
    gpus = "gpus"
    cpus = "cpus"
    llms = "llms"


class CatalogFormat(str, Enum):
    table = "table"
    tsv = "tsv"
    csv = "csv"
    json = "json"


@app.command()
def catalog(
    kind: Annotated[CatalogKind, typer.Argument(help="Which catalog to list.")],
    fmt: Annotated[CatalogFormat | None, typer.Option("--format", help="What to print on stdout (default: table on a terminal, tsv when piped).", show_default=False)] = None,  # noqa: E501
) -> None:
    """List the catalogued GPUs, CPUs or LLMs with their key numbers."""
    from energy_models.catalog.specs import catalog_rows
    from scheduler.report import render_rows, rows_as_text

    rows = catalog_rows(kind.value)
    if fmt is None:
        fmt = CatalogFormat.table if sys.stdout.isatty() else CatalogFormat.tsv
    if fmt is CatalogFormat.table:
        render_rows(Console(), rows, f"{kind.value} catalog")
    else:
        sys.stdout.write(rows_as_text(rows, fmt.value))


app.command()(meters)
app.command()(measure)
app.command()(predict)
app.command("rank-gpus")(rank_gpus)


def main() -> None:
    results_only_on_stdout()
    app()
