"""The unseen-GPU/LLM predictor against WattGPU's physical baselines, on ML.ENERGY v1 and v2.

    python benchmarks/predictor_accuracy.py [--data ../shared/data] [--splits pair,gpu,llm]
                                            [--repeats 20] [--write]

Prints, per split (unseen pair, leave one GPU out, leave one LLM out) and target (power per
GPU, ITL, energy per output token): MdAPE, Pearson r, mean Kendall tau of the GPU and LLM
rankings, and each method's MdAPE / ours. Then the issue's targets, and few-shot calibration
(3 points of one GPU) on held-out GPUs of the same stack. ``--write`` refits the shipped
predictor (energy_models/data/predictor.json.gz; needs all three splits). Skips (exit 0) when
the shared data is absent.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import pandas as pd

from energy_models.io import write_atomic
from energy_models.predictor.evaluation import (
    SPLITS,
    calibration_effect,
    choose_forms,
    fit_shipped_predictor,
    mdape,
    out_of_fold,
    scores,
)
from energy_models.predictor.model import PREDICTED_TARGETS, PREDICTOR_FILE, training_rows

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data"
BASELINE = {"power_w": "tdp_power_w", "itl_s": "roofline_itl_s",
            "energy_per_token_j": "roofline_energy_per_token_j"}


def _print_scores(rows: pd.DataFrame, oof: dict[str, pd.DataFrame], forms: dict[str, str]
                  ) -> dict[str, pd.DataFrame]:
    tables = {}
    for split, predicted in oof.items():
        table = scores(rows, predicted, forms)
        tables[split] = table
        print(f"\n== {SPLITS[split]} ({len(rows)} rows) ==")
        print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    return tables


def _targets(rows: pd.DataFrame, tables: dict[str, pd.DataFrame], forms: dict[str, str]) -> None:
    print("\n== the issue's targets ==")

    def value(split: str, target: str, method: str, column: str) -> float:
        table = tables[split]
        return float(table.loc[(table.target == target) & (table.method == method),
                               column].iloc[0])

    checks = []
    if "gpu" in tables:
        ours = {t: f"ours ({forms[t]})" for t in PREDICTED_TARGETS}
        jpt = value("gpu", "energy_per_token_j", ours["energy_per_token_j"], "mdape_pct")
        checks += [
            ("LOGO J/token MdAPE <= 20 %", jpt, jpt <= 20),
            ("LOGO J/token: baseline / ours >= 3",
             value("gpu", "energy_per_token_j", BASELINE["energy_per_token_j"], "error_ratio"),
             value("gpu", "energy_per_token_j", BASELINE["energy_per_token_j"],
                   "error_ratio") >= 3),
            ("LOGO power MdAPE <= 20 %", value("gpu", "power_w", ours["power_w"], "mdape_pct"),
             value("gpu", "power_w", ours["power_w"], "mdape_pct") <= 20),
            ("LOGO ITL: roofline / ours >= 2.5",
             value("gpu", "itl_s", BASELINE["itl_s"], "error_ratio"),
             value("gpu", "itl_s", BASELINE["itl_s"], "error_ratio") >= 2.5),
        ]
        for target in PREDICTED_TARGETS:
            tau = value("gpu", target, ours[target], "kendall_gpu")
            checks.append((f"LOGO Kendall tau of GPU ranking by {target} >= 0.8", tau,
                           tau >= 0.8))
    if "llm" in tables:
        for target in PREDICTED_TARGETS:
            error = value("llm", target, f"ours ({forms[target]})", "mdape_pct")
            checks.append((f"LOLO {target} MdAPE <= 15 %", error, error <= 15))
    for name, measured, met in checks:
        print(f"{'met   ' if met else 'MISSED'}  {name}: {measured:.3f}")
    print(f"targets met: {sum(met for *_, met in checks)}/{len(checks)}")


def _calibration(rows: pd.DataFrame, forms: dict[str, str], repeats: int) -> None:
    print(f"\n== few-shot calibration: 3 points of one GPU, {repeats} seeded draws; MdAPE % "
          "on a held-out GPU of the same stack ==")
    cases = []
    for stack in sorted(rows["engine"].unique()):
        stack_rows = rows["engine"] == stack
        gpus = sorted(rows.loc[stack_rows, "device"].unique())
        for calibrate in gpus:
            for held in gpus:
                if held == calibrate:
                    continue
                on = stack_rows & (rows["device"] == calibrate)
                evaluate = stack_rows & (rows["device"] == held)
                # A stack the predictor never saw: trained on the other stack only.
                other = sorted(set(rows["engine"]) - {stack})[0]
                cases.append((f"{stack} new (trained on {other})", ~stack_rows, on, evaluate,
                              other, calibrate, held))
                # A known stack, the evaluated GPU held out of training.
                cases.append((f"{stack} known, {held} held out", rows["device"] != held, on,
                              evaluate, stack, calibrate, held))
    lines = []
    for name, train, on, evaluate, stack, calibrate, held in cases:
        effect = calibration_effect(rows, train=train, calibrate_on=on, evaluate_on=evaluate,
                                    stack=stack, forms=forms, repeats=repeats)
        for r in effect.itertuples():
            lines.append({"case": name, "calibrate on": calibrate, "evaluate on": held,
                          "target": r.target, "before": r.before_pct, "after": r.after_pct,
                          "after min-max": f"{r.after_min_pct:.1f}-{r.after_max_pct:.1f}"})
    table = pd.DataFrame(lines)
    print(table.to_string(index=False, float_format=lambda v: f"{v:.1f}"))
    helped = (table["after"] < table["before"]).sum()
    print(f"calibration lowered the error in {helped}/{len(table)} (case, target) rows")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--splits", default="pair,gpu,llm",
                        help="comma-separated: pair, gpu, llm")
    parser.add_argument("--repeats", type=int, default=20,
                        help="seeded draws of calibration points (0: skip calibration)")
    parser.add_argument("--write", action="store_true", help="refit the shipped predictor")
    args = parser.parse_args(argv)
    root = args.data / "mlenergy-leaderboard-v1v2"
    if not root.is_dir():
        print(f"skipped: {root} not found")
        return 0
    splits = [s for s in args.splits.split(",") if s]
    unknown = sorted(set(splits) - set(SPLITS))
    if unknown:
        parser.error(f"--splits: unknown split {unknown[0]!r}; known: {', '.join(SPLITS)}")
    if args.write and set(splits) != set(SPLITS):
        parser.error("--write needs every split (the intervals come from all three)")
    rows = training_rows(root)
    print(f"{len(rows)} rows: " + ", ".join(
        f"{engine} {device} {n}" for (engine, device), n
        in rows.groupby(["engine", "device"]).size().items()))
    start = time.perf_counter()
    if args.write:
        predictor, oof, forms = fit_shipped_predictor(rows)
    else:
        oof = {split: out_of_fold(rows, split) for split in splits}
        forms = (choose_forms(rows, oof["gpu"]) if "gpu" in oof
                 else dict.fromkeys(PREDICTED_TARGETS, "correction"))
    print(f"forms kept (lower leave-one-GPU-out MdAPE): {forms}; "
          f"{time.perf_counter() - start:.0f} s")
    tables = _print_scores(rows, oof, forms)
    _targets(rows, tables, forms)
    if "gpu" in oof:
        by_stack = rows.assign(**{t: oof["gpu"][f"{t}:{forms[t]}"] for t in PREDICTED_TARGETS})
        print("\nleave-one-GPU-out MdAPE % per held-out GPU and stack:")
        per = [{"stack": engine, "gpu": device, "rows": len(group),
                **{t: mdape(by_stack.loc[group.index, t], group[t]) for t in PREDICTED_TARGETS}}
               for (engine, device), group in rows.groupby(["engine", "device"])]
        print(pd.DataFrame(per).to_string(index=False, float_format=lambda v: f"{v:.1f}"))
    if args.repeats > 0:
        _calibration(rows, forms, args.repeats)
    if args.write:
        target = ROOT / "energy_models" / "data" / PREDICTOR_FILE
        write_atomic(target, predictor.to_gzip())
        print(f"wrote {target} ({target.stat().st_size / 1e3:.0f} kB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
