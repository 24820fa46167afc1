"""A plan's replicas as the replay runs them, and its requests as the replay sees them.

Each deployment's step costs come from the analytical model of its serving stack,
calibrated so that at the planner's operating point (its batch, the token means of the
classes routed to it, weighted by the requests routed) they add up to the planner's own
replica time and energy: for deployments the analytical model priced this changes nothing;
for fitted or predicted ones it carries their price into every step.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import pandas as pd

from energy_models.analytical.model import shipped_constants
from energy_models.catalog.specs import get_device, get_llm
from energy_models.steps import StepCosts
from scheduler.build import Built
from scheduler.inventory import Fleet
from scheduler.pipeline import stack_of_source
from scheduler.replay.engine import ReplicaSpec, vllm_replica
from scheduler.replay.simulate import ReplayResult, Requests, simulate
from solvers.problem import Solution


def replica_specs(built: Built, solution: Solution) -> list[ReplicaSpec]:
    """One spec per replica of ``solution``, in deployment order."""
    problem = built.problem
    classes = built.classes
    specs = []
    for d in np.flatnonzero(solution.replicas > 0):
        row = built.deployments.iloc[d]
        llm, device = get_llm(row.llm), get_device(row.device)
        cap_w = float(row.power_cap_w) if np.isfinite(row.power_cap_w) else np.inf
        constants = shipped_constants()[stack_of_source(row.source)]
        costs = StepCosts(llm, device, int(row.tp), constants, cap_w)
        routed = solution.routing[:, d]
        if routed.sum() > 0:
            weights = routed / routed.sum()
            # The planner's gross price: its energy less base, plus the base share back.
            base_w = problem.deployments[d].base_power_w
            gross_j = problem.energy_j[:, d] + base_w * problem.occupancy_s[:, d]
            costs = costs.calibrated(
                int(row.batch), classes.input_tokens.to_numpy(float) + row.recompute_tokens,
                classes.output_tokens.to_numpy(float), weights=weights,
                replica_s=float(weights @ problem.occupancy_s[:, d]),
                energy_j=float(weights @ gross_j))
        spec = vllm_replica(str(row.deployment), int(d), costs, int(row.max_num_seqs))
        specs.extend(dataclasses.replace(spec, id=f"{row.deployment}#{k}")
                     for k in range(int(solution.replicas[d])))
    return specs


def plan_requests(built: Built, requests: pd.DataFrame) -> Requests:
    """The workload's requests with their class index in ``built``'s order."""
    index = pd.Index(built.classes.class_id).get_indexer(built.request_class)
    return Requests(requests.arrival_s.to_numpy(float), index,
                    requests.input_tokens.to_numpy(np.int64),
                    requests.output_tokens.to_numpy(np.int64))


REPLAY_WORKERS = min(os.cpu_count() or 1, 8)
"""Processes a plan's replicas replay in (the result is the same with any number)."""


def replay_solution(built: Built, solution: Solution, requests: pd.DataFrame) -> ReplayResult:
    """Replay ``requests`` on the replicas and routing of ``solution``."""
    return simulate(replica_specs(built, solution), solution.routing,
                    plan_requests(built, requests), horizon_s=built.problem.horizon_s,
                    workers=REPLAY_WORKERS)


def unused_idle_power_w(built: Built, solution: Solution, fleet: Fleet) -> float:
    """Idle power of the devices that hold no replica, where the fleet keeps them on
    (``unused_devices: idle``); 0 where they are off."""
    if fleet.unused_devices == "off":
        return 0.0
    used = (built.deployments.assign(devices=solution.replicas * built.deployments.tp)
            .groupby("pool").devices.sum())
    return float(sum((pool.count - used.get(pool.id, 0)) * get_device(pool.device).idle_w
                     for pool in fleet.pools))
