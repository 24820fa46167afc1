"""Calibration data from a real GPU: measure LLM shapes with `wattsched measure`, then report
J/token and idle power per shape, how well the energy counter and integrated power samples
agree, and the cross-validated accuracy of the regressions fitted to the tables.

    python benchmarks/gpu_calibration.py [--shapes llama-3.2-1b,llama-3.2-3b,llama-3.1-8b,
        qwen2.5-14b] [--grid standard] [--out-dir energy_models/data/measured]
        [--repetitions 3] [--report-only] [-- extra options for wattsched measure]

One CSV per shape lands in ``--out-dir`` (resumed where it exists). ``--report-only`` skips
measuring and reports on the tables already there. Skips (exit 0) where no GPU can be
measured and there is nothing to report.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pandas as pd

from energy_models.measurements.loaders import load_all
from energy_models.meters import survey
from energy_models.profiling.harness import counter_agreement, read_runs
from energy_models.regression.fitting import fit_all

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SHAPES = ("llama-3.2-1b", "llama-3.2-3b", "llama-3.1-8b", "qwen2.5-14b")
DEFAULT_OUT = ROOT / "energy_models" / "data" / "measured"
AGREEMENT_TARGET = 0.05


def per_shape(tables: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Rows, J/token (median and range over every row), idle power and counter agreement."""
    rows = []
    for name, table in tables.items():
        per_token = table["energy_j"] / table["output_tokens"]
        long = counter_agreement(table, 10.0)["relative_difference"].abs()
        rows.append({
            "llm": name, "device": table["device"].iloc[0], "rows": len(table),
            "points": table["config"].nunique(),
            "j_per_token_median": per_token.median(), "j_per_token_min": per_token.min(),
            "j_per_token_max": per_token.max(),
            "idle_power_w": table["idle_power_w"].median(),
            "windows_10s": len(long),
            "agreement_median": long.median() if len(long) else float("nan"),
            "agreement_max": long.max() if len(long) else float("nan"),
            "unsettled_rows": int((~table["idle_settled"].astype(bool)).sum()),
        })
    return pd.DataFrame(rows)


def fits(paths: list[Path]) -> pd.DataFrame:
    models = fit_all(load_all(paths))
    return pd.DataFrame([{
        "llm": m.llm, "device": m.device, "target": m.target, "form": m.form,
        "cv_r2": m.cv_r2, "cv_mape": m.cv_mape, "refused": m.refused,
    } for m in models.models])


def measure(shapes: list[str], grid: str, out_dir: Path, repetitions: int,
            extra: list[str]) -> list[str]:
    """Run `wattsched measure` per shape; the shapes that failed, with why."""
    command = Path(sys.executable).with_name("wattsched")
    failed = []
    for shape in shapes:
        print(f"measuring {shape} ...", flush=True)
        done = subprocess.run([str(command), "measure", "--llm", shape, "--grid", grid,
                               "--repetitions", str(repetitions),
                               "--out", str(out_dir / f"{shape}.csv"), *extra], check=False)
        if done.returncode:
            failed.append(f"{shape}: wattsched measure exited {done.returncode}")
    return failed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", default=",".join(DEFAULT_SHAPES))
    parser.add_argument("--grid", default="standard")
    parser.add_argument("--out-dir", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--repetitions", type=int, default=3)
    parser.add_argument("--report-only", action="store_true")
    args, extra = parser.parse_known_args(argv)
    shapes = [s for s in args.shapes.split(",") if s]
    failed = []
    if not args.report_only:
        report = survey()
        if not report.gpus:
            print(f"skipped: no GPU to measure here ({report.gpu_problem})")
            return 0
        args.out_dir.mkdir(parents=True, exist_ok=True)
        failed = measure(shapes, args.grid, args.out_dir, args.repetitions,
                         [e for e in extra if e != "--"])
    paths = [args.out_dir / f"{s}.csv" for s in shapes if (args.out_dir / f"{s}.csv").exists()]
    if not paths:
        for line in failed:
            print(f"failed: {line}")
        print(f"skipped: no measurement tables in {args.out_dir}")
        return 1 if failed else 0
    tables = {p.stem: read_runs(p) for p in paths}
    with pd.option_context("display.width", 160, "display.max_columns", 20,
                           "display.float_format", "{:.4g}".format):
        shape_table = per_shape(tables)
        print("\nper shape: J/token over every row, idle power, counter vs samples "
              "(|relative difference| on windows >= 10 s)")
        print(shape_table.to_string(index=False))
        print(f"\ntotal rows: {int(shape_table['rows'].sum())}")
        worst = shape_table["agreement_max"].max()
        if shape_table["windows_10s"].sum():
            verdict = "met" if worst <= AGREEMENT_TARGET else "MISSED"
            print(f"counter vs samples, worst window >= 10 s: {worst:.2%} "
                  f"(target <= {AGREEMENT_TARGET:.0%}: {verdict})")
        print("\nregressions fitted to these tables (5-fold grouped CV):")
        print(fits(paths).to_string(index=False))
    for line in failed:
        print(f"failed: {line}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
