"""The replay against measured vLLM runs (``../shared/data/powertrace``): each run's arrival
process and token volume replayed on its model, GPU and TP, beside its 250 ms power and
engine counters.

    python benchmarks/replay_powertrace.py [--data ../shared/data] [--seeds 0,1,2]

Per run (those with a power log and an LLM in the catalog):

- arrivals: the client's process, re-drawn (the client's own random stream is not in the
  data): gamma inter-arrival gaps at its request rate and burstiness (shape = burstiness,
  as vLLM's benchmark_serving draws them), from the time the client started; a trace
  replay's sessions start at their logged times;
- tokens: the run's totals (client summary, or the engine's counters for a trace replay)
  spread over its requests with lognormal lengths (sigma 1), scaled so the totals match;
- the replica as ``wattsched replay`` runs it: the ``vllm`` stack's analytical step costs,
  the server's max_num_seqs and token budget, KV blocks from the memory model.

Compared over the run's window: energy (measured: trapezoid of the board power), mean power
while serving (from the first to the last engine sample with a request running), the mean
number of running requests while serving, and output tokens per second while serving. Each
simulated number is the mean over ``--seeds`` re-drawn arrival processes.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from energy_models.analytical.model import shipped_constants
from energy_models.catalog.specs import get_device, get_llm
from energy_models.measurements.powertrace import MANIFEST_FILE, POWER_FILE, read_run
from energy_models.registry import UnknownNameError
from energy_models.steps import StepCosts
from scheduler.replay.engine import vllm_replica
from scheduler.replay.simulate import Requests, simulate
from scheduler.replay.summary import power_over_time

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
LENGTH_SIGMA = 1.0
RESOLUTION_S = 0.25


def _lengths(rng: np.random.Generator, total: float, n: int) -> np.ndarray:
    raw = rng.lognormal(0.0, LENGTH_SIGMA, n)
    return np.maximum(1, np.round(raw * total / raw.sum())).astype(np.int64)


def arrivals(manifest: dict, rng: np.random.Generator) -> tuple[np.ndarray, float, float]:
    """(arrival times from the window's start, total input tokens, total output tokens)."""
    window_start = manifest["probe"]["window"]["start_epoch"]
    levels = manifest["probe"].get("levels") or []
    if levels:
        times, inputs, outputs = [], 0.0, 0.0
        for level in levels:
            params = level["params"]
            shape = params["burstiness"]
            gaps = rng.gamma(shape, 1.0 / (params["request_rate"] * shape),
                             params["num_prompts"])
            times.append(level["t_start_epoch"] - window_start + np.cumsum(gaps))
            inputs += level["summary"]["total_input_tokens"]
            outputs += level["summary"]["total_output_tokens"]
        return np.concatenate(times), inputs, outputs
    starts = np.sort([s["actual_start_epoch"] for s in manifest["probe"]["sessions"]])
    return starts - window_start, np.nan, np.nan


def measured(run) -> dict[str, float]:
    engine = run.engine
    busy = engine[engine.num_requests_running > 0]
    start_s, end_s = busy.t_s.iloc[0], busy.t_s.iloc[-1]
    tokens = np.interp([start_s, end_s], engine.t_s, engine.generation_tokens_total)
    return {
        "energy kJ": run.energy_j() / 1e3,
        "busy W": run.energy_j(start_s, end_s) / (end_s - start_s),
        "running": float(busy.num_requests_running.mean()),
        "tok/s": float(tokens[1] - tokens[0]) / (end_s - start_s),
    }


def simulated(run, manifest: dict, seed: int) -> dict[str, float]:
    rng = np.random.default_rng(seed)
    arrival_s, total_in, total_out = arrivals(manifest, rng)
    engine = run.engine
    if not np.isfinite(total_in):
        total_in = engine.prompt_tokens_total.iloc[-1] - engine.prompt_tokens_total.iloc[0]
        total_out = (engine.generation_tokens_total.iloc[-1]
                     - engine.generation_tokens_total.iloc[0])
    n = len(arrival_s)
    inputs, outputs = _lengths(rng, total_in, n), _lengths(rng, total_out, n)
    server = manifest["server"]
    llm, device = get_llm(run.model), get_device(run.device)
    spec = vllm_replica("r", 0, StepCosts(llm, device, run.tp, shipped_constants()["vllm"]),
                        server["max_num_seqs"], server["max_num_batched_tokens"])
    window_s = float(run.samples.t_s.iloc[-1])
    result = simulate([spec], np.ones((1, 1)),
                      Requests(arrival_s, np.zeros(n, dtype=int), inputs, outputs),
                      horizon_s=window_s)
    starts_s, power = power_over_time(result, RESOLUTION_S)
    steps = result.steps[0]
    start_s, end_s = float(arrival_s.min()), float(np.nanmax(arrival_s + result.e2e_s))
    serving = (starts_s >= start_s) & (starts_s < end_s)
    inside = (steps["start_s"] >= start_s) & (steps["start_s"] < end_s)
    return {
        "energy kJ": float(power[0][starts_s < window_s].sum()) * RESOLUTION_S / 1e3,
        "busy W": float(power[0][serving].mean()),
        "running": float((steps["running"][inside] * steps["duration_s"][inside]).sum()
                         / (end_s - start_s)),
        "tok/s": float(outputs.sum()) / (end_s - start_s),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=SHARED_DATA)
    parser.add_argument("--seeds", default="0,1,2")
    args = parser.parse_args(argv)
    root = args.data / "powertrace"
    folders = sorted(p for p in root.glob("*") if (p / POWER_FILE).is_file())
    if not folders:
        print(f"skipped: no runs with {POWER_FILE} under {root}")
        return 0
    seeds = [int(s) for s in args.seeds.split(",") if s]
    rows = []
    for folder in folders:
        run = read_run(folder)
        try:
            get_llm(run.model)
        except UnknownNameError:
            print(f"left out: {folder.name} ({run.model} is not in the LLM catalog)")
            continue
        manifest = json.loads((folder / MANIFEST_FILE).read_text())
        truth = measured(run)
        runs = pd.DataFrame([simulated(run, manifest, seed) for seed in seeds]).mean()
        row = {"run": folder.name, "device": run.device, "tp": run.tp}
        for key, value in truth.items():
            row[f"{key} meas"] = value
            row[f"{key} sim"] = runs[key]
            row[f"{key} err"] = runs[key] / value - 1
        rows.append(row)
    table = pd.DataFrame(rows)
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3g}"))
    print()
    for key in ("energy kJ", "busy W", "running", "tok/s"):
        errors = table[f"{key} err"].abs()
        print(f"{key}: median |error| {errors.median():.1%}, worst {errors.max():.1%} over "
              f"{len(table)} runs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
