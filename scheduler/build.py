"""Build a solver Problem from a fleet, a workload and a cost chain."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np
import pandas as pd

from energy_models.catalog import DeviceSpec, LlmSpec, get_device, get_llm
from energy_models.cost import CostChain
from scheduler.errors import InputError
from scheduler.inventory import Fleet
from solvers.problem import DemandClass, Deployment, Pool, Problem, Rack
from workloads.classes import bin_requests
from workloads.spec import Workload

# Share of device memory a serving engine may use (vLLM's gpu_memory_utilization default).
MEMORY_UTILIZATION = 0.9
# Activations, CUDA graphs and framework buffers per device.
RUNTIME_OVERHEAD_GB = 1.5
TP_DEGREES = (1, 2, 4, 8)


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


def memory_need_gb(llm: LlmSpec, batch: float, context_tokens: float, tp: int) -> float:
    """Weights and KV cache per device, GB (without the runtime overhead)."""
    return (llm.weight_gb + batch * context_tokens * llm.kv_bytes_per_token / 1e9) / tp


def usable_memory_gb(device: DeviceSpec) -> float:
    """What a serving engine may fill with weights and KV cache on one device."""
    return device.memory_gb * MEMORY_UTILIZATION - RUNTIME_OVERHEAD_GB


def _candidates(fleet: Fleet, context_tokens: float) -> pd.DataFrame:
    """Every (pool, llm, tp, batch) whose weights and KV cache fit the pool's devices."""
    rows = []
    for pool in fleet.pools:
        device = get_device(pool.device)
        usable_gb = usable_memory_gb(device)
        degrees = [1] if device.kind == "cpu" else [
            t for t in TP_DEGREES if t <= pool.devices_per_node and pool.devices_per_node % t == 0
        ]
        for name in fleet.llms:
            llm = get_llm(name)
            for tp in degrees:
                for batch in fleet.defaults.batch_sizes:
                    need_gb = memory_need_gb(llm, batch, context_tokens, tp)
                    if need_gb > usable_gb:
                        continue
                    need_gb += RUNTIME_OVERHEAD_GB
                    rows.append({
                        "deployment": solver_id(f"{pool.id}.{name}.tp{tp}.b{batch}"),
                        "pool": pool.id, "device": device.name, "llm": name, "tp": tp,
                        "batch": batch, "memory_need_gb": need_gb,
                        "memory_gb": device.memory_gb, "quality": llm.quality,
                        "power_cap_w": pool.power_cap_w if pool.power_cap_w else math.nan,
                    })
    return pd.DataFrame(rows)


def _class_slo(fleet: Fleet, workload: Workload, kind: str) -> dict[str, float]:
    slo = {"ttft_s": fleet.defaults.slo.ttft_s, "itl_s": fleet.defaults.slo.itl_s,
           "e2e_s": fleet.defaults.slo.e2e_s}
    slo.update(workload.slo.get(kind, {}))
    return {k: (math.inf if v is None else float(v)) for k, v in slo.items()}


def build_problem(fleet: Fleet, workload: Workload, chain: CostChain) -> Built:
    """Candidate deployments x demand classes, priced by ``chain``."""
    classes, request_class = bin_requests(
        workload.requests, workload.input_bins, workload.output_bins
    )
    mean_context = float(np.average(classes.input_tokens + classes.output_tokens,
                                    weights=classes["count"]))
    candidates = _candidates(fleet, mean_context)
    if candidates.empty:
        raise InputError("fleet", "pools", "no allowed LLM fits in the memory of any pool; "
                         "add larger devices or smaller LLMs")
    n_classes, n_deps = len(classes), len(candidates)
    pairs = candidates.loc[candidates.index.repeat(n_classes)].reset_index(drop=True)
    pairs["class"] = np.tile(np.arange(n_classes), n_deps)
    work_mean = pairs.assign(
        input_tokens=classes.input_tokens.to_numpy()[pairs["class"]],
        output_tokens=classes.output_tokens.to_numpy()[pairs["class"]],
    )
    work_p90 = pairs.assign(
        input_tokens=classes.input_p90.to_numpy()[pairs["class"]],
        output_tokens=classes.output_p90.to_numpy()[pairs["class"]],
    )
    mean = chain.costs(work_mean)
    tail = chain.costs(work_p90)

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
    idle_share = matrix(mean.idle_power_w * mean.replica_s)
    energy = np.maximum(matrix(mean.energy_j) - idle_share, 0.0)

    demand = []
    for row in classes.itertuples():
        slo = _class_slo(fleet, workload, row.kind)
        min_quality = workload.min_quality.get(row.kind, fleet.defaults.min_quality)
        demand.append(DemandClass(
            id=solver_id(row.class_id), count=float(row.count),
            min_quality=-math.inf if min_quality is None else min_quality,
            slo_ttft_s=slo["ttft_s"], slo_itl_s=slo["itl_s"], slo_e2e_s=slo["e2e_s"],
        ))
    problem = Problem(
        horizon_s=workload.horizon_s,
        racks=tuple(Rack(solver_id(r.id), r.power_cap_w) for r in fleet.racks),
        pools=tuple(Pool(solver_id(p.id), p.device, p.count, solver_id(p.rack),
                         p.price_per_hour) for p in fleet.pools),
        deployments=tuple(
            Deployment(
                id=r.deployment, pool=solver_id(r.pool), llm=r.llm, tp=int(r.tp),
                max_batch=int(r.batch), quality=float(r.quality),
                idle_power_w=float(r.idle_power_w), peak_power_w=float(r.peak_power_w),
                memory_need_gb=float(r.memory_need_gb), memory_gb=float(r.memory_gb),
            )
            for r in candidates.itertuples()
        ),
        classes=tuple(demand),
        energy_j=energy,
        occupancy_s=matrix(mean.replica_s),
        ttft_s=matrix(tail.ttft_s),
        itl_s=matrix(tail.itl_s),
        e2e_s=matrix(tail.runtime_s),
        servable=servable,
        max_utilization=fleet.defaults.max_utilization,
    )
    return Built(problem, classes, request_class, candidates.reset_index(drop=True))
