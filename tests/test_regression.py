"""The regression forms: exact recovery, the estimator contract, non-negativity guarantees."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.base import clone
from sklearn.model_selection import GroupKFold, cross_val_predict

from energy_models.regression.forms import (
    REGRESSION_FORMS,
    PaperForm,
    RelativeQuadraticForm,
    SweetSpotForm,
    box_minimum,
    design,
    domain_minimum,
    quadratic_parts,
    uncentred_r2,
)

GRID = np.array([(m, n) for m in (8, 32, 128, 512, 2048) for n in (8, 32, 128, 512, 2048)],
                dtype=float)


@pytest.mark.parametrize("form", list(REGRESSION_FORMS))
def test_each_form_recovers_its_own_coefficients(form):
    estimator = REGRESSION_FORMS[form]()
    terms = estimator.terms()
    truth = np.linspace(0.5, 2.0, len(terms)) * 10.0 ** -np.arange(len(terms))
    y = design(terms, GRID) @ truth
    fitted = clone(estimator).fit(GRID, y)
    assert fitted.coef_ == pytest.approx(truth, rel=1e-6)
    assert fitted.predict(GRID) == pytest.approx(y, rel=1e-6)


def test_estimator_contract():
    estimator = SweetSpotForm(batch_terms=True)
    assert estimator.get_params() == {"batch_terms": True}
    assert not hasattr(estimator, "coef_")
    with pytest.raises(Exception, match="not fitted"):
        estimator.predict(GRID)
    X = np.column_stack([GRID, np.resize([1.0, 8.0, 32.0, 4.0, 2.0, 16.0], len(GRID))])
    y = 100 + 2 * X[:, 0] + 3 * X[:, 1] + 50 * X[:, 1] / X[:, 2] + 0.1 * X[:, 1] * X[:, 2]
    groups = np.arange(len(X)) // 5
    oof = cross_val_predict(estimator, X, y, groups=groups, cv=GroupKFold(5))
    assert oof == pytest.approx(y, rel=1e-6)


def test_paper_form_is_ordinary_least_squares_without_intercept():
    rng = np.random.default_rng(1)
    y = design(("m", "n", "mn"), GRID) @ np.array([-3.0, 30.0, 0.04]) + rng.normal(0, 50, 25)
    fitted = PaperForm().fit(GRID, y)
    A = design(("m", "n", "mn"), GRID)
    expected, *_ = np.linalg.lstsq(A, y, rcond=None)
    assert fitted.coef_ == pytest.approx(expected, rel=1e-9)
    assert uncentred_r2(y, fitted.predict(GRID)) == pytest.approx(
        1 - np.sum((y - A @ expected) ** 2) / np.sum(y**2))


def test_relative_quadratic_stays_non_negative_where_the_plain_one_does_not():
    # Steep growth at long outputs pulls an unweighted quadratic negative at short ones.
    m, n = GRID[:, 0], GRID[:, 1]
    y = 5 + 0.02 * m + 0.3 * n + 4e-5 * n**3 / 10
    plain = REGRESSION_FORMS["quadratic"]().fit(GRID, y)
    constrained = RelativeQuadraticForm().fit(GRID, y)
    box = ((8, 2048), (8, 2048), (1, 1))
    assert domain_minimum(plain.terms_, plain.coef_, *box) < 0
    assert constrained.domain_minimum(*box) >= -1e-9 * y.max()


def test_sweetspot_coefficients_are_never_negative():
    rng = np.random.default_rng(2)
    y = np.abs(rng.normal(1000, 400, len(GRID))) + 1
    assert np.all(SweetSpotForm().fit(GRID, y).coef_ >= 0)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(-5, 5, allow_nan=False), min_size=6, max_size=6),
       st.floats(0, 50), st.floats(1, 60), st.floats(0, 50), st.floats(1, 60))
def test_box_minimum_is_exact(parts, m_lo, m_width, n_lo, n_width):
    parts = np.array(parts)
    m_range, n_range = (m_lo, m_lo + m_width), (n_lo, n_lo + n_width)
    value, m_at, n_at = box_minimum(parts, m_range, n_range)
    mm, nn = np.meshgrid(np.linspace(*m_range, 201), np.linspace(*n_range, 201))
    k0, km, kn, kmm, kmn, knn = parts
    dense = k0 + km * mm + kn * nn + kmm * mm**2 + kmn * mm * nn + knn * nn**2
    assert value <= dense.min() + 1e-9 * max(1.0, abs(dense.min()))
    assert m_range[0] <= m_at <= m_range[1]
    assert n_range[0] <= n_at <= n_range[1]


def test_quadratic_parts_read_the_fitted_function():
    terms = ("1", "m", "n", "m2", "mn", "n2", "n/b")
    coef = np.array([1.0, 2.0, 3.0, 0.5, -0.25, 0.125, 8.0])
    parts = quadratic_parts(terms, coef, batch=4.0)
    assert parts == pytest.approx([1.0, 2.0, 3.0 + 8.0 / 4.0, 0.5, -0.25, 0.125])
