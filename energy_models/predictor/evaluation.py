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

from energy_models.analytical.fit import mdape
from energy_models.predictor.model import (
    INTERVAL_QUANTILES,
    PREDICTED_TARGETS,
    PREDICTOR_FORMS,
    Calibration,
    Predictor,
    analytical_targets,
    fit_constants,
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
    """Per row, every form's prediction of every target (``<target>:<form>``) and the
    analytical model's (``<target>:analytical``), each from the fold that held the row out."""
    out = pd.DataFrame(index=rows.index, dtype=float)
    for name, test in folds(rows, split):
        train = rows.loc[~test]
        held = rows.loc[test]
        progress(f"{SPLITS[split]}: {name}")
        missing = set(held["engine"]) - set(train["engine"])
        if missing:
            raise ValueError(f"fold {name} holds out every row of stack {sorted(missing)[0]}")
        constants = fit_constants(train)
        for form in PREDICTOR_FORMS:
            predictor = Predictor.fit(train, dict.fromkeys(PREDICTED_TARGETS, form),
                                      constants=constants)
            predicted = predictor.predict(held)
            for target in PREDICTED_TARGETS:
                out.loc[test, f"{target}:{form}"] = predicted[target].to_numpy()
        analytical = analytical_targets(held, predictor.constants)
        for target in PREDICTED_TARGETS:
            out.loc[test, f"{target}:analytical"] = analytical[target].to_numpy()
    return out


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
    base = wattgpu_baselines(rows)
    table = []
    for target in PREDICTED_TARGETS:
        measured = rows[target].to_numpy(float)
        ours = oof[f"{target}:{forms[target]}"].to_numpy(float)
        methods = {f"ours ({forms[target]})": ours}
        methods.update({f"ours ({form}, not kept)": oof[f"{target}:{form}"].to_numpy(float)
                        for form in PREDICTOR_FORMS if form != forms[target]})
        methods["analytical"] = oof[f"{target}:analytical"].to_numpy(float)
        methods.update({column: base[column].to_numpy(float)
                        for column in BASELINE_COLUMNS[target]})
        our_error = mdape(ours, measured)
        for method, predicted in methods.items():
            error = mdape(predicted, measured)
            tau_gpu, groups_gpu = mean_kendall(rows, predicted, target, "gpu")
            tau_llm, groups_llm = mean_kendall(rows, predicted, target, "llm")
            table.append({
                "target": target, "method": method, "mdape_pct": error,
                "pearson_r": float(pearsonr(predicted, measured).statistic),
                "kendall_gpu": tau_gpu, "gpu_groups": groups_gpu,
                "kendall_llm": tau_llm, "llm_groups": groups_llm,
                "error_ratio": error / our_error,
            })
    return pd.DataFrame(table)


def choose_forms(rows: pd.DataFrame, logo: pd.DataFrame) -> dict[str, str]:
    """Per target, the form with the lower leave-one-GPU-out MdAPE."""
    return {target: min(PREDICTOR_FORMS,
                        key=lambda form: mdape(logo[f"{target}:{form}"], rows[target]))
            for target in PREDICTED_TARGETS}


def residual_intervals(rows: pd.DataFrame, oof: dict[str, pd.DataFrame],
                       forms: dict[str, str]) -> dict[str, dict[str, tuple[float, float]]]:
    """Per kind of unseen and target, quantiles of log(measured / out-of-fold prediction)."""
    lo, hi = INTERVAL_QUANTILES
    intervals = {}
    for split, predicted in oof.items():
        intervals[split] = {}
        for target in PREDICTED_TARGETS:
            log_ratio = np.log(rows[target].to_numpy(float)
                               / predicted[f"{target}:{forms[target]}"].to_numpy(float))
            intervals[split][target] = (float(np.quantile(log_ratio, lo)),
                                        float(np.quantile(log_ratio, hi)))
    return intervals


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
        "data": "ML.ENERGY leaderboard v1 (HF, batch 1) and v2 (vLLM 0.5.4)",
        "rows": len(rows),
        "rows_per_stack_and_gpu": {f"{engine} {device}": int(n) for (engine, device), n
                                   in rows.groupby(["engine", "device"]).size().items()},
        "stacks": {engine: asdict(STACKS[engine]) for engine in sorted(rows["engine"].unique())},
        "interval": f"{INTERVAL_QUANTILES[0]:.0%}-{INTERVAL_QUANTILES[1]:.0%} quantiles of "
                    "out-of-fold log(measured / predicted)",
        "mdape_pct": {split: {target: round(mdape(oof[split][f"{target}:{forms[target]}"],
                                                  rows[target]), 2) for target in PREDICTED_TARGETS}
                      for split in SPLITS},
    }
    progress("fitting on all rows")
    predictor = Predictor.fit(rows, forms, residual_intervals(rows, oof, forms), provenance)
    return predictor, oof, forms
