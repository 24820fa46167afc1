"""Case study: the Azure LLM inference trace 2023 (code and conversation, real arrivals and
tokens) on the bundled fleet at 10-80 % of its capacity; the optimised plan against every
baseline, each verified in replay to the workload's SLO attainment target (99 % per kind).

    python benchmarks/case_study.py [--loads 0.1,0.2,0.4,0.6,0.8] [--horizon-s 600]
                                    [--traces DIR] [--out case_study.json] [--plot energy.png]

The traces come from ``--traces`` (default ``../shared/data/azure-llm-inference-trace-2023``);
without them the bundled synthetic equivalent (the ``azure-2023-conv`` and
``azure-2023-code`` presets: the traces' rates, burstiness and token distributions) runs in
their place and the output says so. The first ``--horizon-s`` seconds of each trace are
served together, with the bundled default's SLOs and quality floor (code: TTFT 2 s, quality
75).

Fleet capacity is the largest multiple of that demand the planner finds a plan for
(``scheduler.capacity``: fluid, no bursts). A load level L runs the trace at L x capacity
(workload ``scale``: shifted copies of the trace, thinned evenly, so bursts stay bursts).
At each level every plan (optimised, and each baseline its rule can serve) is verified as
``plan --verify`` does: replayed, then given headroom and solved again by its own rule until
each kind meets 99 % in replay, or the reason it cannot is known. Savings compare replayed
energy at equal (met) attainment. Prints a markdown table; ``--out`` writes every number as
JSON, ``--plot`` the energy per load level as a PNG.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

TRACES = (Path(__file__).resolve().parents[2] / "shared" / "data"
          / "azure-llm-inference-trace-2023")
TRACE_FILES = {"code": "AzureLLMInferenceTrace_code.csv", "chat": "AzureLLMInferenceTrace_conv.csv"}
LOADS = (0.1, 0.2, 0.4, 0.6, 0.8)
HORIZON_S = 600.0


def _progress(message: str) -> None:
    print(f"  {message}", file=sys.stderr, flush=True)


def case_workload(traces: Path | None, horizon_s: float, scale: float):
    """The bundled default's SLOs and quality with the traces' traffic (or, where
    ``traces`` is None, its synthetic traffic) over ``horizon_s`` at ``scale``."""
    from workloads.spec import parse_workload

    raw = yaml.safe_load(resources.files("workloads").joinpath(
        "data", "default_workload.yaml").read_text())
    raw.update(name="azure-2023-case-study", horizon_s=horizon_s, scale=scale)
    if traces is not None:
        del raw["traffic"], raw["seed"]
        raw["trace"] = [{"path": str(traces / name), "kind": kind}
                        for kind, name in TRACE_FILES.items()]
    return parse_workload(raw, "case study")


def run_level(fleet, workload) -> dict[str, Any]:
    """Every plan at one load level, verified; savings of the optimised plan against each
    baseline where both met their targets."""
    from scheduler.pipeline import run_plan
    from scheduler.plan import Plan
    from scheduler.replay.verify import verify_plan

    outcome = run_plan(fleet, workload, progress=_progress)
    plans: dict[str, Any] = {}
    names = ["optimised", *outcome.baselines]
    for name in names:
        plan = outcome.plan if name == "optimised" else outcome.baselines[name]
        if not isinstance(plan, Plan):
            plans[name] = {"feasible": False, "met": False, "reason": plan}
            continue
        verified = verify_plan(outcome, workload, fleet, name=name, progress=_progress)
        first = verified.rounds[0]
        plans[name] = {
            "feasible": True,
            "met": verified.met,
            "reason": verified.reason,
            "re_solves": verified.solves,
            "planned_energy_j": plan.energy_j,
            "unverified_replayed_energy_j": first["replayed_energy_j"],
            "unverified_attainment": first["attainment"],
            "replayed_energy_j": verified.replayed["replayed_energy_j"],
            "attainment": {kind: values["attainment"]
                           for kind, values in verified.replayed["slo_by_kind"].items()},
            "headroom": next((r["headroom"] for r in reversed(verified.rounds) if r["met"]),
                             verified.rounds[-1]["headroom"]),
            "replicas": int(verified.plan.solution.replicas.sum()),
        }
    optimised = plans["optimised"]
    saving = {name: (100.0 * (1.0 - optimised["replayed_energy_j"] / entry["replayed_energy_j"])
                     if optimised["met"] and entry["met"] else None)
              for name, entry in plans.items() if name != "optimised"}
    return {"requests": len(workload.requests), "plans": plans, "saving_pct": saving}


def run(loads: list[float], horizon_s: float, traces: Path | None) -> dict[str, Any]:
    from energy_models.cost import default_chain
    from scheduler.build import build_problem
    from scheduler.capacity import capacity_multiple
    from scheduler.inventory import load_fleet
    from scheduler.pipeline import solver_for

    fleet = load_fleet(None)
    base = case_workload(traces, horizon_s, 1.0)
    built = build_problem(fleet, base, default_chain(fleet.defaults.engine))
    started = time.perf_counter()
    capacity = capacity_multiple(built.problem, solver_for("highs", 30.0, 0.05),
                                 progress=_progress)
    _progress(f"capacity: {capacity:.3g} x the traces' rate "
              f"({time.perf_counter() - started:.0f} s)")
    levels = []
    for load in loads:
        _progress(f"load {load:.0%}: scale {load * capacity:.3g}")
        workload = case_workload(traces, horizon_s, load * capacity)
        level = run_level(fleet, workload)
        levels.append({"load": load, "scale": load * capacity, **level})
    return {"traffic": "azure-2023 traces" if traces else "synthetic (azure-2023 presets)",
            "horizon_s": horizon_s, "base_requests": len(base.requests),
            "base_rate_rps": len(base.requests) / horizon_s,
            "capacity_multiple": capacity, "levels": levels}


def markdown(document: dict[str, Any]) -> str:
    names = list(document["levels"][0]["plans"])
    lines = [f"Traffic: {document['traffic']}, {document['horizon_s']:g} s; fleet capacity "
             f"{document['capacity_multiple']:.3g} x its {document['base_rate_rps']:.2f} req/s.",
             "", "| load | req/s | plan | replayed kWh | SLO met chat / code | re-solves "
             "| saving of optimised |", "|---|---|---|---|---|---|---|"]
    for level in document["levels"]:
        rate = level["requests"] / document["horizon_s"]
        for name in names:
            entry = level["plans"][name]
            if not entry["feasible"]:
                cells = ["—", "cannot serve", "—", "—"]
            else:
                attained = " / ".join(f"{entry['attainment'][k]:.1%}"
                                      for k in sorted(entry["attainment"]))
                energy = f"{entry['replayed_energy_j'] / 3.6e6:.3f}"
                if not entry["met"]:
                    energy += " (target missed)"
                saving = level["saving_pct"].get(name)
                cells = [energy, attained, str(entry["re_solves"]),
                         "—" if saving is None else f"{saving:.1f} %"]
            lines.append(f"| {level['load']:.0%} | {rate:.0f} | {name} | " + " | ".join(cells)
                         + " |")
    lines.append("")
    for level in document["levels"]:
        for name, entry in level["plans"].items():
            if entry.get("reason"):
                lines.append(f"- {level['load']:.0%} {name}: {entry['reason']}")
    return "\n".join(lines)


def plot(document: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 4.2))
    loads = [100 * level["load"] for level in document["levels"]]
    for name in document["levels"][0]["plans"]:
        entries = [level["plans"][name] for level in document["levels"]]
        energy = [e["replayed_energy_j"] / 3.6e6 if e["feasible"] else float("nan")
                  for e in entries]
        (line,) = axis.plot(loads, energy, marker="o", label=name)
        missed = [(x, y) for x, y, e in zip(loads, energy, entries, strict=True)
                  if e["feasible"] and not e["met"]]
        if missed:
            axis.scatter(*zip(*missed, strict=True), marker="x", s=80, color=line.get_color(),
                         zorder=3)
    axis.set_xlabel("load, % of fleet capacity")
    axis.set_ylabel(f"replayed energy over {document['horizon_s']:g} s, kWh")
    axis.set_yscale("log")
    axis.set_title("Energy at >= 99 % SLO attainment per kind (x: target missed)")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    figure.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    figure.savefig(tmp, dpi=120)
    plt.close(figure)
    tmp.replace(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--loads", default=",".join(f"{x:g}" for x in LOADS),
                        help="load levels as shares of fleet capacity, comma-separated")
    parser.add_argument("--horizon-s", type=float, default=HORIZON_S)
    parser.add_argument("--traces", type=Path, default=TRACES)
    parser.add_argument("--out", type=Path, help="write every number as JSON")
    parser.add_argument("--plot", type=Path, help="write energy per load level as a PNG")
    args = parser.parse_args(argv)
    loads = [float(x) for x in args.loads.split(",")]
    traces = args.traces if all((args.traces / n).is_file() for n in TRACE_FILES.values()) \
        else None
    if traces is None:
        _progress(f"no Azure traces in {args.traces}: running the bundled synthetic equivalent")
    document = run(loads, args.horizon_s, traces)
    if args.out:
        tmp = args.out.with_suffix(".tmp")
        tmp.write_text(json.dumps(document, indent=2, sort_keys=True) + "\n")
        tmp.replace(args.out)
    if args.plot:
        plot(document, args.plot)
    print(markdown(document))
    return 0


if __name__ == "__main__":
    sys.exit(main())
