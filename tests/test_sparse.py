"""The sparse HiGHS model (``solvers.sparse``): its LP relaxation by column generation is the
full LP's, and dominated deployments are never needed."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given

from solvers import sparse
from solvers.milp import dominated_deployments
from tests.test_solvers_properties import PROPERTY_SETTINGS, problems


def _full_lp(problem, kept):
    """The LP relaxation over ``kept`` with every eligible pair a column."""
    return sparse.run(sparse.build(problem, kept), integer=False, time_limit_s=30.0,
                      gap_rel=0.0)


@PROPERTY_SETTINGS
@given(problems(max_deps=6))
def test_column_generation_reaches_the_full_lp_bound(problem):
    kept = ~dominated_deployments(problem)
    full = _full_lp(problem, kept)
    priced = sparse.solve_relaxation(problem, kept, time_limit_s=30.0)
    assert priced.status == full.status
    if full.status == "optimal":
        assert priced.bound_j == pytest.approx(full.objective_j, rel=1e-7, abs=1e-6)


@PROPERTY_SETTINGS
@given(problems(max_deps=6))
def test_dropping_dominated_deployments_keeps_the_lp_optimum(problem):
    whole = _full_lp(problem, np.ones(len(problem.deployments), dtype=bool))
    pruned = _full_lp(problem, ~dominated_deployments(problem))
    assert pruned.status == whole.status
    if whole.status == "optimal":
        assert pruned.objective_j == pytest.approx(whole.objective_j, rel=1e-7, abs=1e-6)


@PROPERTY_SETTINGS
@given(problems(max_deps=6))
def test_a_column_generation_stopped_early_keeps_a_valid_bound(problem):
    kept = ~dominated_deployments(problem)
    full = _full_lp(problem, kept)
    early = sparse.solve_relaxation(problem, kept, time_limit_s=30.0, stop_gap_rel=0.2)
    assert early.status == full.status
    if full.status == "optimal":
        assert early.bound_j <= full.objective_j * (1 + 1e-7) + 1e-6
        assert early.bound_j >= full.objective_j * (1 - 0.2) - 1e-6
