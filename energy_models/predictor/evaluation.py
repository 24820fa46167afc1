"""How well the predictor generalises: unseen (LLM, GPU) pairs, unseen GPUs, unseen LLMs.

Every fold refits the whole predictor (the analytical constants included) on the other rows,
so a held-out GPU's or LLM's own measurements never shape its prediction. Both forms of every
target are fitted in each fold, so the form kept is the one that generalised better.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import asdict

import numpy as np
import pandas as pd
from scipy.stats import kendalltau, pearsonr

from energy_models.analytical.fit import TP_OVERHEAD_DONOR, mdape
from energy_models.predictor.model import (
    INTERVAL_QUANTILES,
    PREDICTED_TARGETS,
    PREDICTOR_FORMS,
    Calibration,
    Predictor,
    fit_constants,
    interval_key,
    wattgpu_baselines,
)
from energy_models.stacks import STACKS

SPLITS = {"pair": "unseen (LLM, GPU) pair", "gpu": "leave one GPU out",
          "llm": "leave one LLM out"}
PAIR_FOLDS = 5
BASELINE_COLUMNS = {"power_w": ("tdp_power_w",),
                    "itl_s": ("roofline_itl_s", "roofline_kv_itl_s"),
                    "energy_per_token_j": ("roofline_energy_per_token_j",
                                           "roofline_kv_energy_per_token_j")}
RANK_GROUPS = {"gpu": ("llm", "engine", "config", "tp"),
               "llm": ("device", "engine", "config", "tp")}
"""A ranking of GPUs compares them for one LLM in one scenario, and the other way round."""


def folds(rows: pd.DataFrame, split: str) -> Iterator[tuple[str, np.ndarray]]:
    """(name, test mask) per fold; pairs are dealt into PAIR_FOLDS folds in a fixed order."""
    if split == "pair":
        pairs = (rows["llm"] + " @ " + rows["device"]).to_numpy()
        names = np.array(sorted(set(pairs)))
        fold_of = {name: i % PAIR_FOLDS for i, name in enumerate(names)}
        assigned = np.array([fold_of[p] for p in pairs])
        for i in range(PAIR_FOLDS):
            yield f"pair fold {i + 1}", assigned == i
        return
    column = {"gpu": "device", "llm": "llm"}[split]
    for name in sorted(rows[column].unique()):
        yield name, (rows[column] == name).to_numpy()


def out_of_fold(rows: pd.DataFrame, split: str,
                progress: Callable[[str], None] = lambda message: None) -> pd.DataFrame:
    """Per row, every form's prediction of every target (``<target>:<form>``; the
    ``analytical`` form is the analytical model alone), each from the fold that held the row
    out."""
    out = pd.DataFrame(index=rows.index, dtype=float)
    everything = fit_constants(rows)
    for name, test in folds(rows, split):
        train = rows.loc[~test]
        touched = set(rows.loc[test, "engine"])
        # A stack whose every row is held out has no constants: its rows stay unpredicted.
        test = test & rows["engine"].isin(set(train["engine"])).to_numpy()
        held = rows.loc[test]
        progress(f"{SPLITS[split]}: {name}")
        if held.empty:
            continue
        touched |= {stack for stack, donor in TP_OVERHEAD_DONOR.items() if donor in touched}
        constants = fit_constants(train, {stack: c for stack, c in everything.items()
                                          if stack not in touched})
        for form in PREDICTOR_FORMS:
            predictor = Predictor.fit(train, dict.fromkeys(PREDICTED_TARGETS, form),
                                      constants=constants)
            predicted = predictor.predict(held)
            for target in PREDICTED_TARGETS:
                out.loc[test, f"{target}:{form}"] = predicted[target].to_numpy()
    return out


def winner_accuracy(rows: pd.DataFrame, predicted: np.ndarray, target: str) -> tuple[float, int]:
    """Share of GPU pairs, same LLM and scenario (RANK_GROUPS["gpu"]), whose lower-``target``
    GPU the prediction names; and how many pairs."""
    scored = rows.assign(_predicted=np.asarray(predicted))
    right = pairs = 0
    for _, group in scored.groupby(list(RANK_GROUPS["gpu"]), sort=True):
        if group["device"].nunique() < 2:
            continue
        measured = group[target].to_numpy(float)
        guess = group["_predicted"].to_numpy(float)
        devices = group["device"].to_numpy()
        a, b = np.triu_indices(len(group), k=1)
        other = devices[a] != devices[b]
        right += int(np.sum((np.sign(measured[a] - measured[b])
                             == np.sign(guess[a] - guess[b]))[other]))
        pairs += int(other.sum())
    return (right / pairs if pairs else float("nan")), pairs


def scored_mdape(predicted: pd.Series, measured: pd.Series) -> float:
    """MdAPE over the rows that have an out-of-fold prediction."""
    at = predicted.notna()
    return mdape(predicted[at], measured[at])


def mean_kendall(rows: pd.DataFrame, predicted: np.ndarray, target: str, ranked: str
                 ) -> tuple[float, int]:
    """Mean Kendall tau-b between predicted and measured rankings of GPUs (``ranked='gpu'``)
    or LLMs within each group that has at least two of them; and how many groups."""
    taus = []
    scored = rows.assign(_predicted=np.asarray(predicted))
    for _, group in scored.groupby(list(RANK_GROUPS[ranked]), sort=True):
        if group[{"gpu": "device", "llm": "llm"}[ranked]].nunique() < 2:
            continue
        tau = kendalltau(group["_predicted"], group[target]).statistic
        if np.isfinite(tau):
            taus.append(tau)
    return (float(np.mean(taus)) if taus else float("nan")), len(taus)


def scores(rows: pd.DataFrame, oof: pd.DataFrame, forms: dict[str, str]) -> pd.DataFrame:
    """One row per (target, method): MdAPE, Pearson r, GPU- and LLM-ranking Kendall tau, and
    the ratio of each baseline's MdAPE to ours."""
    scored = oof.notna().all(axis=1).to_numpy()
    rows, oof = rows.loc[scored], oof.loc[scored]
    base = wattgpu_baselines(rows)
    table = []
    for target in PREDICTED_TARGETS:
        measured = rows[target].to_numpy(float)
        ours = oof[f"{target}:{forms[target]}"].to_numpy(float)
        methods = {f"ours ({forms[target]})": ours}
        methods.update({f"ours ({form}, not kept)": oof[f"{target}:{form}"].to_numpy(float)
                        for form in PREDICTOR_FORMS if form != forms[target]})
        methods.update({column: base[column].to_numpy(float)
                        for column in BASELINE_COLUMNS[target]})
        our_error = mdape(ours, measured)
        for method, predicted in methods.items():
            error = mdape(predicted, measured)
            tau_gpu, groups_gpu = mean_kendall(rows, predicted, target, "gpu")
            tau_llm, groups_llm = mean_kendall(rows, predicted, target, "llm")
            winners, pairs = winner_accuracy(rows, predicted, target)
            table.append({
                "target": target, "method": method, "rows": len(rows), "mdape_pct": error,
                "pearson_r": float(pearsonr(predicted, measured).statistic),
                "kendall_gpu": tau_gpu, "gpu_groups": groups_gpu,
                "kendall_llm": tau_llm, "llm_groups": groups_llm,
                "gpu_winner_acc": winners, "gpu_pairs": pairs,
                "error_ratio": error / our_error,
            })
    return pd.DataFrame(table)


RANKING_SLACK = 0.02
"""Forms whose pairwise GPU-winner accuracy is within this of the best rank alike."""


def choose_forms(rows: pd.DataFrame, logo: pd.DataFrame) -> dict[str, str]:
    """Per target, by leave-one-GPU-out: among the forms that pick the measured winner of GPU
    pairs about as often as the best (RANKING_SLACK), the one with the lowest MdAPE. Ranking
    first: a planner that prefers the wrong GPU loses more than a few percent of error."""
    scored = logo.notna().all(axis=1).to_numpy()
    rows, logo = rows.loc[scored], logo.loc[scored]
    forms = {}
    for target in PREDICTED_TARGETS:
        accuracy = {form: winner_accuracy(rows, logo[f"{target}:{form}"], target)[0]
                    for form in PREDICTOR_FORMS}
        best = max(accuracy.values())
        ranked = [f for f in PREDICTOR_FORMS if not accuracy[f] < best - RANKING_SLACK]
        forms[target] = min(ranked or PREDICTOR_FORMS,
                            key=lambda form: mdape(logo[f"{target}:{form}"], rows[target]))
    return forms


def _log_ratio(rows: pd.DataFrame, predicted: pd.DataFrame, target: str,
               form: str) -> np.ndarray:
    return np.log(rows[target].to_numpy(float) / predicted[f"{target}:{form}"].to_numpy(float))


def conformal_bounds(log_ratio: np.ndarray) -> tuple[float, float]:
    """Split-conformal bounds of log(measured / predicted) for INTERVAL_QUANTILES: the lower
    one the order statistic at rank floor((n + 1) q_low), the upper one at rank
    ceil((n + 1) q_high), so a new exchangeable row falls below the lower bound with
    probability at most q_low and above the upper one at most 1 - q_high."""
    values = np.sort(log_ratio[np.isfinite(log_ratio)])
    n = len(values)
    lo, hi = INTERVAL_QUANTILES
    low_rank = max(int(np.floor((n + 1) * lo)), 1)
    high_rank = min(int(np.ceil((n + 1) * hi)), n)
    return float(values[low_rank - 1]), float(values[high_rank - 1])


def residual_intervals(rows: pd.DataFrame, oof: dict[str, pd.DataFrame],
                       forms: dict[str, str]) -> dict[str, dict[str, tuple[float, float]]]:
    """Per kind of unseen (split) and stack (``interval_key``) and per target, conformal
    bounds of log(measured / out-of-fold prediction): the residuals of that kind of
    generalisation on that stack, nothing else."""
    intervals = {}
    for split, predicted in oof.items():
        for engine in sorted(rows["engine"].unique()):
            at = (rows["engine"] == engine).to_numpy()
            intervals[interval_key(split, engine)] = {
                target: conformal_bounds(_log_ratio(rows[at], predicted[at], target,
                                                    forms[target]))
                for target in PREDICTED_TARGETS}
    return intervals


def interval_coverage(rows: pd.DataFrame, oof: dict[str, pd.DataFrame],
                      forms: dict[str, str]) -> pd.DataFrame:
    """How often held-out rows fall inside intervals calibrated without them: per split, stack
    and fold, the bounds come from the same stack's residuals in the other folds only
    (cross-conformal). One row per (split, stack, target) with the covered share; the nominal
    share is the quantile gap."""
    lines = []
    for split, predicted in oof.items():
        scored = predicted.notna().all(axis=1).to_numpy()
        for engine in sorted(rows["engine"].unique()):
            stack = (rows["engine"] == engine).to_numpy() & scored
            for target in PREDICTED_TARGETS:
                log_ratio = _log_ratio(rows, predicted, target, forms[target])
                inside = []
                for _, test in folds(rows, split):
                    held, calibration = test & stack, ~test & stack
                    if held.any() and calibration.any():
                        low, high = conformal_bounds(log_ratio[calibration])
                        inside.extend((log_ratio[held] >= low) & (log_ratio[held] <= high))
                if inside:
                    lines.append({"split": split, "stack": engine, "target": target,
                                  "rows": len(inside), "coverage": float(np.mean(inside))})
    return pd.DataFrame(lines)


def calibration_effect(rows: pd.DataFrame, *, train: pd.Series, calibrate_on: pd.Series,
                       evaluate_on: pd.Series, stack: str, forms: dict[str, str] | None = None,
                       points: int = 3, repeats: int = 20, seed: int = 0) -> pd.DataFrame:
    """MdAPE on ``evaluate_on`` rows before and after calibrating with ``points`` rows drawn
    from ``calibrate_on`` (``repeats`` seeded draws; median, min and max over draws)."""
    predictor = Predictor.fit(rows.loc[train], forms)
    held = rows.loc[evaluate_on]
    before = predictor.predict(held.assign(engine=stack))
    pool = rows.loc[calibrate_on]
    rng = np.random.default_rng(seed)
    after = {target: [] for target in PREDICTED_TARGETS}
    for _ in range(repeats):
        chosen = pool.iloc[np.sort(rng.choice(len(pool), size=points, replace=False))]
        measured = chosen.assign(
            energy_j=chosen["energy_per_token_j"] * chosen["output_tokens"],
            runtime_s=chosen["itl_s"] * chosen["output_tokens"],
            mean_power_w=chosen["power_w"] * chosen["tp"])
        calibration = Calibration.fit(predictor, measured, stack)
        calibrated = calibration.apply(before)
        for target in PREDICTED_TARGETS:
            after[target].append(mdape(calibrated[target], held[target]))
    return pd.DataFrame([{
        "target": target, "before_pct": mdape(before[target], held[target]),
        "after_pct": float(np.median(after[target])), "after_min_pct": min(after[target]),
        "after_max_pct": max(after[target]),
    } for target in PREDICTED_TARGETS])


def fit_shipped_predictor(rows: pd.DataFrame, progress: Callable[[str], None] = lambda message: None
                ) -> tuple[Predictor, dict[str, pd.DataFrame], dict[str, str]]:
    """The shipped predictor: forms chosen by leave-one-GPU-out, intervals from every split's
    out-of-fold residuals, then one fit on all rows. Also returns the out-of-fold predictions
    per split and the forms kept."""
    oof = {split: out_of_fold(rows, split, progress) for split in SPLITS}
    forms = choose_forms(rows, oof["gpu"])
    provenance = {
        "data": "ML.ENERGY leaderboard v1 (HF, batch 1), v2 (vLLM 0.5.4), v3 (vLLM 0.11.1, H100) "
                "and PowerTrace steady windows (vLLM 0.10.1)",
        "rows": len(rows),
        "rows_per_stack_and_gpu": {f"{engine} {device}": int(n) for (engine, device), n
                                   in rows.groupby(["engine", "device"]).size().items()},
        "stacks": {engine: asdict(STACKS[engine]) for engine in sorted(rows["engine"].unique())},
        "interval": f"{INTERVAL_QUANTILES[0]:.0%}-{INTERVAL_QUANTILES[1]:.0%} quantiles of "
                    "out-of-fold log(measured / predicted)",
        "mdape_pct": {split: {target: round(scored_mdape(oof[split][f"{target}:{forms[target]}"],
                                                         rows[target]), 2)
                              for target in PREDICTED_TARGETS}
                      for split in SPLITS},
    }
    progress("fitting on all rows")
    predictor = Predictor.fit(rows, forms, residual_intervals(rows, oof, forms), provenance)
    return predictor, oof, forms
