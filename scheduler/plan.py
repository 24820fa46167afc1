"""Plans: a checked solution with the numbers an operator reads."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from energy_models.cost import CostChain
from scheduler.build import Built
from scheduler.inventory import Fleet
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
    energy_idle_j: float
    peak_power_w: float
    devices_on: int
    mean_ttft_s: float
    mean_e2e_s: float
    slo_attainment: float
    """Share of requests whose own predicted TTFT, ITL and end-to-end latency meet their SLOs."""
    cost_usd: float | None

    @property
    def energy_j(self) -> float:
        return self.energy_active_j + self.energy_idle_j

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
    built: Built, routing: pd.DataFrame, requests: pd.DataFrame, chain: CostChain
) -> pd.DataFrame:
    """Each request priced on every deployment its class is routed to, with the route's share."""
    shares = routing.assign(share=routing.requests / routing.groupby("class_id").requests
                            .transform("sum"))
    reqs = requests.assign(class_id=built.request_class.to_numpy())
    rows = reqs.merge(shares[["class_id", "deployment", "share"]], on="class_id")
    rows = rows.merge(
        built.deployments[["deployment", "llm", "device", "tp", "batch", "power_cap_w"]],
        on="deployment",
    )
    costs = chain.costs(rows)
    return rows.assign(ttft_s=costs.ttft_s.to_numpy(), itl_s=costs.itl_s.to_numpy(),
                       e2e_s=costs.runtime_s.to_numpy())


def make_plan(
    name: str,
    built: Built,
    solution: Solution,
    requests: pd.DataFrame,
    chain: CostChain,
    fleet: Fleet,
) -> Plan:
    """Check ``solution`` with the independent checker, then summarise it."""
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
    latency = _per_request_latency(built, routing, requests, chain)
    # built.classes rows are in problem.classes order.
    limits = pd.DataFrame({
        "class_id": built.classes.class_id.to_numpy(),
        "slo_ttft_s": [c.slo_ttft_s for c in problem.classes],
        "slo_itl_s": [c.slo_itl_s for c in problem.classes],
        "slo_e2e_s": [c.slo_e2e_s for c in problem.classes],
    })
    latency = latency.merge(limits, on="class_id")
    met = ((latency.ttft_s <= latency.slo_ttft_s) & (latency.itl_s <= latency.slo_itl_s)
           & (latency.e2e_s <= latency.slo_e2e_s))
    n_requests = len(requests)
    prices = {p.id: p.price_per_hour for p in fleet.pools}
    cost_usd = None
    if any(v is not None for v in prices.values()):
        hours = problem.horizon_s / 3600.0
        cost_usd = float(sum((prices[p] or 0.0) * d * hours for p, d in zip(on.pool, on.devices,
                                                                            strict=True)))
    return Plan(
        name=name,
        solution=solution,
        replicas=on[["deployment", "pool", "device", "llm", "tp", "batch", "replicas", "devices",
                     "source"]],
        routing=routing,
        requests=n_requests,
        horizon_s=problem.horizon_s,
        energy_active_j=report.energy_active_j,
        energy_idle_j=report.energy_idle_j,
        peak_power_w=float((on.replicas * on.peak_power_w).sum()),
        devices_on=int(on.devices.sum()),
        mean_ttft_s=float((latency.ttft_s * latency.share).sum() / n_requests),
        mean_e2e_s=float((latency.e2e_s * latency.share).sum() / n_requests),
        slo_attainment=float((met * latency.share).sum() / n_requests),
        cost_usd=cost_usd,
    )
