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
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import pandas as pd

from solvers.checker import assert_valid
from solvers.milp import solve_milp
from solvers.routing import solve_routing

sys.path.insert(0, str(Path(__file__).resolve().parent))
from scale_problems import SIZES, make_problem

PLAN_GAP = 5e-3


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
    lines = []
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
    table = pd.DataFrame(lines)
    print("routing on fixed replicas: plan from scratch and pinned MILP vs the router")
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3g}"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
