"""Plans as a dict (for JSON and YAML) and as rich tables (for people)."""

from __future__ import annotations

import csv
import io
import json
import math
from typing import TYPE_CHECKING, Any

import yaml
from rich import box
from rich.console import Console
from rich.table import Table

from energy_models.stacks import describe
from scheduler.plan import Plan
from solvers.routing import SOLVER_NAME as ROUTING_SOLVER

if TYPE_CHECKING:
    from pathlib import Path

    import pandas as pd

    from energy_models.analytical.sweetspot import SweetSpot


def _num(value: float | None, digits: int = 6) -> float | None:
    """Round for stable, readable output; None for missing or non-finite values."""
    if value is None or not math.isfinite(value):
        return None
    return float(f"{value:.{digits}g}")


ENERGY_DIGITS = 10
"""Significant digits of energies in documents: plans a few joules apart stay apart."""


def plan_summary(plan: Plan) -> dict[str, Any]:
    """The headline numbers every plan has, optimised or baseline."""
    return {
        "energy_j": _num(plan.energy_j, ENERGY_DIGITS),
        "active_energy_j": _num(plan.energy_active_j, ENERGY_DIGITS),
        "base_energy_j": _num(plan.energy_base_j, ENERGY_DIGITS),
        "j_per_request": _num(plan.j_per_request),
        "mean_power_w": _num(plan.mean_power_w),
        "peak_power_w": _num(plan.peak_power_w),
        "devices_on": plan.devices_on,
        "mean_ttft_s": _num(plan.mean_ttft_s),
        "mean_e2e_s": _num(plan.mean_e2e_s),
        "slo_attainment": _num(plan.slo_attainment),
        "cost_usd": _num(plan.cost_usd),
    }


def plan_document(
    plan: Plan,
    baselines: dict[str, Plan | str],
    *,
    fleet: str,
    workload: str,
    sources: list[dict[str, str]],
    replayed: dict[str, float | int] | None = None,
    verified: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One JSON-able object: the optimised plan, its provenance, every baseline and, where
    given, the optimised plan's replay (``scheduler.replay.summary.replay_summary``) and how
    ``plan --verify`` got to it (``verify_document``)."""
    sol = plan.solution
    doc: dict[str, Any] = {
        "fleet": fleet,
        "workload": workload,
        "horizon_s": plan.horizon_s,
        "requests": plan.requests,
        **plan_summary(plan),
        "status": sol.status,
        "solver": sol.solver,
        "gap": _num(sol.gap),
        "bound_j": _num(sol.bound_j),
        "solve_time_s": _num(sol.solve_time_s, 4),
        "replicas": [
            {k: (_num(v) if isinstance(v, float) else v) for k, v in row.items()}
            for row in plan.replicas.to_dict("records")
        ],
        "routing": [
            {"class_id": r["class_id"], "deployment": r["deployment"],
             "requests": _num(r["requests"])}
            for r in plan.routing.to_dict("records")
        ],
        "sources": sources,
        "baselines": {},
    }
    if replayed is not None:
        doc["replay"] = {k: _num(v) if isinstance(v, float) else v for k, v in replayed.items()}
    if verified is not None:
        doc["verify"] = verified
    for name, other in baselines.items():
        if isinstance(other, str):
            doc["baselines"][name] = {"status": "infeasible", "reason": other,
                                      "energy_j": None, "slo_attainment": None}
            continue
        summary = plan_summary(other)
        summary["saving_pct"] = _num(plan.saving_pct(other), 4)
        summary["status"] = other.solution.status
        doc["baselines"][name] = summary
    return doc


def to_json(doc: dict[str, Any]) -> str:
    return json.dumps(doc, indent=2, sort_keys=False) + "\n"


def to_yaml(doc: dict[str, Any]) -> str:
    return yaml.safe_dump(doc, sort_keys=False)


def kwh_decimals(energies_j: list[float], *, least: int = 2, most: int = 6) -> int:
    """Decimals of kWh that show every two different energies as different numbers."""
    distinct = sorted(set(energies_j))
    for decimals in range(least, most + 1):
        shown = {f"{e / 3.6e6:.{decimals}f}" for e in distinct}
        if len(shown) == len(distinct):
            return decimals
    return most


def verify_document(verification) -> dict[str, Any]:
    """``plan --verify``'s rounds (``scheduler.replay.verify.Verification``) for a document."""
    return {
        "met": verification.met,
        "reason": verification.reason,
        "re_solves": verification.solves,
        "rounds": [{k: ({kind: _num(x) for kind, x in v.items()} if isinstance(v, dict)
                        else _num(v) if isinstance(v, float) else v) for k, v in r.items()}
                   for r in verification.rounds],
    }


def render_tables(console: Console, plan: Plan, baselines: dict[str, Plan | str],
                  sources: list[dict[str, str]],
                  replayed: dict[str, float | int] | None = None,
                  verified: dict[str, Any] | None = None) -> None:
    """The plan, the energy comparison, the replay and verification rounds where given, and
    the cost sources, for a terminal."""
    sol = plan.solution
    gap = "n/a" if sol.gap is None else f"{sol.gap:.2%}"
    what = ("Energy-optimal routing on the replicas given" if sol.solver == ROUTING_SOLVER
            else "Energy-optimal plan")
    console.print(
        f"[bold]{what}[/bold]: {plan.requests:,} requests over "
        f"{plan.horizon_s / 3600:.2f} h, status {sol.status}, solver {sol.solver}, "
        f"solve {sol.solve_time_s:.2f} s, gap {gap}"
    )
    replicas = Table(title="Replicas")
    for col in ("pool", "device", "llm", "tp", "max batch", "replicas", "devices"):
        replicas.add_column(col, justify="right" if col in {"tp", "max batch", "replicas",
                                                            "devices"} else "left")
    for r in plan.replicas.itertuples():
        replicas.add_row(r.pool, r.device, r.llm, str(r.tp), str(r.batch), str(r.replicas),
                         str(r.devices))
    console.print(replicas)

    compare = Table(title="Energy against today's rules (same workload, same checker)")
    for col in ("plan", "energy", "base share", "J/request", "mean power", "devices on",
                "SLO met", "saving"):
        compare.add_column(col, justify="left" if col == "plan" else "right")

    plans = [plan, *(p for p in baselines.values() if not isinstance(p, str))]
    decimals = kwh_decimals([p.energy_j for p in plans])

    def row(name: str, p: Plan, saving: str) -> None:
        compare.add_row(name, f"{p.energy_j / 3.6e6:,.{decimals}f} kWh",
                        f"{p.energy_base_j / p.energy_j:.0%}",
                        f"{p.j_per_request:,.1f}", f"{p.mean_power_w / 1e3:,.2f} kW",
                        str(p.devices_on), f"{p.slo_attainment:.1%}", saving)

    row("[bold]optimised[/bold]", plan, "")
    for name, other in baselines.items():
        if isinstance(other, str):
            compare.add_row(name, "infeasible", "", "", "", "", "", "see below")
        else:
            row(name, other, f"{plan.saving_pct(other):.1f}%")
    if verified is not None:
        compare.caption = ("The verified plan's planned energy counts each replica at the base "
                           "power of a loaded one; its headroom leaves them lightly loaded: "
                           "see its replay below, and `wattsched replay` for every plan "
                           "as replayed.")
    console.print(compare)
    for other in baselines.values():
        if isinstance(other, str):
            console.print(other, highlight=False)
    if replayed is not None:
        side = Table(title="The optimised plan as planned and as replayed on the workload's "
                           "arrivals (wattsched replay compares every plan)")
        for col in ("", "energy", "SLO met", "TTFT p99", "ITL p99", "E2E p99", "peak power"):
            side.add_column(col, justify="left" if col == "" else "right")
        side.add_row("planned", f"{plan.energy_j / 3.6e6:,.{decimals}f} kWh",
                     f"{plan.slo_attainment:.1%}", "", "", "",
                     f"{plan.peak_power_w / 1e3:,.2f} kW")
        side.add_row("replayed", f"{replayed['replayed_energy_j'] / 3.6e6:,.{decimals}f} kWh",
                     f"{replayed['slo_attainment']:.1%}", f"{replayed['ttft_p99_s']:.2f} s",
                     f"{replayed['itl_p99_s'] * 1e3:.0f} ms", f"{replayed['e2e_p99_s']:.1f} s",
                     f"{replayed['peak_power_w'] / 1e3:,.2f} kW")
        if verified is None and replayed["slo_attainment"] < plan.slo_attainment - 0.01:
            side.caption = ("As served, requests queue and stall where the plan assumed "
                            "none: `wattsched plan --verify` solves again until every kind "
                            "meets its SLO target in replay.")
        console.print(side)
    if verified is not None:
        _render_verify(console, verified)

    table = Table(title="Cost sources per (llm, device): which priced which deployments, and why "
                        "a fit was not used")
    columns = ["llm", "device", "source", "stack", "deployments"]
    if any(s["note"] for s in sources):
        columns.append("note")
    for col in columns:
        table.add_column("why not fitted" if col == "note" else col, overflow="fold")
    for s in sources:
        table.add_row(*(s[col] for col in columns))
    table.caption = "; ".join(f"{engine}: {describe(engine)}"
                              for engine in sorted({s["stack"] for s in sources}))
    console.print(table)


def _render_verify(console: Console, verified: dict[str, Any]) -> None:
    rounds = verified["rounds"]
    kinds = list(rounds[0]["attainment"])
    table = Table(title="plan --verify: each round replayed, then tightened where a kind missed "
                        "its SLO target")
    for col in ("round", "planned", "replayed", *(f"{k} SLO met" for k in kinds),
                *(f"{k} headroom" for k in kinds), "pairs excluded"):
        table.add_column(col, justify="right")
    decimals = kwh_decimals([r["replayed_energy_j"] for r in rounds])
    for r in rounds:
        table.add_row(str(r["round"]), f"{r['planned_energy_j'] / 3.6e6:,.{decimals}f} kWh",
                      f"{r['replayed_energy_j'] / 3.6e6:,.{decimals}f} kWh",
                      *(f"{r['attainment'][k]:.1%}" for k in kinds),
                      *(f"x{r['headroom'][k]:.3g}" for k in kinds), str(r["pairs_excluded"]))
    table.caption = (f"targets met after {verified['re_solves']} re-solves; the plan above is "
                     f"the one that met them with the least replayed energy"
                     if verified["met"] else verified["reason"])
    console.print(table)


def rows_as_text(rows: list[dict[str, Any]], fmt: str) -> str:
    """Records as ``csv``, ``tsv`` (every cell whole, for pipes and spreadsheets) or ``json``."""
    if fmt == "json":
        return json.dumps(rows, indent=1) + "\n"
    buffer = io.StringIO()
    columns = list(rows[0]) if rows else []
    writer = csv.DictWriter(buffer, columns, delimiter="\t" if fmt == "tsv" else ",",
                            lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def render_rows(console: Console, rows: list[dict[str, Any]], title: str) -> None:
    """Records as a rich table for a terminal; numbers right-aligned, names never wrapped."""
    table = Table(title=title)
    columns = list(rows[0]) if rows else []
    for col in columns:
        numeric = all(isinstance(r[col], (int, float)) for r in rows)
        table.add_column(col, justify="right" if numeric else "left", no_wrap=col == "name")
    for r in rows:
        table.add_row(*(f"{r[c]:g}" if isinstance(r[c], float) else str(r[c]) for c in columns))
    console.print(table)


def render_fit_table(console: Console, rows: list[dict[str, Any]], *, folds: int,
                     gate: float) -> None:
    """Fitted regressions per pair and target, refusals numbered with their reasons below."""
    engines = sorted({r["engine"] for r in rows})
    table = Table(title=f"Fitted regressions ({folds}-fold grouped CV; gate: CV R² >= {gate:g})",
                  box=box.SIMPLE_HEAD)
    numeric = {"tp", "R²", "CV R²", "CV MAPE", "rows"}
    for col in ("llm", "device", "tp", "target", "form", "R²", "CV R²", "CV MAPE", "rows",
                "refused"):
        table.add_column(col, justify="right" if col in numeric else "left")
    reasons = []
    for r in rows:
        refused = "no"
        if r["refused"]:
            reasons.append(f"({len(reasons) + 1}) {r['llm']} on {r['device']} tp{r['tp']} "
                           f"{r['target']}: {r['reason']}")
            refused = f"[red]yes ({len(reasons)})[/red]"
        table.add_row(
            r["llm"], r["device"] + (f" [{r['engine']}]" if len(engines) > 1 else ""),
            str(r["tp"]), r["target"].removesuffix("_j").removesuffix("_s"), r["form"] or "-",
            "-" if r["r2"] is None else f"{r['r2']:.4f}",
            "-" if r["cv_r2"] is None else f"{r['cv_r2']:.4f}",
            "-" if r["cv_mape"] is None else f"{r['cv_mape']:.1f}%", str(r["rows"]), refused)
    console.print(table)
    for line in reasons:
        console.print(line, highlight=False, soft_wrap=True)
    if len(engines) == 1 and engines[0]:
        console.print(f"engine: {engines[0]}", highlight=False)


def render_sweet_spot(console: Console, spot: SweetSpot) -> None:
    """The sweet spot in words, and energy per output token at powers of two around it."""
    console.print(
        f"[bold]Sweet spot[/bold] of {spot.llm} on {spot.device} (tp {spot.tp}, batch "
        f"{spot.batch:g}) for {spot.input_tokens:g} input tokens: "
        f"[bold]{spot.output_tokens:,.0f} output tokens[/bold], "
        f"{spot.energy_per_token_j:.4g} J per output token ({spot.source})", highlight=False)
    if spot.closed_form_tokens is not None:
        console.print(f"SweetSpot closed form sqrt((c0 + c1 m + c2 m²)/c5): "
                      f"{spot.closed_form_tokens:,.1f} output tokens", highlight=False)
    console.print(f"Searched {spot.searched[0]:g}-{spot.searched[1]:g} output tokens; energy "
                  f"per token varies {spot.spread:.1f}x across them.", highlight=False)
    if spot.at_edge:
        console.print("[yellow]The minimum is at the edge of the searched range; the true "
                      "sweet spot may lie beyond it.[/yellow]")
    table = Table(title="Energy per output token by output length")
    for col in ("output tokens", "J / output token", "vs sweet spot"):
        table.add_column(col, justify="right")
    lengths = sorted({*(2.0 ** k for k in range(20)), spot.output_tokens})
    for n, value in spot.curve_at(lengths):
        table.add_row(f"{n:,.0f}", f"{value:.4g}", f"{value / spot.energy_per_token_j:.2f}x")
    console.print(table)


def render_measurements(console: Console, table: pd.DataFrame, out: Path, *, resumed: int,
                        agreement: pd.DataFrame) -> None:
    """What ``measure`` wrote: J/token, runtime and power per grid point, and meter agreement."""
    from energy_models.profiling.harness import per_point_summary

    if table.empty:
        console.print("nothing measured")
        return
    view = Table(title=f"{table['llm'].iloc[0]} on {table['device'].iloc[0]}: "
                       f"{len(table)} rows in {out}", box=box.SIMPLE_HEAD)
    for col in ("batch", "input", "output", "J/token", "runtime s", "power W", "idle W",
                "settled"):
        view.add_column(col, justify="left" if col == "settled" else "right")
    for row in per_point_summary(table).itertuples():
        view.add_row(str(row.batch), str(row.input_tokens), str(row.output_tokens),
                     f"{row.energy_j / row.output_tokens:.4f}", f"{row.runtime_s:.3f}",
                     f"{row.mean_power_w:.0f}", f"{row.idle_power_w:.0f}",
                     "yes" if row.settled else "[red]no")
    console.print(view)
    if resumed:
        console.print(f"resumed: {resumed} point(s) were already in {out}", highlight=False)
    if len(agreement):
        spread = agreement["relative_difference"].abs()
        console.print(f"energy counter vs integrated power samples on {len(agreement)} "
                      f"window(s) ≥ 10 s: median {spread.median():.2%}, max {spread.max():.2%}",
                      highlight=False)
    console.print(f"fit it with: wattsched fit {out}", highlight=False)


def render_schedule(console: Console, doc: dict) -> None:
    """``wattsched schedule``'s document for a terminal: the schedule, the jobs, the rules."""
    gap = "n/a" if doc["gap"] is None else f"{doc['gap']:.2%}"
    console.print(
        f"[bold]Least-energy batch schedule[/bold]: {len(doc['jobs'])} jobs, "
        f"{doc['slots']} slots of {doc['slot_s']:g} s, status {doc['status']}, solver "
        f"{doc['solver']}, solve {doc['solve_time_s']:.2f} s, gap {gap}, deadlines "
        f"{'all met' if doc['deadlines_met'] else 'MISSED'}")
    jobs = Table(title="Jobs")
    for col in ("job", "requests", "release", "deadline", "finish", "met", "ran on"):
        jobs.add_column(col, justify="left" if col in {"job", "ran on"} else "right")
    for job in doc["jobs"]:
        where = ", ".join(f"{r['pool']}/{r['llm']}/tp{r['tp']}/b{r['max_batch']} "
                          f"({r['requests']:,.0f})"
                          for r in job["ran_on"])
        jobs.add_row(job["id"], f"{job['requests']:,}", _hours(job["release_s"]),
                     _hours(job["deadline_s"]), _hours(job["finish_s"]),
                     "yes" if job["deadline_met"] else "NO", where)
    console.print(jobs)
    compare = Table(title="Energy against today's batch rules (same jobs, same checker)")
    for col in ("schedule", "energy", "active", "idle", "switching", "peak replicas",
                "deadlines", "saving"):
        compare.add_column(col, justify="left" if col == "schedule" else "right")
    shown = [doc, *(b for b in doc["baselines"].values() if b["feasible"])]
    decimals = kwh_decimals([s["energy_j"] for s in shown])

    def kwh(joules: float) -> str:
        return f"{joules / 3.6e6:,.{decimals}f} kWh"

    def row(name: str, s: dict, saving: str) -> None:
        compare.add_row(name, kwh(s["energy_j"]), kwh(s["active_energy_j"]),
                        kwh(s["idle_energy_j"]), kwh(s["switch_energy_j"]),
                        str(s["peak_replicas"]), "met" if s["deadlines_met"] else "MISSED",
                        saving)

    row("optimised", doc, "")
    for name, result in doc["baselines"].items():
        if result["feasible"]:
            row(name, result, f"{doc['saving_pct'][name]:.1f} %")
        else:
            compare.add_row(name, "[dim]cannot meet the deadlines[/dim]", "", "", "", "", "",
                            "")
    console.print(compare)
    for name, result in doc["baselines"].items():
        if not result["feasible"]:
            console.print(f"[dim]{name}: {result['reason']}[/dim]", highlight=False)


def _hours(seconds: float) -> str:
    return f"{seconds / 3600:.2f} h"


REPLAY_COLUMNS = ("plan", "planned", "replayed", "active", "idle", "SLO met", "TTFT p50",
                  "TTFT p99", "ITL p99", "E2E p99", "peak", "saving")
REPLAY_UNITS = ("Planned vs replayed: energy over the window in kWh, latency as served in s "
                "(ITL in ms), peak power in kW")


def replay_rows(doc: dict) -> list[tuple[str, ...]]:
    """``wattsched replay``'s comparison, a row of REPLAY_COLUMNS per plan, as text."""
    summaries = doc["plans"]
    decimals = kwh_decimals([s[k] for s in summaries.values()
                             for k in ("planned_energy_j", "replayed_energy_j")])

    def kwh(joules: float) -> str:
        return f"{joules / 3.6e6:,.{decimals}f}"

    return [(name, kwh(s["planned_energy_j"]), kwh(s["replayed_energy_j"]),
             kwh(s["active_energy_j"]), kwh(s["idle_energy_j"]), f"{s['slo_attainment']:.1%}",
             f"{s['ttft_p50_s']:.2f}", f"{s['ttft_p99_s']:.2f}", f"{s['itl_p99_s'] * 1e3:.0f}",
             f"{s['e2e_p99_s']:.1f}", f"{s['peak_power_w'] / 1e3:,.1f}",
             "" if name == "optimised" else f"{doc['saving_pct'][name]:.1f} %")
            for name, s in summaries.items()]


def render_replay(console: Console, doc: dict) -> None:
    """``wattsched replay``'s document for a terminal: planned against replayed, per plan."""
    console.print(f"[bold]Replay[/bold] of {doc['workload']} on {doc['fleet']}: every plan on "
                  f"the same arrivals, request by request")
    table = Table(title=REPLAY_UNITS, box=box.SIMPLE_HEAD)
    for col in REPLAY_COLUMNS:
        table.add_column(col, justify="left" if col == "plan" else "right",
                         no_wrap=col == "plan")
    for row in replay_rows(doc):
        table.add_row(*row)
    console.print(table)
    summaries = doc["plans"]
    kinds = sorted({kind for s in summaries.values() for kind in s["slo_by_kind"]})
    by_kind = Table(title="Share of requests within their SLOs, by kind: all of them (TTFT / "
                          "ITL / E2E on their own)", box=box.SIMPLE_HEAD)
    by_kind.add_column("plan", no_wrap=True)
    for kind in kinds:
        by_kind.add_column(kind, justify="right")
    for name, s in summaries.items():
        cells = []
        for kind in kinds:
            k = s["slo_by_kind"].get(kind)
            cells.append("" if k is None else
                         f"{k['attainment']:.1%} ({k['ttft_met']:.0%} / {k['itl_met']:.0%} / "
                         f"{k['e2e_met']:.0%})")
        by_kind.add_row(name, *cells)
    console.print(by_kind)
