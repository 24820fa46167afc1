"""``wattsched replay --report DIR``: the pictures people look at, as PNGs and one
self-contained ``index.html`` (images embedded), each file written atomically.

- ``energy.png``: replayed energy per plan, active and idle, with the plan's promise marked;
- ``latency_<kind>.png``: per request kind, the CDFs of TTFT, mean inter-token gap and
  end-to-end latency per plan, with the SLO as a line;
- ``power.png``: the optimised plan's power over time per pool;
- ``load.png``: the optimised plan's utilisation (share of time stepping) and queue length
  (requests waiting) over time per pool.
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from energy_models.io import write_atomic
from scheduler.build import Built
from scheduler.replay.from_plan import plan_requests
from scheduler.replay.simulate import ReplayResult
from scheduler.replay.summary import accrued, power_over_time
from scheduler.report import REPLAY_COLUMNS, REPLAY_UNITS, replay_rows

TIME_BIN_S = 10.0
"""Width of the bins of the power and load plots."""
PLOT_DPI = 110


def _png(figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=PLOT_DPI, bbox_inches="tight")
    plt.close(figure)
    return buffer.getvalue()


def energy_figure(doc: dict):
    names = list(doc["plans"])
    plans = [doc["plans"][name] for name in names]
    active = np.array([p["active_energy_j"] for p in plans]) / 3.6e6
    idle = np.array([p["idle_energy_j"] for p in plans]) / 3.6e6
    planned = np.array([p["planned_energy_j"] for p in plans]) / 3.6e6
    figure, axis = plt.subplots(figsize=(8, 4))
    x = np.arange(len(names))
    axis.bar(x, active, label="active (replayed)", color="tab:orange")
    axis.bar(x, idle, bottom=active, label="idle (replayed)", color="tab:gray")
    axis.scatter(x, planned, marker="_", s=900, color="black", zorder=3,
                 label="planned (fluid estimate)")
    axis.set_xticks(x, names, rotation=20, ha="right")
    axis.set_ylabel("energy over the window (kWh)")
    axis.set_title("Energy per plan: what the plan promised and what its replay drew")
    axis.legend()
    return figure


def latency_figure(kind: str, replays: dict[str, ReplayResult], built: Built,
                   requests: pd.DataFrame):
    arrivals = plan_requests(built, requests)
    of_kind = built.classes.kind.to_numpy()[arrivals.request_class] == kind
    classes = built.problem.classes
    figure, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    for axis, (label, attribute, slo_field) in zip(axes, (
            ("TTFT (s)", "ttft_s", "slo_ttft_s"), ("mean inter-token gap (s)", "tpot_s",
                                                     "slo_itl_s"),
            ("end-to-end (s)", "e2e_s", "slo_e2e_s")), strict=True):
        for name, result in replays.items():
            values = getattr(result, attribute)[of_kind]
            values = np.sort(values[np.isfinite(values)])
            if len(values):
                axis.plot(values, np.arange(1, len(values) + 1) / len(values), label=name)
        slos = {getattr(classes[c], slo_field) for c in np.unique(
            arrivals.request_class[of_kind])}
        for slo in sorted(s for s in slos if np.isfinite(s)):
            axis.axvline(slo, color="red", linestyle="--", linewidth=1)
        axis.set_xscale("log")
        axis.set_xlabel(label)
        axis.set_ylim(0, 1)
        axis.grid(alpha=0.3)
    axes[0].set_ylabel("share of requests")
    axes[-1].legend(fontsize=8, loc="lower right")
    figure.suptitle(f"{kind}: latency as served, per plan (red: SLO)")
    return figure


def _by_pool(built: Built, result: ReplayResult) -> dict[str, list[int]]:
    """The replicas of each pool, by index."""
    pools: dict[str, list[int]] = {}
    pool_of = built.deployments.pool.to_numpy()
    for k, d in enumerate(result.replica_deployment):
        pools.setdefault(str(pool_of[d]), []).append(k)
    return pools


def power_figure(built: Built, result: ReplayResult):
    starts_s, power = power_over_time(result, TIME_BIN_S)
    figure, axis = plt.subplots(figsize=(9, 3.8))
    pools = _by_pool(built, result)
    axis.stackplot(starts_s / 60.0, *[power[rows].sum(axis=0) / 1e3 for rows in pools.values()],
                   labels=list(pools), step="post")
    axis.set_xlabel("time (min)")
    axis.set_ylabel(f"power (kW, {TIME_BIN_S:g} s means)")
    axis.set_title("Optimised plan, replayed: power per pool (devices without a replica off)")
    axis.legend(loc="upper right", fontsize=8)
    return figure


def load_figure(built: Built, result: ReplayResult):
    edges = np.arange(0.0, result.end_s + TIME_BIN_S, TIME_BIN_S)
    figure, (busy_axis, queue_axis) = plt.subplots(2, 1, figsize=(9, 5.5), sharex=True)
    for pool, rows in _by_pool(built, result).items():
        busy = np.zeros(len(edges) - 1)
        waiting = np.zeros(len(edges) - 1)
        for k in rows:
            steps = result.steps[k]
            busy += np.diff(accrued(steps, steps["duration_s"], edges))
            waiting += np.diff(accrued(steps, steps["waiting"] * steps["duration_s"], edges))
        busy_axis.step(edges[:-1] / 60.0, busy / (TIME_BIN_S * len(rows)), where="post",
                       label=pool)
        queue_axis.step(edges[:-1] / 60.0, waiting / TIME_BIN_S, where="post", label=pool)
    busy_axis.set_ylabel("utilisation")
    busy_axis.set_ylim(0, 1.05)
    queue_axis.set_ylabel("requests waiting")
    queue_axis.set_xlabel("time (min)")
    busy_axis.legend(fontsize=8)
    busy_axis.set_title("Optimised plan, replayed: share of time each pool's replicas step, "
                        "and their queues")
    return figure


def _table(doc: dict) -> str:
    """The terminal's comparison table (``scheduler.report.replay_rows``) as HTML."""
    rows = "".join("<tr>" + "".join(f"<td>{html.escape(cell)}</td>" for cell in row) + "</tr>"
                   for row in replay_rows(doc))
    head = "".join(f"<th>{html.escape(column)}</th>" for column in REPLAY_COLUMNS)
    return (f"<table><caption>{html.escape(REPLAY_UNITS)}</caption><tr>{head}</tr>{rows}"
            f"</table>")


def write_report(folder: Path, doc: dict, replays: dict[str, ReplayResult],
                 built: Built, requests: pd.DataFrame) -> list[Path]:
    """Write the PNGs and ``index.html`` into ``folder`` (made if missing); the paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    result = replays["optimised"]
    images = {"energy.png": _png(energy_figure(doc))}
    for kind in sorted(set(built.classes.kind)):
        images[f"latency_{kind}.png"] = _png(latency_figure(kind, replays, built, requests))
    images["power.png"] = _png(power_figure(built, result))
    images["load.png"] = _png(load_figure(built, result))
    written = []
    for name, data in images.items():
        write_atomic(folder / name, data)
        written.append(folder / name)
    embedded = "".join(
        f'<figure><img alt="{html.escape(name)}" src="data:image/png;base64,'
        f'{base64.b64encode(data).decode()}"><figcaption>{html.escape(name)}</figcaption>'
        f"</figure>" for name, data in images.items())
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>wattsched replay: {html.escape(doc['workload'])} on {html.escape(doc['fleet'])}</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:1200px}}
table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}}
td:first-child,th:first-child{{text-align:left}}img{{max-width:100%}}</style></head>
<body><h1>Replay of {html.escape(doc['workload'])} on {html.escape(doc['fleet'])}</h1>
<p>Every plan served the same arrivals, request by request (continuous batching, chunked
prefill, KV cache). The planned energy is the plan's fluid estimate; the replay is what
the traffic drew. Savings are the optimised plan's, at the replayed energy.</p>
{_table(doc)}
{embedded}
</body></html>
"""
    write_atomic(folder / "index.html", page)
    written.append(folder / "index.html")
    return written
