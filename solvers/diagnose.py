"""Why a problem has no plan, in one line per demand class or constraint.

Three stages, each run only when the previous one found nothing:

1. classes with no eligible deployment, and which filter removed each candidate;
2. an elastic model with an unmet-demand slack per class (minimising the unmet requests):
   classes left short, and what stops one more replica of each of their deployments;
3. the mean-quality target, compared with the best mean quality the fleet can reach.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import pulp

from solvers import formulation
from solvers.problem import DemandClass, Problem

DIAGNOSIS_TIME_LIMIT_S = 30.0
"""Time limit of each diagnostic solve; a plan kept at the limit still explains enough."""

UNMET_REL = 1e-6
"""Unmet requests below this fraction of a class's count are solver noise."""

SHOWN_CLASSES = 5
SHOWN_LIMITS = 5
"""At most this many short classes, and binding limits per class, are named: a fleet-scale
problem can have thousands, and the message must stay readable."""

_GENERIC = (
    "no plan meets demand, replica capacity, pool inventory, rack power caps and the "
    "mean-quality target together, and no single class or constraint could be isolated"
)


def explain_infeasibility(problem: Problem) -> list[str]:
    """One-line reasons why ``problem`` has no plan; never empty.

    Reasons name the demand class and the constraint at fault. Call it on a problem known to
    be infeasible: on a feasible one it returns the generic reason.
    """
    for stage in (_unroutable_classes, _unmet_demand, _mean_quality_shortfall):
        reasons = stage(problem)
        if reasons:
            return reasons
    return [_GENERIC]


def _unroutable_classes(problem: Problem) -> list[str]:
    """Classes with requests but no eligible deployment, and the filter that removed each."""
    eligible = problem.eligible()
    reasons = []
    for i, demand in enumerate(problem.classes):
        if demand.count <= 0 or eligible[i].any():
            continue
        head = f"class {demand.id} ({demand.count:g} requests): no eligible deployment"
        if not problem.deployments:
            reasons.append(f"{head}: the problem has no candidate deployments")
            continue
        remaining = np.ones(len(problem.deployments), dtype=bool)
        parts = []
        for describe, fails in _filters(problem, i):
            removed = remaining & fails
            if removed.any():
                parts.append(f"{describe(removed)} on {_ids(problem, removed)}")
            remaining &= ~fails
        reasons.append(f"{head}: " + "; ".join(parts))
    return reasons


def _filters(problem: Problem, i: int) -> Iterator[tuple[Callable[[np.ndarray], str], np.ndarray]]:
    """(describe, fails) per eligibility filter for class ``i``, in the order they apply.

    ``describe`` turns the mask of deployments a filter removed into words; every deployment
    reaching a latency filter is servable, so its latencies are finite.
    """
    demand = problem.classes[i]
    servable = np.asarray(problem.servable[i], dtype=bool)
    quality = np.array([dep.quality for dep in problem.deployments])
    yield (lambda removed: "not servable (e.g. context too long)"), ~servable
    yield (
        lambda removed: (
            f"quality below min_quality {demand.min_quality:g} (best {quality[removed].max():g})"
            + _origin(demand, "min_quality")
        ),
        quality < demand.min_quality,
    )
    for label, latency_s, attribute in (
        ("TTFT", problem.ttft_s[i], "slo_ttft_s"),
        ("ITL", problem.itl_s[i], "slo_itl_s"),
        ("e2e", problem.e2e_s[i], "slo_e2e_s"),
    ):
        slo_s = getattr(demand, attribute)
        yield (
            lambda removed, label=label, latency_s=latency_s, slo_s=slo_s, attribute=attribute: (
                f"{label} SLO {slo_s:g} s vs best {latency_s[removed].min():.3g} s"
                + _origin(demand, attribute)
            ),
            np.where(servable, latency_s, -np.inf) > slo_s,
        )


def _origin(demand: DemandClass, attribute: str) -> str:
    """`` (min_quality.code = 75 from w.yaml)``: the file and field that set a requirement."""
    origin = demand.origins.get(attribute)
    return f" ({origin})" if origin else ""


def _ids(problem: Problem, mask: np.ndarray, shown: int = 3) -> str:
    ids = [dep.id for dep, hit in zip(problem.deployments, mask, strict=True) if hit]
    more = f" and {len(ids) - shown} more" if len(ids) > shown else ""
    return ", ".join(ids[:shown]) + more


def _unmet_demand(problem: Problem) -> list[str]:
    """Classes an elastic model (unmet slack per class, min Σ unmet) leaves short, and why."""
    model = formulation.build_variables(problem, "wattsched_unmet")
    unmet = {
        demand.id: model.prob.add_variable(f"u_{demand.id}", lowBound=0)
        for demand in problem.classes
    }
    formulation.add_demand(problem, model, unmet)
    formulation.add_capacity(problem, model)
    formulation.add_inventory(problem, model)
    formulation.add_rack_power(problem, model)
    model.prob.setObjective(pulp.lpSum(unmet.values()))
    outcome = formulation.solve(
        model.prob, solver="highs", time_limit_s=DIAGNOSIS_TIME_LIMIT_S, gap_rel=1e-6, threads=1
    )
    if outcome.status not in ("optimal", "feasible"):
        return []
    replicas = np.array([round(model.n[dep.id].varValue) for dep in problem.deployments])
    eligible = problem.eligible()
    short_classes = [(i, demand, unmet[demand.id].varValue)
                     for i, demand in enumerate(problem.classes)
                     if unmet[demand.id].varValue > UNMET_REL * max(demand.count, 1.0)]
    reasons = []
    for i, demand, short in short_classes[:SHOWN_CLASSES]:
        binding = _binding_limits(problem, replicas, np.flatnonzero(eligible[i]))
        more = (f" and {len(binding) - SHOWN_LIMITS} more" if len(binding) > SHOWN_LIMITS
                else "")
        reasons.append(
            f"class {demand.id}: {short:.6g} of {demand.count:g} requests unmet; "
            f"binding: {', '.join(binding[:SHOWN_LIMITS])}{more}"
        )
    hidden = short_classes[SHOWN_CLASSES:]
    if hidden:
        reasons.append(f"and {len(hidden)} more classes short "
                       f"({sum(short for *_, short in hidden):.6g} requests unmet)")
    return reasons


def _binding_limits(problem: Problem, replicas: np.ndarray, candidates: np.ndarray) -> list[str]:
    """What stops one more replica of each candidate deployment, deduplicated in order."""
    pool_used = dict.fromkeys((pool.id for pool in problem.pools), 0)
    rack_used_w = dict.fromkeys((rack.id for rack in problem.racks), 0.0)
    for dep, count in zip(problem.deployments, replicas, strict=True):
        pool_used[dep.pool] += dep.tp * count
        rack_used_w[problem.pool_of(dep).rack] += dep.peak_power_w * count
    limits: list[str] = []
    for k in candidates:
        dep = problem.deployments[k]
        pool = problem.pool_of(dep)
        rack = problem.racks[problem.index("racks", pool.rack)]
        if dep.memory_need_gb > dep.memory_gb:
            limit = (
                f"memory of {dep.id} ({dep.memory_need_gb:g} GB needed per device, "
                f"{dep.memory_gb:g} GB there)"
            )
        elif pool.count - pool_used[pool.id] < dep.tp:
            limit = f"pool inventory of {pool.id} ({pool.count} devices)"
        elif rack.power_cap_w is not None and rack.power_cap_w - rack_used_w[rack.id] < (
            dep.peak_power_w
        ):
            limit = f"rack power cap of {rack.id} ({rack.power_cap_w:g} W)"
        else:
            limit = f"replica capacity of {dep.id}"
        if limit not in limits:
            limits.append(limit)
    return limits


def _mean_quality_shortfall(problem: Problem) -> list[str]:
    """The mean-quality target, when even the highest-quality feasible routing misses it."""
    if problem.min_mean_quality is None:
        return []
    model = formulation.build_variables(problem, "wattsched_quality")
    formulation.add_demand(problem, model)
    formulation.add_capacity(problem, model)
    formulation.add_inventory(problem, model)
    formulation.add_rack_power(problem, model)
    model.prob.setObjective(-formulation.quality_sum(problem, model))
    outcome = formulation.solve(
        model.prob, solver="highs", time_limit_s=DIAGNOSIS_TIME_LIMIT_S, gap_rel=1e-6, threads=1
    )
    total = float(problem.demand.sum())
    if outcome.status not in ("optimal", "feasible") or total == 0:
        return []
    best = -outcome.objective / total
    if best >= problem.min_mean_quality:
        return []
    return [
        f"mean-quality target {problem.min_mean_quality:g} unreachable: at most {best:.4g} "
        "with every class served within capacity, inventory and rack power caps"
    ]
