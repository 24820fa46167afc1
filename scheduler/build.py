"""Build a solver Problem from a fleet, a workload and a cost chain."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from energy_models.catalog.specs import get_device, get_llm
from energy_models.cost import CostChain
from energy_models.memory import TP_DEGREES, serving_settings
from scheduler.errors import InputError
from scheduler.inventory import Fleet
from solvers.problem import DemandClass, Deployment, Pool, Problem, Rack
from workloads.classes import bin_requests
from workloads.spec import SLO_FIELDS, Workload


def solver_id(text: str) -> str:
    """PuLP rewrites '-+[] ' in names; keep ids safe and readable."""
    return re.sub(r"[^A-Za-z0-9_.]", "_", text)


@dataclass(frozen=True)
class Built:
    """A Problem and the application-side facts about its rows and columns."""

    problem: Problem
    classes: pd.DataFrame
    """One row per demand class: ``class_id``, kind, count, token statistics."""
    request_class: pd.Series
    """Each request's class id."""
    deployments: pd.DataFrame
    """One row per deployment: ``deployment``, pool, device, llm, tp, batch, source, ..."""


def _candidates(fleet: Fleet, llms: tuple[str, ...],
                mean_context_tokens: float) -> pd.DataFrame:
    """Every (pool, llm, tp, max_num_seqs) that holds its weights and one sequence of the
    mean resident context, at the concurrency vLLM keeps resident (``batch``)."""
    rows = []
    for pool in fleet.pools:
        device = get_device(pool.device)
        degrees = [1] if device.kind == "cpu" else [
            t for t in TP_DEGREES if t <= pool.devices_per_node and pool.devices_per_node % t == 0
        ]
        for name in llms:
            llm = get_llm(name)
            for memory in serving_settings(llm, device, degrees, fleet.defaults.batch_sizes,
                                           mean_context_tokens):
                rows.append({
                    "deployment": solver_id(
                        f"{pool.id}.{name}.tp{memory.tp}.b{memory.max_num_seqs}"),
                    "pool": pool.id, "device": device.name, "llm": name, "tp": memory.tp,
                    "batch": memory.resident_seqs, "max_num_seqs": memory.max_num_seqs,
                    "recompute_tokens": memory.recompute_tokens_per_seq,
                    "memory_need_gb": memory.memory_need_gb, "weights_gb": memory.weights_gb,
                    "memory_gb": device.memory_gb, "quality": llm.quality,
                    "power_cap_w": pool.power_cap_w if pool.power_cap_w else math.nan,
                })
    return pd.DataFrame(rows)


def _seconds(value: float | None) -> str:
    return "none" if value is None else f"{value:g} s"


def _requirements(fleet: Fleet, workload: Workload, kind: str) -> dict[str, Any]:
    """A kind's SLOs and quality floor, and the file and field each came from."""
    values: dict[str, Any] = {}
    origins: dict[str, str] = {}
    fleet_slo = fleet.defaults.slo
    for key in SLO_FIELDS:
        if key in workload.slo.get(kind, {}):
            value = workload.slo[kind][key]
            origins[f"slo_{key}"] = f"slo.{kind}.{key} = {_seconds(value)} from {workload.where}"
        else:
            value = getattr(fleet_slo, key)
            origins[f"slo_{key}"] = (
                f"defaults.slo.{key} = {_seconds(value)} from {fleet.where}"
                if key in fleet_slo.model_fields_set
                else f"{key} = {_seconds(value)} by default; set defaults.slo.{key} in "
                     f"{fleet.where}")
        values[f"slo_{key}"] = math.inf if value is None else float(value)
    if kind in workload.min_quality:
        floor = workload.min_quality[kind]
        origins["min_quality"] = f"min_quality.{kind} = {floor:g} from {workload.where}"
    else:
        floor = fleet.defaults.min_quality
        if floor is not None:
            origins["min_quality"] = f"defaults.min_quality = {floor:g} from {fleet.where}"
    values["min_quality"] = -math.inf if floor is None else floor
    return {**values, "origins": origins}


def _check_context(fleet: Fleet, workload: Workload) -> None:
    """Requests longer than every allowed LLM's context can never be served."""
    longest = max(fleet.llms, key=lambda name: get_llm(name).max_context)
    limit = get_llm(longest).max_context
    context = workload.requests.input_tokens + workload.requests.output_tokens
    over = workload.requests[context > limit]
    if over.empty:
        return
    kinds = ", ".join(f"{n} of kind {k!r}" for k, n in over.kind.value_counts().items())
    raise InputError(workload.where or workload.name, "requests",
                     f"{len(over)} request(s) ({kinds}) need up to "
                     f"{int(context.max()):,} tokens of context, over the longest context of "
                     f"the fleet's LLMs ({limit:,}, {longest}); drop them or allow an LLM with "
                     f"a longer context in {fleet.where or fleet.name}")


def build_problem(fleet: Fleet, workload: Workload, chain: CostChain) -> Built:
    """Candidate deployments x demand classes, priced by ``chain``."""
    classes, request_class = bin_requests(
        workload.requests, workload.input_bins, workload.output_bins
    )
    _check_context(fleet, workload)
    demand = [DemandClass(id=solver_id(row.class_id), count=float(row.count),
                          **_requirements(fleet, workload, row.kind))
              for row in classes.itertuples()]
    problem, candidates = price_classes(
        fleet, fleet.llms, classes, demand, chain, horizon_s=workload.horizon_s,
        max_utilization=fleet.defaults.max_utilization, where=workload.where or workload.name)
    return Built(problem, classes, request_class, candidates)


def price_classes(fleet: Fleet, llms: tuple[str, ...], classes: pd.DataFrame,
                  demand: list[DemandClass], chain: CostChain, *, horizon_s: float,
                  max_utilization: float, where: str,
                  latency_at_p90: bool = True,
                  continuous_batching: bool = True) -> tuple[Problem, pd.DataFrame]:
    """The Problem of ``demand`` (rows of ``classes``: count, token means, p90s and
    ``context_max``) on every candidate deployment of ``llms`` in the fleet's pools.
    Latencies come from the p90 token lengths, or (``latency_at_p90`` False, for work with
    no latency SLO) from the means already priced. ``continuous_batching``: replicas serve
    arrivals as they come, so a replica that is on draws its ``base_power_w``; without it
    (an offline queue that keeps the batch full, then stops) it draws idle power."""
    # A sequence holds its prompt and, on average over its life, half its output.
    mean_context = float(np.average(classes.input_tokens + classes.output_tokens / 2,
                                    weights=classes["count"]))
    candidates = _candidates(fleet, llms, mean_context)
    if candidates.empty:
        raise InputError(fleet.where or fleet.name, "pools",
                         f"no allowed LLM holds its weights and one sequence of the mean "
                         f"resident context of {where} ({mean_context:,.0f} tokens) in the "
                         f"memory of any pool; add larger devices or smaller LLMs")
    n_classes, n_deps = len(classes), len(candidates)
    pairs = candidates.loc[candidates.index.repeat(n_classes)].reset_index(drop=True)
    pairs["class"] = np.tile(np.arange(n_classes), n_deps)
    # A preempted deployment recomputes its evicted contexts: priced as extra prompt tokens.
    work_mean = pairs.assign(
        input_tokens=classes.input_tokens.to_numpy()[pairs["class"]] + pairs.recompute_tokens,
        output_tokens=classes.output_tokens.to_numpy()[pairs["class"]],
    )
    work_p90 = pairs.assign(
        input_tokens=classes.input_p90.to_numpy()[pairs["class"]] + pairs.recompute_tokens,
        output_tokens=classes.output_p90.to_numpy()[pairs["class"]],
    )
    mean = chain.costs(work_mean)
    tail = chain.costs(work_p90) if latency_at_p90 else mean

    def matrix(values: pd.Series) -> np.ndarray:
        return values.to_numpy(float).reshape(n_deps, n_classes).T

    first = mean.groupby(pairs.deployment.to_numpy(), sort=False).first()
    # A source may price some classes of a deployment (or only its mean tokens) and leave the
    # rest to the next one; the deployment names every source that priced any of it.
    priced_by = pd.concat([mean.source, tail.source]).groupby(
        np.concatenate([pairs.deployment.to_numpy()] * 2)).agg(lambda s: "+".join(sorted(set(s))))
    candidates = candidates.assign(
        idle_power_w=first.loc[candidates.deployment, "idle_power_w"].to_numpy(),
        peak_power_w=first.loc[candidates.deployment, "peak_power_w"].to_numpy(),
        source=priced_by.loc[candidates.deployment].to_numpy(),
    )
    max_context = candidates.llm.map(lambda n: get_llm(n).max_context).to_numpy()
    servable = classes.context_max.to_numpy()[:, None] <= max_context[None, :]
    occupancy = matrix(mean.replica_s)
    gross = matrix(mean.energy_j)
    base_w = base_power_w(candidates, occupancy, gross,
                          classes["count"].to_numpy(float)[:, None] * servable
                          ) if continuous_batching else candidates.idle_power_w.to_numpy(float)
    energy = np.maximum(gross - base_w[None, :] * occupancy, 0.0)

    problem = Problem(
        horizon_s=horizon_s,
        racks=tuple(Rack(solver_id(r.id), r.power_cap_w) for r in fleet.racks),
        pools=tuple(Pool(solver_id(p.id), p.device, p.count, solver_id(p.rack),
                         p.price_per_hour) for p in fleet.pools),
        deployments=tuple(
            Deployment(
                id=r.deployment, pool=solver_id(r.pool), llm=r.llm, tp=int(r.tp),
                max_batch=int(r.batch), quality=float(r.quality),
                idle_power_w=float(r.idle_power_w),
                base_power_w=float(base_w[r.Index]), peak_power_w=float(r.peak_power_w),
                memory_need_gb=float(r.memory_need_gb), memory_gb=float(r.memory_gb),
            )
            for r in candidates.itertuples()
        ),
        classes=tuple(demand),
        energy_j=energy,
        occupancy_s=occupancy,
        ttft_s=matrix(tail.ttft_s),
        itl_s=matrix(tail.itl_s),
        e2e_s=matrix(tail.runtime_s),
        servable=servable,
        max_utilization=max_utilization,
    )
    return problem, candidates.reset_index(drop=True)


def base_power_w(candidates: pd.DataFrame, occupancy_s: np.ndarray, gross_j: np.ndarray,
                 weights: np.ndarray) -> np.ndarray:
    """Per deployment, the power a replica serving online draws whenever it is on, whatever
    its load: the intercept of its family's load-power curve.

    A replica under continuous batching never waits for a full batch: at any load it steps
    at the batch its arrivals keep running, so its power rises steeply from idle at the first
    request and slowly after (concave in load). Each (pool, LLM, TP) family's levels on that
    curve (no recompute, and more throughput than every smaller batch: a level that preempts
    serves less for more power) give points (throughput at the level's batch, power there)
    plus (0, idle); on their upper concave hull, every level's price is the line through its
    own point with the slope of the hull just below it: exact at full load, close at the
    loads where a cheaper level no longer fits. The line's intercept is the base, between
    idle and the power of the level's least-drawing class (so every class's energy above it
    stays positive and each class's full-load price exact); the rest of a request's energy
    is priced per request. ``gross_j`` and ``occupancy_s`` are (C, D), the classes weighted
    by ``weights`` (C, D: requests of each class the deployment can serve).
    """
    with np.errstate(invalid="ignore", divide="ignore"):
        occupied_s = np.einsum("cd,cd->d", weights, occupancy_s)
        power_w = np.einsum("cd,cd->d", weights, gross_j) / occupied_s
        throughput = weights.sum(axis=0) / occupied_s
        least_class_w = np.where(weights > 0, gross_j / occupancy_s, np.inf).min(axis=0)
    idle_w = candidates.idle_power_w.to_numpy(float)
    recomputes = candidates.recompute_tokens.to_numpy(float) > 0
    base_w = idle_w.copy()
    for _, family in candidates.groupby(["pool", "llm", "tp"], sort=False):
        members = family.sort_values("batch", kind="stable").index.to_numpy()
        members = members[np.isfinite(throughput[members])]
        if not len(members):
            continue
        best_below = np.maximum.accumulate(np.concatenate([[0.0], throughput[members]]))[:-1]
        on_curve = members[~recomputes[members] & (throughput[members] > best_below)]
        x = np.concatenate([[0.0], throughput[on_curve]])
        y = np.concatenate([[idle_w[members].min()], power_w[on_curve]])
        hull: list[int] = []
        for k in np.argsort(x, kind="stable"):
            while len(hull) >= 2 and ((x[hull[-1]] - x[hull[-2]]) * (y[k] - y[hull[-2]])
                                      >= (y[hull[-1]] - y[hull[-2]]) * (x[k] - x[hull[-2]])):
                hull.pop()
            hull.append(k)
        if len(hull) < 2:
            continue
        hull_x, hull_y = x[hull], y[hull]
        right = np.clip(np.searchsorted(hull_x, throughput[members]), 1, len(hull) - 1)
        slope = np.maximum((hull_y[right] - hull_y[right - 1])
                           / (hull_x[right] - hull_x[right - 1]), 0.0)
        base_w[members] = np.minimum(np.maximum(power_w[members] - slope * throughput[members],
                                                idle_w[members]), least_class_w[members])
    return base_w
