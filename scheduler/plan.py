"""Plans: a checked solution with the numbers an operator reads."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from scheduler.build import Built, solver_id
from scheduler.latency import LatencyTable
from solvers.checker import assert_valid
from solvers.problem import Solution


@dataclass(frozen=True)
class Plan:
    """Replicas per deployment, routing per class, and what the plan costs and achieves."""

    name: str
    solution: Solution
    replicas: pd.DataFrame
    """Deployments with replicas > 0: pool, device, llm, tp, batch, replicas, devices, source."""
    routing: pd.DataFrame
    """class_id, deployment, requests (only positive routes)."""
    requests: int
    horizon_s: float
    energy_active_j: float
    energy_base_j: float
    peak_power_w: float
    devices_on: int
    mean_ttft_s: float
    mean_e2e_s: float
    slo_attainment: float
    """Share of requests whose own predicted TTFT, ITL and end-to-end latency meet their SLOs."""
    cost_usd: float | None

    @property
    def energy_j(self) -> float:
        return self.energy_active_j + self.energy_base_j

    @property
    def j_per_request(self) -> float:
        return self.energy_j / self.requests if self.requests else math.nan

    @property
    def mean_power_w(self) -> float:
        return self.energy_j / self.horizon_s

    def saving_pct(self, other: Plan) -> float:
        """How much less energy this plan uses than ``other``, in percent of ``other``'s."""
        return 100.0 * (1.0 - self.energy_j / other.energy_j)


def _per_request_latency(
    built: Built, routing: pd.DataFrame, requests: pd.DataFrame, latency: LatencyTable
) -> pd.DataFrame:
    """Each request on every deployment its class is routed to, with the route's share of the
    class and the request's TTFT, ITL and end-to-end latency there, looked up in ``latency``."""
    request_class = built.request_class.to_numpy()
    order = np.argsort(request_class, kind="stable")
    names, starts = np.unique(request_class[order], return_index=True)
    members = dict(zip(names, np.split(order, starts[1:]), strict=True))
    routed = routing.groupby("class_id").requests.transform("sum").to_numpy()
    inputs = requests["input_tokens"].to_numpy(float)
    outputs = requests["output_tokens"].to_numpy(float)
    parts = []
    for route, class_id, deployment in zip(routing.index, routing.class_id, routing.deployment,
                                           strict=True):
        rows = members[class_id]
        ttft, itl, e2e = latency.lookup(deployment, inputs[rows], outputs[rows])
        parts.append(pd.DataFrame({
            "request": rows, "class_id": class_id, "deployment": deployment,
            "share": routing.requests.at[route] / routed[route], "ttft_s": ttft, "itl_s": itl,
            "e2e_s": e2e,
        }))
    return pd.concat(parts, ignore_index=True)


def make_plan(
    name: str,
    built: Built,
    solution: Solution,
    requests: pd.DataFrame,
    latency: LatencyTable,
) -> Plan:
    """Check ``solution`` with the independent checker, then summarise it; ``latency`` prices
    its requests (it must cover every deployment the solution routes to)."""
    problem = built.problem
    report = assert_valid(problem, solution, source=name)
    deps = built.deployments.assign(replicas=solution.replicas.astype(int))
    deps["devices"] = deps.replicas * deps.tp
    on = deps[deps.replicas > 0].reset_index(drop=True)

    class_ids = built.classes.class_id.to_numpy()
    c_idx, d_idx = np.nonzero(solution.routing > 0)
    routing = pd.DataFrame({
        "class_id": class_ids[c_idx],
        "deployment": deps.deployment.to_numpy()[d_idx],
        "requests": solution.routing[c_idx, d_idx],
    })
    latency_rows = _per_request_latency(built, routing, requests, latency)
    # built.classes rows are in problem.classes order.
    position = pd.Index(class_ids).get_indexer(latency_rows.class_id)
    slo = {kind: bound[position] for kind, bound in problem.class_slos().items()}
    met = np.logical_and.reduce([latency_rows[kind].to_numpy() <= slo[kind] for kind in slo])
    share = latency_rows.share.to_numpy()
    n_requests = len(requests)
    prices = {p.id: p.price_per_hour for p in problem.pools}
    cost_usd = None
    if any(v is not None for v in prices.values()):
        hours = problem.horizon_s / 3600.0
        cost_usd = float(sum((prices[solver_id(p)] or 0.0) * d * hours
                             for p, d in zip(on.pool, on.devices, strict=True)))
    return Plan(
        name=name,
        solution=solution,
        replicas=on[["deployment", "pool", "device", "llm", "tp", "batch", "replicas", "devices",
                     "source"]],
        routing=routing,
        requests=n_requests,
        horizon_s=problem.horizon_s,
        energy_active_j=report.energy_active_j,
        energy_base_j=report.energy_base_j,
        peak_power_w=float((on.replicas * on.peak_power_w).sum()),
        devices_on=int(on.devices.sum()),
        mean_ttft_s=float(np.dot(latency_rows.ttft_s.to_numpy(), share) / n_requests),
        mean_e2e_s=float(np.dot(latency_rows.e2e_s.to_numpy(), share) / n_requests),
        slo_attainment=float(np.dot(met, share) / n_requests),
        cost_usd=cost_usd,
    )
