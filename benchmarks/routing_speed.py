"""Exact routing on fixed replicas (``solvers.routing``, ``plan --replicas``) against planning
from scratch and against the MILP with the same replicas pinned, on the seeded problems of
``scale_problems``.

    python benchmarks/routing_speed.py [--sizes S,M] [--seeds 0,1,2] [--plan-limit 120]

Per size and seed: the replicas come from a MILP plan (0.5 % gap, ``--plan-limit`` s); then
the pinned MILP and the router route the demand on those replicas. Prints the wall time of
each (build and solve), the router's speed-up over both, and how far the pinned MILP's and
the router's energies differ (both are exact, so about 1e-9 or less). The router checks the
replicas first and hands HiGHS the model with every replica count fixed, so against the
pinned MILP it gains little; against planning from scratch it is the answer to "what is the
best I can do without redeploying?".

A second table answers when a min-cost flow could replace the LP. Capacity weighs each class
by its own occupancy, so a flow is exact only where ``occupancy_s[c, d]`` factors into a
class size times a deployment speed (then routing a class's work, size x requests, is a
transportation problem). On a twin of each problem whose occupancy is made to factor so,
networkx's network simplex (integer data: work in thousandths of a second, cost in mJ per
second of work) routes the same replicas beside the LP; it prints both times and the flow's
energy off the LP's (the integer scaling's error). The generator's own occupancies do not
factor, nor do the cost chain's (a class's prefill and decode shares differ by device).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import networkx as nx
import numpy as np
import pandas as pd

from solvers.checker import assert_valid
from solvers.milp import solve_milp
from solvers.routing import solve_routing

sys.path.insert(0, str(Path(__file__).resolve().parent))
from scale_problems import SIZES, make_problem

PLAN_GAP = 5e-3
FLOW_WORK_UNITS_PER_S = 1000
FLOW_COST_UNITS_PER_J = 1000


def factorable_twin(problem):
    """``problem`` with occupancy_s[c, d] = size[c] x speed[d] (means of the eligible pairs)."""
    import dataclasses

    eligible = problem.eligible()
    occupancy = np.where(eligible, problem.occupancy_s, 0.0)
    size_s = np.where(eligible.any(axis=1), occupancy.sum(axis=1)
                      / np.maximum(eligible.sum(axis=1), 1), 1.0)
    speed = np.where(eligible.any(axis=0), (occupancy / size_s[:, None]).sum(axis=0)
                     / np.maximum(eligible.sum(axis=0), 1), 1.0)
    return dataclasses.replace(problem, occupancy_s=size_s[:, None] * speed[None, :]), size_s, speed


def route_by_flow(problem, replicas: np.ndarray, size_s: np.ndarray,
                  speed: np.ndarray) -> np.ndarray:
    """Routing (C, D) of a factorable problem by networkx's network simplex: class c supplies
    size[c] x count[c] seconds of work, deployment d takes u x H x n[d] / speed[d] of it."""
    eligible = problem.eligible() & (replicas > 0)[None, :]
    supply = np.round(problem.demand * size_s * FLOW_WORK_UNITS_PER_S).astype(np.int64)
    capacity = np.floor(problem.horizon_s * problem.max_utilization * replicas / speed
                        * FLOW_WORK_UNITS_PER_S).astype(np.int64)
    graph = nx.DiGraph()
    graph.add_node("sink", demand=int(supply.sum()))
    for c, units in enumerate(supply):
        graph.add_node(("class", c), demand=-int(units))
    for d in np.flatnonzero(replicas > 0):
        graph.add_edge(("deployment", d), "sink", capacity=int(capacity[d]), weight=0)
    classes, deployments = np.nonzero(eligible)
    for c, d in zip(classes, deployments, strict=True):
        graph.add_edge(("class", c), ("deployment", d), weight=round(float(
            problem.energy_j[c, d] / size_s[c] * FLOW_COST_UNITS_PER_J)))
    _, flow = nx.network_simplex(graph)
    routing = np.zeros(problem.energy_j.shape)
    for c, d in zip(classes, deployments, strict=True):
        routing[c, d] = flow[("class", c)][("deployment", d)] / FLOW_WORK_UNITS_PER_S / size_s[c]
    return routing


def _timed(function, *args, **kwargs):
    started = time.perf_counter()
    result = function(*args, **kwargs)
    return result, time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="S,M", help=f"comma-separated of {', '.join(SIZES)}")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--plan-limit", type=float, default=120.0,
                        help="time limit of the MILP that chooses the replicas, s")
    args = parser.parse_args(argv)
    sizes = [s for s in args.sizes.split(",") if s]
    unknown = sorted(set(sizes) - set(SIZES))
    if unknown:
        parser.error(f"--sizes: unknown size {unknown[0]!r}; known: {', '.join(SIZES)}")
    lines, flows = [], []
    for size in sizes:
        for seed in (int(s) for s in args.seeds.split(",") if s):
            problem = make_problem(size, seed)
            print(f"{size} seed {seed}: planning replicas", file=sys.stderr, flush=True)
            plan, plan_s = _timed(solve_milp, problem, time_limit_s=args.plan_limit,
                                  gap_rel=PLAN_GAP)
            pinned, milp_s = _timed(solve_milp, problem, gap_rel=1e-9,
                                    fixed_replicas=plan.replicas)
            routed, routing_s = _timed(solve_routing, problem, plan.replicas)
            assert_valid(problem, routed, routed.solver)
            lines.append({
                "size": size, "seed": seed, "classes x deployments": f"{len(problem.classes)} x "
                f"{len(problem.deployments)}", "replicas": int(plan.replicas.sum()),
                "plan MILP s": plan_s, "pinned MILP s": milp_s, "routing s": routing_s,
                "speed-up vs plan": plan_s / routing_s, "speed-up vs pinned": milp_s / routing_s,
                "energy rel diff": abs(routed.objective_j / pinned.objective_j - 1.0),
            })
            twin, size_s, speed = factorable_twin(problem)
            twin_plan = solve_milp(twin, time_limit_s=args.plan_limit, gap_rel=PLAN_GAP)
            lp, lp_s = _timed(solve_routing, twin, twin_plan.replicas)
            routing, flow_s = _timed(route_by_flow, twin, twin_plan.replicas, size_s, speed)
            flow_active_j = float((twin.energy_j * routing).sum())
            lp_active_j = float((twin.energy_j * lp.routing).sum())
            flows.append({
                "size": size, "seed": seed, "pairs": int((twin.eligible()
                                                           & (twin_plan.replicas > 0)).sum()),
                "LP s": lp_s, "flow s": flow_s, "flow / LP time": flow_s / lp_s,
                "flow active energy rel diff": flow_active_j / lp_active_j - 1.0,
            })
    table = pd.DataFrame(lines)
    print("routing on fixed replicas: plan from scratch and pinned MILP vs the router")
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3g}"))
    print()
    print("factorable twins: the routing LP vs networkx's min-cost flow on the same replicas")
    print(pd.DataFrame(flows).to_string(index=False, float_format=lambda v: f"{v:.3g}"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
