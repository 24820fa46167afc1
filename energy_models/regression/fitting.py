"""Fit every regression form per (llm, device, tp, engine), select by grouped cross-validation,
and refuse fits below an R² gate; save and load the result as JSON.

A pair's model for a target is the form with the lowest cross-validated MAPE (the simplest
among near-ties) among those whose cross-validated R² reaches the gate and whose predictions
stay non-negative on the measured domain. When no form qualifies the fit is *refused*: it is
kept in the file with its reason, and the cost chain prices that pair from the next source.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
import pandas as pd
from pydantic import ConfigDict, Field, model_validator

from energy_models.errors import DomainWarning, ModelFileError
from energy_models.inputs import StrictModel, field_error, load_json, validate
from energy_models.measurements.schema import ENERGY_KINDS, MAX_TP, PAIR_KEY, Measurements
from energy_models.regression.defaults import DEFAULT_FOLDS, DEFAULT_GATE_R2


def finite_or_none(value: float | None, digits: int = 6) -> float | None:
    """``value`` rounded to ``digits`` decimals, or None when missing, NaN or infinite."""
    if value is None or not np.isfinite(value):
        return None
    return round(float(value), digits)


MIN_CONFIGS = 3
TIE_MAPE = 0.01
"""Forms whose CV MAPE is within this share of the best count as tied; the simplest wins."""
REGRESSION_TARGETS = ("energy_j", "runtime_s", "ttft_s", "itl_s")
PAIR_TARGETS = ("energy_j", "runtime_s")
"""A pair is usable only when both of these pass the gate; latency targets are extras."""
FILE_FORMAT = "wattsched-models/1"
X_COLUMNS = ("input_tokens", "output_tokens", "batch")


@dataclass(frozen=True)
class Candidate:
    """How one form did on one pair and target."""

    form: str
    r2: float
    cv_r2: float
    cv_mape: float
    domain_min: float


@dataclass
class FittedModel:
    """One target of one pair: the selected form, its coefficients and its credentials."""

    llm: str
    device: str
    tp: int
    engine: str
    target: str
    form: str
    terms: tuple[str, ...]
    coef: tuple[float, ...]
    r2: float
    r2_uncentred: float
    cv_r2: float
    cv_mape: float
    rows: int
    refused: bool
    reason: str
    domain: dict[str, tuple[float, float]]
    """Measured range of input_tokens, output_tokens and batch."""
    data_hash: str
    energy_kind: str
    idle_power_w: float | None
    candidates: tuple[Candidate, ...] = ()
    _warned: bool = field(default=False, init=False, repr=False, compare=False)

    @property
    def pair(self) -> str:
        engine = f" [{self.engine}]" if self.engine else ""
        return f"{self.llm} on {self.device} tp{self.tp}{engine}"

    def inside(self, X: np.ndarray) -> np.ndarray:
        """Rows of X (input_tokens, output_tokens, batch) within the measured box."""
        lo = np.array([self.domain[c][0] for c in X_COLUMNS])
        hi = np.array([self.domain[c][1] for c in X_COLUMNS])
        slack = 1e-9 * np.maximum(1.0, np.abs(hi))
        return np.all((lo - slack <= X) & (hi + slack >= X), axis=1)

    def predict(self, X) -> np.ndarray:
        """Predictions for rows (input_tokens, output_tokens, batch); warns once per model when
        asked outside the measured domain."""
        X = np.asarray(X, dtype=float)
        if not self._warned and not self.inside(X).all():
            self._warned = True
            beyond = []
            for i, column in enumerate(X_COLUMNS):
                lo, hi = self.domain[column]
                if X[:, i].min() < lo or X[:, i].max() > hi:
                    beyond.append(f"{column} {X[:, i].min():,.0f}-{X[:, i].max():,.0f} "
                                  f"(measured {lo:,.0f}-{hi:,.0f})")
            warnings.warn(f"{self.pair}: {self.target} asked for {'; '.join(beyond)}; "
                          f"extrapolating", DomainWarning, stacklevel=2)
        from energy_models.regression.forms import design

        return design(self.terms, X) @ np.asarray(self.coef)

    def to_dict(self) -> dict:
        body = asdict(self)
        body.pop("_warned")
        body["domain"] = {k: list(v) for k, v in self.domain.items()}
        return body


def _pair_hash(rows: pd.DataFrame) -> str:
    return Measurements(rows).digest()


def _cross_validate(form: str, X: np.ndarray, y: np.ndarray, splits) -> np.ndarray | None:
    """Out-of-fold predictions, or None when a fold has fewer rows than the form has terms."""
    from sklearn.base import clone

    from energy_models.regression.forms import REGRESSION_FORMS

    estimator = REGRESSION_FORMS[form](batch_terms=X[:, 2].min() != X[:, 2].max())
    oof = np.empty_like(y)
    for train, test in splits:
        if len(train) < len(estimator.terms()):
            return None
        oof[test] = clone(estimator).fit(X[train], y[train]).predict(X[test])
    return oof


def fit_target(rows: pd.DataFrame, target: str, *, gate: float = DEFAULT_GATE_R2,
               folds: int = DEFAULT_FOLDS, seed: int = 0) -> FittedModel:
    """Select, fit and gate one target of one pair (rows share PAIR_KEY)."""
    # scikit-learn and the forms only where fitting happens: planning with fitted models
    # (and the command line) need neither.
    from sklearn.metrics import r2_score
    from sklearn.model_selection import GroupKFold

    from energy_models.regression.forms import REGRESSION_FORMS, domain_minimum, uncentred_r2

    rows = rows.loc[rows[target].notna()].sort_values([*list(X_COLUMNS), "config"], kind="stable")
    first = rows.iloc[0]
    X = rows.loc[:, list(X_COLUMNS)].to_numpy(float)
    y = rows[target].to_numpy(float)
    domain = {c: (float(rows[c].min()), float(rows[c].max())) for c in X_COLUMNS}
    kinds = sorted(set(rows["energy_kind"]))
    idle = rows["idle_power_w"].median()
    base = {
        "llm": first.llm, "device": first.device, "tp": int(first.tp), "engine": first.engine,
        "target": target, "rows": len(rows), "domain": domain, "data_hash": _pair_hash(rows),
        "energy_kind": kinds[0], "idle_power_w": None if np.isnan(idle) else float(idle),
    }

    def refused(reason: str, candidates: tuple[Candidate, ...] = ()) -> FittedModel:
        return FittedModel(form="", terms=(), coef=(), r2=np.nan, r2_uncentred=np.nan,
                           cv_r2=np.nan, cv_mape=np.nan, refused=True, reason=reason,
                           candidates=candidates, **base)

    if target == "energy_j" and len(kinds) > 1:
        return refused("mixes gross and idle-subtracted energy; fit them separately")
    groups = rows["config"].to_numpy()
    n_configs = len(set(groups))
    if n_configs < MIN_CONFIGS:
        return refused(f"only {n_configs} distinct configuration(s); cross-validation needs "
                       f"at least {MIN_CONFIGS}")
    splits = list(GroupKFold(n_splits=min(folds, n_configs), shuffle=True,
                             random_state=seed).split(X, y, groups))
    candidates, fitted = [], {}
    for form in REGRESSION_FORMS:
        # Overflowing numbers leave a form unfittable or its scores non-finite: it drops out.
        with np.errstate(all="ignore"):
            try:
                oof = _cross_validate(form, X, y, splits)
                if oof is None:
                    continue
                batch_terms = domain["batch"][0] != domain["batch"][1]
                estimator = REGRESSION_FORMS[form](batch_terms=batch_terms).fit(X, y)
                in_sample = estimator.predict(X)
            except (np.linalg.LinAlgError, ValueError):
                continue
            if not (np.all(np.isfinite(oof)) and np.all(np.isfinite(in_sample))):
                continue
            candidate = Candidate(
                form=form, r2=float(r2_score(y, in_sample)), cv_r2=float(r2_score(y, oof)),
                cv_mape=float(np.mean(np.abs(oof - y) / y) * 100),
                domain_min=domain_minimum(estimator.terms_, estimator.coef_,
                                          domain["input_tokens"], domain["output_tokens"],
                                          domain["batch"]))
        if not all(np.isfinite([candidate.r2, candidate.cv_r2, candidate.cv_mape])):
            continue
        fitted[form] = estimator
        candidates.append(candidate)
    if not candidates:
        return refused(f"no form can be fitted: {len(rows)} rows are too few under "
                       f"{len(splits)}-fold cross-validation, or their numbers overflow")
    candidates = tuple(candidates)
    eligible = [c for c in candidates if c.cv_r2 >= gate and c.domain_min >= 0]
    best_r2 = max(candidates, key=lambda c: c.cv_r2)
    if eligible:
        # Of forms within 1% of the best CV MAPE, the one with fewest terms.
        best = min(c.cv_mape for c in eligible)
        chosen = min((c for c in eligible if c.cv_mape <= best * (1 + TIE_MAPE) + 1e-9),
                     key=lambda c: (len(fitted[c.form].terms_), c.cv_mape))
        reason = ""
    elif best_r2.cv_r2 < gate:
        chosen = best_r2
        reason = f"best CV R² {best_r2.cv_r2:.3f} ({best_r2.form}) is below the gate {gate:g}"
    else:
        chosen = best_r2
        reason = (f"every form reaching CV R² {gate:g} predicts negative {target} on the "
                  f"measured domain")
    estimator = fitted[chosen.form]
    return FittedModel(
        form=chosen.form, terms=tuple(estimator.terms_),
        coef=tuple(float(c) for c in estimator.coef_), r2=chosen.r2,
        r2_uncentred=uncentred_r2(y, estimator.predict(X)), cv_r2=chosen.cv_r2,
        cv_mape=chosen.cv_mape, refused=bool(reason), reason=reason, candidates=candidates,
        **base,
    )


@dataclass
class FittedModels:
    """Every fitted (and refused) model of a data set, and how they were made."""

    models: list[FittedModel]
    gate: float
    folds: int
    seed: int
    data_hash: str
    data_rows: int

    def usable(self, llm: str, device: str, tp: int,
               engine: str) -> tuple[dict[str, FittedModel], str]:
        """Accepted models by target for one pair, preferring ``engine``; or the reason none."""
        matches = [m for m in self.models if (m.llm, m.device, m.tp) == (llm, device, tp)]
        if not matches:
            measured = sorted({m.tp for m in self.models if (m.llm, m.device) == (llm, device)})
            return {}, (f"tp {tp} not measured (measured: tp {', '.join(map(str, measured))})"
                        if measured else "not measured")
        engines = sorted({m.engine for m in matches}, key=lambda e: (e != engine, e))
        reasons = []
        for candidate in engines:
            by_target = {m.target: m for m in matches if m.engine == candidate and not m.refused}
            if all(t in by_target for t in PAIR_TARGETS):
                return by_target, ""
            reasons += [f"{m.target} fit refused: {m.reason}" for m in matches
                        if m.engine == candidate and m.refused and m.target in PAIR_TARGETS]
        return {}, "; ".join(reasons)

    def summary_rows(self) -> list[dict]:
        """One flat record per fitted or refused model, numbers finite or None."""
        return [{
            "llm": m.llm, "device": m.device, "tp": m.tp, "engine": m.engine,
            "target": m.target, "form": m.form or None, "r2": finite_or_none(m.r2),
            "r2_uncentred": finite_or_none(m.r2_uncentred), "cv_r2": finite_or_none(m.cv_r2),
            "cv_mape": finite_or_none(m.cv_mape), "rows": m.rows, "refused": m.refused,
            "reason": m.reason,
        } for m in self.models]

    def to_json(self) -> str:
        body = {
            "format": FILE_FORMAT, "gate_r2": self.gate, "folds": self.folds, "seed": self.seed,
            "data": {"hash": self.data_hash, "rows": self.data_rows},
            "models": [m.to_dict() for m in self.models],
        }
        return json.dumps(body, indent=1, sort_keys=True, allow_nan=True) + "\n"

    @classmethod
    def load(cls, path: str | Path) -> FittedModels:
        """A file written by ``to_json``; errors name the file and the field."""
        def error(field: str, problem: str) -> ModelFileError:
            return ModelFileError(f"{path}: {field}: {problem}; write the file with "
                                  f"`wattsched fit DATA --out {Path(path).name}`")

        body = load_json(path, error)
        if not isinstance(body, dict) or body.get("format") != FILE_FORMAT:
            raise error("format", f"expected {FILE_FORMAT!r}")
        file = validate(_ModelsFile, body, error)
        models = [FittedModel(**m.model_dump(exclude={"candidates"}),
                              candidates=tuple(Candidate(**c.model_dump()) for c in m.candidates))
                  for m in file.models]
        return cls(models, file.gate_r2, file.folds, file.seed, file.data.hash, file.data.rows)


Finite = Annotated[float, Field(allow_inf_nan=False)]


class _CandidateBody(StrictModel):
    """Scores may be NaN (a form with no score); coefficients and domains may not."""

    model_config = ConfigDict(allow_inf_nan=True)
    form: str
    r2: float
    cv_r2: float
    cv_mape: float
    domain_min: float


class _ModelBody(StrictModel):
    """One FittedModel as ``to_dict`` writes it."""

    model_config = ConfigDict(allow_inf_nan=True)
    llm: str
    device: str
    tp: Annotated[int, Field(ge=1, le=MAX_TP)]
    engine: str
    target: Literal[REGRESSION_TARGETS]
    form: str
    terms: tuple[str, ...]
    coef: tuple[Finite, ...]
    r2: float
    r2_uncentred: float
    cv_r2: float
    cv_mape: float
    rows: Annotated[int, Field(ge=0)]
    refused: bool
    reason: str
    domain: dict[Literal["input_tokens", "output_tokens", "batch"], tuple[Finite, Finite]]
    data_hash: str
    energy_kind: Literal[ENERGY_KINDS]
    idle_power_w: Annotated[Finite, Field(gt=0)] | None
    candidates: tuple[_CandidateBody, ...] = ()

    @model_validator(mode="after")
    def _usable(self) -> _ModelBody:
        from energy_models.regression.forms import REGRESSION_FORMS

        if not self.refused and (self.form not in REGRESSION_FORMS
                                 or len(self.terms) != len(self.coef)
                                 or set(self.domain) != set(X_COLUMNS)):
            known = ", ".join(REGRESSION_FORMS)
            raise field_error("form", f"an accepted fit needs a known form ({known}), "
                                      f"one coefficient per term and a domain over "
                                      f"{', '.join(X_COLUMNS)}")
        return self


class _DataBody(StrictModel):
    hash: str
    rows: Annotated[int, Field(ge=0)]


class _ModelsFile(StrictModel):
    format: str
    gate_r2: Annotated[float, Field(gt=0, le=1)]
    folds: Annotated[int, Field(ge=2)]
    seed: int
    data: _DataBody
    models: tuple[_ModelBody, ...]


def fit_all(measurements: Measurements, *, gate: float = DEFAULT_GATE_R2,
            folds: int = DEFAULT_FOLDS, seed: int = 0,
            progress: Callable[[str], None] = lambda message: None) -> FittedModels:
    """Every target with data, for every pair in the measurements."""
    table = measurements.table
    models = []
    for key, rows in table.groupby(list(PAIR_KEY), sort=True):
        progress(f"fitting {key[0]} on {key[1]} tp{key[2]}")
        for target in REGRESSION_TARGETS:
            if rows[target].notna().any():
                models.append(fit_target(rows, target, gate=gate, folds=folds, seed=seed))
    return FittedModels(models, gate, folds, seed, measurements.digest(), len(table))
