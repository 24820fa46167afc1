"""PowerTrace-Sim runs (vLLM 0.10) as measurement rows, cross-checked against ML.ENERGY v3.

    python benchmarks/powertrace_rows.py [--data ../shared/data]

Prints the steady-serving rows of every run with a power log and why the rest are left out;
for Qwen3-8B on H100, each row's power per GPU, ITL and J/token next to the ML.ENERGY v3
lm-arena-chat rows of the same model and GPU interpolated to the row's batch (log-log between
the two nearest batches); and the idle power per GPU measured next to the catalog's idle_w.
Skips (exit 0) when the data is absent.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from energy_models.catalog.specs import get_device
from energy_models.measurements.powertrace import (
    POWER_FILE,
    idle_power,
    powertrace_rows,
    read_run,
)

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data"
V3_FILE = Path("mlenergy-leaderboard-v3-h100") / "v3_h100_llm_flat.csv"
V3_MODEL, V3_TASK, COMPARED = "Qwen/Qwen3-8B", "lm-arena-chat", ("qwen3-8b", "H100-SXM")


def row_table(rows: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({
        "bin": rows["config"], "device": rows["device"], "tp": rows["tp"],
        "batch": rows["batch"], "power_w_per_gpu": rows["mean_power_w"] / rows["tp"],
        "itl_ms": rows["itl_s"] * 1e3, "j_per_token": rows["energy_j"] / rows["output_tokens"],
        "input_tokens": rows["input_tokens"], "output_tokens": rows["output_tokens"],
    })


def log_log(x: np.ndarray, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """ys at x, linear in log-log between the two nearest xs (the end segment beyond them)."""
    lx, ly, at = np.log(xs), np.log(ys), np.log(x)
    i = np.clip(np.searchsorted(lx, at), 1, len(xs) - 1)
    share = (at - lx[i - 1]) / (lx[i] - lx[i - 1])
    return np.exp(ly[i - 1] + share * (ly[i] - ly[i - 1]))


def v3_comparison(rows: pd.DataFrame, v3: pd.DataFrame) -> pd.DataFrame:
    """Each measured row next to v3 at its batch; ``extrapolated`` where the batch lies outside
    v3's batches."""
    reference = v3[(v3["model_id"] == V3_MODEL) & (v3["task"] == V3_TASK)
                   & (v3["num_gpus"] == 1)].sort_values("avg_batch_size")
    xs = reference["avg_batch_size"].to_numpy()
    measured = row_table(rows)
    batch = measured["batch"].to_numpy()
    v3_power = log_log(batch, xs, (reference["avg_power_watts"] / reference["num_gpus"]).to_numpy())
    v3_itl = log_log(batch, xs, reference["median_itl_ms"].to_numpy())
    v3_jpt = log_log(batch, xs, reference["energy_per_token_joules"].to_numpy())
    return pd.DataFrame({
        "bin": measured["bin"].str.split(".").str[-1], "batch": batch,
        "power_w": measured["power_w_per_gpu"], "v3_power_w": v3_power,
        "itl_ms": measured["itl_ms"], "v3_median_itl_ms": v3_itl,
        "j_per_token": measured["j_per_token"], "v3_j_per_token": v3_jpt,
        "extrapolated": (batch < xs[0]) | (batch > xs[-1]),
    })


def idle_table(root: Path) -> pd.DataFrame:
    rows = []
    for folder in sorted(p for p in root.iterdir() if (p / POWER_FILE).exists()):
        run = read_run(folder)
        idle = idle_power(run)
        for gpu, before, between in zip(run.gpus, idle.pre_request_w, idle.loaded_idle_w,
                                         strict=True):
            rows.append({
                "run": run.name, "gpu": gpu[:12], "device": run.device,
                "pre_request_w": before, "samples": idle.pre_request_samples,
                "loaded_idle_w": between, "loaded_samples": idle.loaded_idle_samples,
                "catalog_idle_w": get_device(run.device).idle_w,
            })
    return pd.DataFrame(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    args = parser.parse_args(argv)
    root = args.data / "powertrace"
    if not root.is_dir():
        print(f"skipped: no PowerTrace-Sim runs in {root}")
        return 0
    result = powertrace_rows(root)
    rows = result.table
    with pd.option_context("display.width", 200, "display.max_columns", 20,
                           "display.max_colwidth", 60, "display.float_format", "{:.4g}".format):
        versions = ", ".join(sorted(set(rows["engine_version"])))
        print(f"steady-serving rows: {len(rows)} ({versions})")
        print(row_table(rows).to_string(index=False))
        print("\nleft out:")
        for line in result.dropped:
            print(f"  {line}")
        compared = rows[(rows["llm"] == COMPARED[0]) & (rows["device"] == COMPARED[1])]
        if (args.data / V3_FILE).is_file() and not compared.empty:
            table = v3_comparison(compared, pd.read_csv(args.data / V3_FILE))
            print(f"\n{COMPARED[0]} on {COMPARED[1]}: measured vs ML.ENERGY v3 {V3_TASK} at the "
                  f"same batch (v3 ITL is the median streamed-token gap; measured ITL is the "
                  f"mean time per output token)")
            print(table.to_string(index=False))
            for name, reference in (("power_w", "v3_power_w"), ("itl_ms", "v3_median_itl_ms"),
                                    ("j_per_token", "v3_j_per_token")):
                ratio = table[name] / table[reference]
                print(f"  {name}: measured / v3 = {ratio.mean():.3f} (mean over "
                      f"{len(table)} bins, {ratio.min():.3f}-{ratio.max():.3f})")
        else:
            print(f"\nv3 comparison skipped: no {V3_FILE} or no {COMPARED[0]} rows on "
                  f"{COMPARED[1]}")
        print("\nidle power per GPU (median W; loaded-idle is between requests while serving)")
        print(idle_table(root).to_string(index=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
