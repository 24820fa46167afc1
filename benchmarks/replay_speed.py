"""Replay speed: requests per second the simulator serves, and its peak memory.

    python benchmarks/replay_speed.py [--requests 1000000] [--workers 1,2] [--seed 0]

The traffic is the bundled default's kinds (the Azure 2023 chat and code presets: their
token lengths and burstiness) scaled to ``--requests`` over an hour; the fleet is identical
H100 replicas of Llama-3.1-8B at max_num_seqs 256, as many as keep them near 60 % of their
planned capacity, every class routed to all of them. Each row runs in its own process so its
peak memory (max RSS, the generator and the results included) is its own. Prints requests,
replicas, wall seconds, requests per second and peak GB per worker count, the speed-up of
each over one worker, and the issue's target: 1,000,000 requests in 60 s on one core within
2 GB.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import resource
import subprocess
import sys
import time

import numpy as np
import pandas as pd

TARGET_REQUESTS = 1_000_000
TARGET_S = 60.0
TARGET_GB = 2.0
HORIZON_S = 3600.0
UTILISATION = 0.6


def _run(requests: int, workers: int, seed: int) -> dict:
    from energy_models.analytical.model import shipped_constants
    from energy_models.catalog.specs import get_device, get_llm
    from energy_models.steps import StepCosts
    from scheduler.replay.engine import vllm_replica
    from scheduler.replay.simulate import Requests, simulate
    from workloads.synthetic import generate, presets

    known = presets()
    base = [known["azure-2023-conv"], known["azure-2023-code"]]
    expected = sum(p.rate_rps for p in base) * HORIZON_S
    scaled = [dataclasses.replace(p, rate_rps=p.rate_rps * requests / expected) for p in base]
    table = generate(scaled, HORIZON_S, seed, "replay_speed")
    costs = StepCosts(get_llm("llama-3.1-8b"), get_device("H100-SXM"), 1,
                      shipped_constants()["vllm"])
    tokens_in = table.input_tokens.to_numpy(np.int64)
    tokens_out = table.output_tokens.to_numpy(np.int64)
    replica_s, _ = costs.steady_state(256, float(tokens_in.mean()), float(tokens_out.mean()))
    replicas = max(int(np.ceil(len(table) * replica_s / (HORIZON_S * UTILISATION))), 1)
    specs = [vllm_replica(f"r{k}", 0, costs, 256) for k in range(replicas)]
    work = Requests(table.arrival_s.to_numpy(float), np.zeros(len(table), dtype=np.int64),
                    tokens_in, tokens_out)
    started = time.perf_counter()
    result = simulate(specs, np.ones((1, 1)), work, horizon_s=HORIZON_S, workers=workers)
    wall_s = time.perf_counter() - started
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    peak_gb = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, children) / 1e6
    return {"requests": len(table), "replicas": replicas, "workers": workers,
            "served": int((result.replica >= 0).sum()), "wall s": wall_s,
            "requests/s": len(table) / wall_s, "peak GB": peak_gb}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=TARGET_REQUESTS)
    parser.add_argument("--workers", default="1,2")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--one", help=argparse.SUPPRESS)  # WORKERS: one run, as JSON
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(_run(args.requests, int(args.one), args.seed)))
        return 0
    rows = []
    for workers in (int(w) for w in args.workers.split(",") if w):
        print(f"{args.requests:,} requests, {workers} worker(s)", file=sys.stderr, flush=True)
        done = subprocess.run([sys.executable, __file__, "--one", str(workers), "--requests",
                               str(args.requests), "--seed", str(args.seed)],
                              capture_output=True, text=True, check=True)
        rows.append(json.loads(done.stdout.splitlines()[-1]))
    table = pd.DataFrame(rows)
    table["speed-up"] = table["requests/s"] / table["requests/s"].iloc[0]
    print(table.to_string(index=False, float_format=lambda v: f"{v:,.0f}" if v >= 1000
                          else f"{v:.3g}"))
    one = table[table["workers"] == 1]
    if not one.empty:
        row = one.iloc[0]
        at_target_s = TARGET_REQUESTS / row["requests/s"]
        verdict = ("MET" if at_target_s <= TARGET_S and row["peak GB"] <= TARGET_GB
                   else "NOT MET")
        print(f"target {TARGET_REQUESTS:,} requests in {TARGET_S:.0f} s on one core within "
              f"{TARGET_GB:.0f} GB: {verdict} (one core: {row['requests/s']:,.0f} requests/s, "
              f"{at_target_s:.0f} s for {TARGET_REQUESTS:,}; peak {row['peak GB']:.2f} GB at "
              f"{int(row['requests']):,} requests)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
