"""Regressions of a request's energy or runtime on its input tokens m and output tokens n.

Every form is a scikit-learn estimator (hyperparameters in the constructor, fitted state in
trailing-underscore attributes), linear in its coefficients over a few polynomial terms of
(m, n), so each works with ``clone``, ``GroupKFold`` and ``cross_val_predict``. ``X`` has
columns (input_tokens, output_tokens) and optionally batch; ``batch_terms`` adds n/B, the
per-request share of a decode step's fixed memory traffic when B requests share each step, and
n·B, the growth of a request's decode time with the sequences sharing each step.

========================  ==========================================  =========================
form                      terms                                       fitted by
========================  ==========================================  =========================
``paper``                 m, n, m·n (no intercept; Wilkins et al.)    least squares
``linear``                1, m, n                                     least squares
``interaction``           1, m, n, m·n                                least squares
``quadratic``             1, m, n, m², m·n, n²                        least squares
``quadratic_rel``         1, m, n, m², m·n, n²                        least *relative* squares,
                                                                      non-negative on its domain
``sweetspot``             1, m, m², n, m·n, n² (SweetSpot)            least relative squares,
                                                                      coefficients >= 0
``sweetspot_nocache``     sweetspot + m²·n, m·n², n³                  least relative squares,
                                                                      coefficients >= 0
========================  ==========================================  =========================

``sweetspot_nocache`` is SweetSpot's derivation for engines that run without a KV cache (the
Wilkins et al. measurements): each decode step recomputes the whole sequence, so summing the
per-step work over (m + t) and (m + t)² for t < n adds the cubic terms.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize, nnls
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.utils.validation import check_is_fitted

TERMS = {
    "1": lambda m, n, b: np.ones_like(m),
    "m": lambda m, n, b: m,
    "n": lambda m, n, b: n,
    "m2": lambda m, n, b: m * m,
    "mn": lambda m, n, b: m * n,
    "n2": lambda m, n, b: n * n,
    "m2n": lambda m, n, b: m * m * n,
    "mn2": lambda m, n, b: m * n * n,
    "n3": lambda m, n, b: n * n * n,
    "n/b": lambda m, n, b: n / b,
    "nb": lambda m, n, b: n * b,
}
BATCH_TERMS = ("n/b", "nb")
BATCH_GRID = 33
"""Batch sizes at which non-negativity is checked when batch varies."""
# The cutting-plane search for the non-negative relative quadratic stops after this many cuts.
MAX_CUTS = 60


def split_x(X) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(m, n, batch) columns of X; batch is 1 where X has two columns."""
    X = np.asarray(X, dtype=float)
    if X.ndim != 2 or X.shape[1] not in (2, 3):
        raise ValueError("X needs columns input_tokens, output_tokens[, batch]")
    batch = X[:, 2] if X.shape[1] == 3 else np.ones(len(X))
    return X[:, 0], X[:, 1], batch


def design(terms: tuple[str, ...], X) -> np.ndarray:
    m, n, b = split_x(X)
    return np.column_stack([TERMS[t](m, n, b) for t in terms])


def uncentred_r2(y: np.ndarray, pred: np.ndarray) -> float:
    """1 - SSE / sum(y²): what statsmodels reports for a model without a constant."""
    return float(1.0 - np.sum((y - pred) ** 2) / np.sum(y**2))


def _scaled_lstsq(A: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Least squares with columns scaled to unit max, for terms spanning 1 to 10^7."""
    scale = np.max(np.abs(A), axis=0)
    scale[scale == 0] = 1.0
    coef, *_ = np.linalg.lstsq(A / scale, y, rcond=None)
    return coef / scale


def quadratic_parts(terms: tuple[str, ...], coef: np.ndarray, batch: float) -> np.ndarray:
    """(k0, km, kn, kmm, kmn, knn) of the fitted function of (m, n) at one batch size."""
    probe = np.array([[0, 0], [1, 0], [0, 1], [2, 0], [1, 1], [0, 2]], dtype=float)
    X = np.column_stack([probe, np.full(len(probe), batch)])
    v = design(terms, X) @ coef
    kmm = (v[3] - 2 * v[1] + v[0]) / 2
    knn = (v[5] - 2 * v[2] + v[0]) / 2
    km = v[1] - v[0] - kmm
    kn = v[2] - v[0] - knn
    kmn = v[4] - v[0] - km - kn - kmm - knn
    return np.array([v[0], km, kn, kmm, kmn, knn])


def box_minimum(parts: np.ndarray, m_range: tuple[float, float],
                n_range: tuple[float, float]) -> tuple[float, float, float]:
    """Exact minimum of a quadratic in (m, n) over a box: (value, m, n)."""
    k0, km, kn, kmm, kmn, knn = parts

    def q(m: float, n: float) -> float:
        return k0 + km * m + kn * n + kmm * m * m + kmn * m * n + knn * n * n

    candidates = [(m, n) for m in m_range for n in n_range]
    # Vertices of tiny curvatures overflow to inf and fall outside the box below.
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        for m in m_range:  # edges at fixed m: vertex in n
            if knn > 0:
                candidates.append((m, -(kn + kmn * m) / (2 * knn)))
        for n in n_range:
            if kmm > 0:
                candidates.append((-(km + kmn * n) / (2 * kmm), n))
        det = 4 * kmm * knn - kmn * kmn
        if det > 0 and kmm > 0:
            candidates.append(((-2 * knn * km + kmn * kn) / det,
                               (-2 * kmm * kn + kmn * km) / det))
    inside = [(m, n) for m, n in candidates
              if m_range[0] <= m <= m_range[1] and n_range[0] <= n <= n_range[1]]
    value, m, n = min((q(m, n), m, n) for m, n in inside)
    return float(value), float(m), float(n)


def batch_grid(b_range) -> np.ndarray:
    """The batch sizes a box over batch is checked at: both ends and a geometric grid."""
    lo, hi = float(b_range[0]), float(b_range[1])
    return np.array([lo]) if lo == hi else np.unique(np.geomspace(lo, hi, BATCH_GRID))


def domain_minimum(terms: tuple[str, ...], coef: np.ndarray, m_range, n_range,
                   b_range) -> float:
    """Smallest value of the fitted function over a box of (m, n), at the batch sizes of
    ``batch_grid`` (exact in (m, n): every form is at most quadratic there, or monotone)."""
    batches = batch_grid(b_range)
    if np.all(coef >= 0):
        # Every term grows with m and n, so each batch's minimum is at the low corner.
        corner = np.column_stack([np.full(len(batches), m_range[0]),
                                  np.full(len(batches), n_range[0]), batches])
        return float(np.min(design(terms, corner) @ coef))
    if any(t in terms for t in ("m2n", "mn2", "n3")):
        raise ValueError("the exact minimum is only known for quadratic forms")
    return min(box_minimum(quadratic_parts(terms, coef, b), m_range, n_range)[0]
               for b in batches)


class TokenRegressor(RegressorMixin, BaseEstimator):
    """Base of the forms: ``terms`` says which, ``_solve`` how the coefficients are found."""

    form = ""
    base_terms: tuple[str, ...] = ()

    def __init__(self, batch_terms: bool = False):
        self.batch_terms = batch_terms

    def terms(self) -> tuple[str, ...]:
        return self.base_terms + (BATCH_TERMS if self.batch_terms else ())

    def _solve(self, A: np.ndarray, y: np.ndarray, X: np.ndarray) -> np.ndarray:
        return _scaled_lstsq(A, y)

    def fit(self, X, y):
        y = np.asarray(y, dtype=float)
        A = design(self.terms(), X)
        if len(y) != len(A):
            raise ValueError("X and y have different lengths")
        self.terms_ = self.terms()
        self.coef_ = self._solve(A, y, np.asarray(X, dtype=float))
        return self

    def predict(self, X) -> np.ndarray:
        check_is_fitted(self, "coef_")
        return design(self.terms_, X) @ self.coef_

    def domain_minimum(self, m_range, n_range, b_range) -> float:
        """The smallest prediction on the box (see the module function)."""
        check_is_fitted(self, "coef_")
        return domain_minimum(self.terms_, self.coef_, m_range, n_range, b_range)


class PaperForm(TokenRegressor):
    """Wilkins et al.: a0·m + a1·n + a2·m·n, no intercept, ordinary least squares."""

    form = "paper"
    base_terms = ("m", "n", "mn")


class LinearForm(TokenRegressor):
    form = "linear"
    base_terms = ("1", "m", "n")


class InteractionForm(TokenRegressor):
    form = "interaction"
    base_terms = ("1", "m", "n", "mn")


class QuadraticForm(TokenRegressor):
    form = "quadratic"
    base_terms = ("1", "m", "n", "m2", "mn", "n2")


class RelativeQuadraticForm(TokenRegressor):
    """Full quadratic minimising squared *relative* error (weights 1/y²), constrained to
    predict non-negative values everywhere on the box of (m, n, batch) it was fitted on."""

    form = "quadratic_rel"
    base_terms = ("1", "m", "n", "m2", "mn", "n2")

    def _solve(self, A: np.ndarray, y: np.ndarray, X: np.ndarray) -> np.ndarray:
        weighted = A / y[:, None]
        coef = _scaled_lstsq(weighted, np.ones_like(y))
        m, n, b = split_x(X)
        m_range, n_range = (m.min(), m.max()), (n.min(), n.max())
        scale = np.max(np.abs(weighted), axis=0)
        scale[scale == 0] = 1.0
        Ws = weighted / scale
        tolerance = 1e-9 * float(np.max(np.abs(y)))
        cuts: list[np.ndarray] = []
        # Cutting planes: constrain the prediction at the exact minimiser on the box, refit,
        # repeat until the minimum is non-negative.
        for _ in range(MAX_CUTS):
            value, m_at, n_at, b_at = min(
                (*box_minimum(quadratic_parts(self.terms(), coef, bb), m_range, n_range), bb)
                for bb in batch_grid((b.min(), b.max()))
            )
            if value >= -tolerance:
                break
            cuts.append(design(self.terms(), np.array([[m_at, n_at, b_at]]))[0] / scale)
            G = np.array(cuts)
            result = minimize(
                lambda c: float(np.sum((Ws @ c - 1.0) ** 2)), coef * scale,
                jac=lambda c: 2.0 * Ws.T @ (Ws @ c - 1.0), method="SLSQP",
                constraints=[{"type": "ineq", "fun": lambda c, G=G: G @ c,
                              "jac": lambda c, G=G: G}],
                options={"maxiter": 500, "ftol": 1e-12},
            )
            coef = result.x / scale
        return coef


class SweetSpotForm(TokenRegressor):
    """SweetSpot: c0 + c1·m + c2·m² + c3·n + c4·m·n + c5·n², every coefficient >= 0 (each
    term is a cost: fixed, prefill linear and quadratic, decode weights, decode attention,
    KV growth). With ``batch_terms`` the decode term is c3_flop·n + c3_mem·n/B (+ c·n·B for the
    time a request waits on the other sequences of each step)."""

    form = "sweetspot"
    base_terms = ("1", "m", "m2", "n", "mn", "n2")

    def _solve(self, A: np.ndarray, y: np.ndarray, X: np.ndarray) -> np.ndarray:
        weighted = A / y[:, None]
        scale = np.max(np.abs(weighted), axis=0)
        scale[scale == 0] = 1.0
        coef, _ = nnls(weighted / scale, np.ones_like(y))
        return coef / scale


class SweetSpotNoCacheForm(SweetSpotForm):
    """SweetSpot for decoding without a KV cache: adds m²·n, m·n² and n³, all >= 0."""

    form = "sweetspot_nocache"
    base_terms = ("1", "m", "m2", "n", "mn", "n2", "m2n", "mn2", "n3")


REGRESSION_FORMS: dict[str, type[TokenRegressor]] = {
    cls.form: cls
    for cls in (PaperForm, LinearForm, InteractionForm, QuadraticForm, RelativeQuadraticForm,
                SweetSpotForm, SweetSpotNoCacheForm)
}
