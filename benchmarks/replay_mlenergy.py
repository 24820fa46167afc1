"""The replay against ML.ENERGY v3 (today's vLLM on H100): saturated serving of each
configuration, simulated, beside what was measured.

    python benchmarks/replay_mlenergy.py [--data ../shared/data] [--max-seqs 512]
                                         [--tasks lm-arena-chat,sourcegraph-fim] [--limit N]

Per configuration (model, GPUs, max_num_seqs, task): ``3 x max_num_seqs`` requests (at least
300, at most 3,000) arrive at once, with the task's assumed prompt length and output lengths
drawn from an exponential distribution around the measured mean (seeded); the replica is
simulated as ``wattsched replay`` runs it (analytical step costs of the ``vllm`` stack, KV
blocks from the memory model). Between the times a tenth and seven tenths of the requests
have finished (the steady state, as the benchmark measures it) it reads the output token
throughput, J per output token and the mean number of running sequences, and compares them
with the measured ones. Prompt lengths are not published: ``energy_models.measurements.
mlenergy.ASSUMED_INPUT_TOKENS``. gpqa (5,800-token outputs) and the largest batches are left
out by default for time; ``--tasks`` and ``--max-seqs`` bring them in.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from energy_models.analytical.model import shipped_constants
from energy_models.catalog.specs import get_device, get_llm
from energy_models.measurements.mlenergy import V3_FILE, measurements_v3
from energy_models.steps import StepCosts
from scheduler.replay.engine import vllm_replica
from scheduler.replay.simulate import Requests, simulate

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
FOLDER = "mlenergy-leaderboard-v3-h100"
STEADY = (0.1, 0.7)
"""Shares of finished requests that open and close the measured window."""
SEED = 0


def simulate_row(row: pd.Series, rng: np.random.Generator) -> dict[str, float]:
    """The steady state of one configuration, simulated."""
    llm, device = get_llm(row.llm), get_device(row.device)
    max_seqs = int(row.max_num_seqs)
    costs = StepCosts(llm, device, int(row.tp), shipped_constants()["vllm"])
    n = int(np.clip(3 * max_seqs, 300, 3000))
    outputs = np.maximum(1, np.round(rng.exponential(row.output_tokens, n))).astype(int)
    inputs = np.full(n, int(row.input_tokens))
    spec = vllm_replica("r", 0, costs, max_seqs)
    result = simulate([spec], np.ones((1, 1)),
                      Requests(np.zeros(n), np.zeros(n, dtype=int), inputs, outputs))
    done_s = np.sort((result.e2e_s)[np.isfinite(result.e2e_s)])
    start_s, end_s = done_s[int(STEADY[0] * len(done_s))], done_s[int(STEADY[1] * len(done_s))]
    steps = result.steps[0]
    inside = (steps["start_s"] >= start_s) & (steps["start_s"] < end_s)
    window_s = steps["duration_s"][inside].sum()
    tokens = (steps["decode_batch"] * steps["steps"])[inside].sum()  # a run is many steps
    return {
        "sim tok/s": tokens / window_s,
        "sim J/tok": steps["energy_j"][inside].sum() / tokens,
        "sim batch": float(np.average(steps["running"][inside],
                                      weights=steps["duration_s"][inside])),
        "preempted": int(result.preemptions[0]),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=SHARED_DATA)
    parser.add_argument("--max-seqs", type=int, default=512)
    parser.add_argument("--tasks", default="lm-arena-chat,sourcegraph-fim")
    parser.add_argument("--limit", type=int, default=0, help="first N configurations only")
    args = parser.parse_args(argv)
    path = args.data / FOLDER
    if not (path / V3_FILE).is_file():
        print(f"skipped: {path / V3_FILE} is absent")
        return 0
    table = measurements_v3(path).table
    task = table.config.str.split(".").str[0]
    table = table.assign(task=task, max_num_seqs=table.config.str.extract(
        r"seqs(\d+)")[0].astype(int))
    table = table[table.task.isin(args.tasks.split(",")) & (table.max_num_seqs
                                                           <= args.max_seqs)]
    if args.limit:
        table = table.head(args.limit)
    rng = np.random.default_rng(SEED)
    rows = []
    started = time.perf_counter()
    for number, (_, row) in enumerate(table.iterrows(), start=1):
        print(f"{number}/{len(table)} {row.llm} tp{row.tp} seqs{row.max_num_seqs} {row.task}",
              file=sys.stderr, flush=True)
        measured_tok_s = row.batch * row.output_tokens / row.runtime_s
        simulated = simulate_row(row, rng)
        rows.append({
            "llm": row.llm, "tp": int(row.tp), "seqs": int(row.max_num_seqs),
            "task": row.task, "batch": row.batch, **simulated,
            "tok/s": measured_tok_s, "J/tok": row.energy_j / row.output_tokens,
        })
    result = pd.DataFrame(rows)
    result["tok/s err"] = result["sim tok/s"] / result["tok/s"] - 1
    result["J/tok err"] = result["sim J/tok"] / result["J/tok"] - 1
    result["batch err"] = result["sim batch"] / result["batch"] - 1
    print(result.to_string(index=False, float_format=lambda v: f"{v:.3g}"))
    print()
    for column in ("tok/s err", "J/tok err", "batch err"):
        errors = result[column].abs()
        print(f"{column}: median |error| {errors.median():.1%}, within 25 %: "
              f"{(errors <= 0.25).mean():.0%} of {len(result)} configurations")
    print(f"simulated in {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
