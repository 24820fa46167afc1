"""The ``wattsched`` command line."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from energy_models.catalog import devices, llms
from energy_models.errors import EnergyModelError
from scheduler.errors import InputError
from scheduler.inventory import load_fleet
from scheduler.io import write_atomic
from scheduler.pipeline import run_plan
from scheduler.report import plan_document, render_tables, to_json, to_yaml
from solvers.errors import InfeasibleError, PlanRejected, SolverError
from workloads.errors import WorkloadError
from workloads.spec import load_workload

app = typer.Typer(
    help="Plan energy-optimal LLM inference on heterogeneous GPU/CPU fleets.",
    no_args_is_help=True,
    add_completion=False,
)
err = Console(stderr=True)


class Format(str, Enum):
    table = "table"
    json = "json"
    yaml = "yaml"


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """Bad input and infeasible fleets: one line on stderr, exit code 2."""
    try:
        yield
    except PlanRejected as exc:
        err.print(f"[red]internal error[/red]: {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None
    except InfeasibleError as exc:
        err.print(f"[red]error[/red]: infeasible: {exc.reasons[0]}"
                  + (f" (and {len(exc.reasons) - 1} more)" if len(exc.reasons) > 1 else ""),
                  highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    except (InputError, WorkloadError, EnergyModelError, SolverError) as exc:
        err.print(f"[red]error[/red]: {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None


@app.command()
def plan(
    fleet: Annotated[Path | None, typer.Option(help="Fleet inventory YAML (default: the bundled example fleet).")] = None,  # noqa: E501
    workload: Annotated[Path | None, typer.Option(help="Workload YAML (default: bundled seeded chat and code traffic).")] = None,  # noqa: E501
    out: Annotated[Path | None, typer.Option(help="Also write the plan here, atomically (JSON, or YAML for .yaml/.yml).")] = None,  # noqa: E501
    fmt: Annotated[Format, typer.Option("--format", help="What to print on stdout.")] = Format.table,  # noqa: E501
    solver: Annotated[str, typer.Option(help="MILP backend: highs (default) or cbc.")] = "highs",
    time_limit: Annotated[float, typer.Option(help="Solver time limit in seconds; the best plan found is kept with its gap.")] = 30.0,  # noqa: E501
    baselines: Annotated[bool, typer.Option(help="Compare with the rules operators use today.")] = True,  # noqa: E501
) -> None:
    """Plan replicas and routing with the least energy, and compare with the baselines."""
    with user_errors():
        with err.status("loading fleet and workload") as status:
            fleet_spec = load_fleet(fleet)
            work = load_workload(workload)

            def progress(message: str) -> None:
                status.update(message)
                err.log(message, highlight=False)

            outcome = run_plan(fleet_spec, work, solver=solver, time_limit_s=time_limit,
                               baselines=baselines, progress=progress)
        doc = plan_document(outcome.plan, outcome.baselines, fleet=fleet_spec.name,
                            workload=work.name, sources=outcome.sources())
        if out is not None:
            # The saved plan leaves out wall-clock timing so equal inputs give equal bytes.
            saved = {k: v for k, v in doc.items() if k != "solve_time_s"}
            text = to_yaml(saved) if out.suffix in {".yaml", ".yml"} else to_json(saved)
            try:
                write_atomic(out, text)
            except OSError as exc:
                raise InputError(str(out), "--out", f"cannot write: {exc.strerror}") from None
        if fmt is Format.json:
            sys.stdout.write(to_json(doc))
        elif fmt is Format.yaml:
            sys.stdout.write(to_yaml(doc))
        else:
            render_tables(Console(), outcome.plan, outcome.baselines, outcome.sources())
            if out is not None:
                err.print(f"plan written to {out}", highlight=False)


class CatalogKind(str, Enum):
    gpus = "gpus"
    cpus = "cpus"
    llms = "llms"


@app.command()
def catalog(
    kind: Annotated[CatalogKind, typer.Argument(help="Which catalog to list.")],
) -> None:
    """List the catalogued GPUs, CPUs or LLMs with their key numbers."""
    from rich.table import Table

    table = Table(title=f"{kind.value} catalog")
    if kind is CatalogKind.llms:
        for col in ("name", "params B", "active B", "layers", "kv heads", "context", "quality",
                    "quality source"):
            table.add_column(col, no_wrap=col == "name")
        for m in llms():
            table.add_row(m.name, f"{m.params_b:g}", f"{m.active_params_b:g}", str(m.layers),
                          str(m.kv_heads), str(m.max_context), f"{m.quality:g}", m.quality_source)
    else:
        wanted = "gpu" if kind is CatalogKind.gpus else "cpu"
        for col in ("name", "memory GB", "bandwidth GB/s", "FP16 TFLOP/s", "TDP W", "idle W",
                    "architecture", "year"):
            table.add_column(col, no_wrap=col == "name")
        for d in devices():
            if d.kind == wanted:
                table.add_row(d.name, f"{d.memory_gb:g}", f"{d.bandwidth_gb_s:g}",
                              f"{d.fp16_tflops:g}", f"{d.tdp_w:g}", f"{d.idle_w:g}",
                              d.architecture, str(d.year))
    Console().print(table)


def main() -> None:
    app()
