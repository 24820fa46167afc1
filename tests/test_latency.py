"""Per-request latency from a token grid: exact on the grid, close to pricing every request."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from energy_models.cost import CostChain, default_chain
from scheduler.build import build_problem
from scheduler.inventory import load_fleet
from scheduler.latency import PRICING_COLUMNS, LatencyTable, price_latency, token_grid
from scheduler.pipeline import routed_deployments
from scheduler.plan import make_plan
from solvers.milp import solve_milp
from workloads.spec import load_workload


class ExactLatency:
    """The reference: every request priced through the chain on its own (slow)."""

    def __init__(self, chain: CostChain, deployments: pd.DataFrame):
        self.chain = chain
        self.deployments = deployments.set_index("deployment")

    def lookup(self, deployment: str, input_tokens: np.ndarray, output_tokens: np.ndarray):
        row = self.deployments.loc[deployment, list(PRICING_COLUMNS)]
        work = pd.DataFrame({**row.to_dict(), "input_tokens": input_tokens,
                             "output_tokens": output_tokens})
        costs = self.chain.costs(work)
        return (costs.ttft_s.to_numpy(float), costs.itl_s.to_numpy(float),
                costs.runtime_s.to_numpy(float))


def test_token_grid_holds_the_extremes_and_follows_the_requests():
    tokens = np.array([10.0] * 90 + list(np.linspace(11, 5000, 10)))
    grid = token_grid(tokens, 8)
    assert grid[0] == 10.0
    assert grid[-1] == 5000.0
    assert np.all(np.diff(grid) > 0)
    assert len(grid) < 8  # Equal quantiles collapse into one point.
    np.testing.assert_array_equal(token_grid(np.full(5, 7.0)), [7.0])
    with pytest.raises(ValueError, match="positive"):
        token_grid(np.array([0.0, 3.0]))


def _table(inputs, outputs, values) -> LatencyTable:
    values = np.asarray(values, dtype=float)[None]
    return LatencyTable(("d",), np.asarray(inputs, float), np.asarray(outputs, float),
                        values, 2 * values, 0.1 * values)


def test_lookup_is_exact_on_grid_points_and_bilinear_in_log_tokens_between():
    table = _table([10, 1000], [10, 100], [[1.0, 2.0], [3.0, 4.0]])
    ttft, itl, e2e = table.lookup("d", np.array([10, 1000, 10, 100]), np.array([10, 100, 100,
                                                                                  10]))
    np.testing.assert_allclose(ttft, [1.0, 4.0, 2.0, 2.0])  # 100 is halfway in log(10..1000).
    np.testing.assert_allclose(itl, 2 * ttft)
    np.testing.assert_allclose(e2e, ttft + np.array([10, 100, 100, 10]) * 0.1 * ttft)
    # Outside the grid: the nearest end; a one-point axis is constant.
    ttft, _, _ = table.lookup("d", np.array([1.0, 1e6]), np.array([10.0, 10.0]))
    np.testing.assert_allclose(ttft, [1.0, 3.0])
    flat = _table([50], [20, 40], [[5.0, 7.0]])
    np.testing.assert_allclose(flat.lookup("d", np.array([1.0, 99.0]), np.array([20, 40]))[0],
                               [5.0, 7.0])


def test_grid_prices_equal_the_chain_on_grid_points():
    fleet, workload = load_fleet(), load_workload()
    chain = default_chain(fleet.defaults.engine)
    deployments = build_problem(fleet, workload, chain).deployments
    names = list(deployments.deployment[:3])
    requests = workload.requests.iloc[:200]
    table = price_latency(chain, deployments, names, requests, points=5)
    m, n = np.meshgrid(table.input_tokens, table.output_tokens, indexing="ij")
    exact = ExactLatency(chain, deployments)
    for name in names:
        for got, want in zip(table.lookup(name, m.ravel(), n.ravel()),
                             exact.lookup(name, m.ravel(), n.ravel()), strict=True):
            np.testing.assert_allclose(got, want, rtol=1e-9)


def test_default_plan_latency_from_the_grid_is_close_to_pricing_every_request():
    """The bundled fleet and workload, optimised plan: the grid (GRID_POINTS per axis) against
    each of the 29,103 requests priced on its own. Measured: mean TTFT +0.4 %, mean E2E
    +0.5 %, SLO attainment within 0.01 percentage point."""
    fleet, workload = load_fleet(), load_workload()
    chain = default_chain(fleet.defaults.engine)
    built = build_problem(fleet, workload, chain)
    solution = solve_milp(built.problem)
    table = price_latency(chain, built.deployments, routed_deployments(built, [solution]),
                          workload.requests)
    grid = make_plan("optimised", built, solution, workload.requests, table)
    exact = make_plan("optimised", built, solution, workload.requests,
                      ExactLatency(chain, built.deployments))
    assert grid.energy_j == exact.energy_j
    assert grid.mean_ttft_s == pytest.approx(exact.mean_ttft_s, rel=0.01)
    assert grid.mean_e2e_s == pytest.approx(exact.mean_e2e_s, rel=0.01)
    assert grid.slo_attainment == pytest.approx(exact.slo_attainment, abs=0.005)
