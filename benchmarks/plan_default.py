"""Plan the bundled default fleet and workload; print solve time, gap and savings.

    python benchmarks/plan_default.py [--solver highs|cbc] [--repeats 3]

Speed is reported as a ratio against a reference run in the same process: the same MILP
solved by CBC, the fallback backend.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

from energy_models.cost import default_chain
from scheduler.inventory import load_fleet
from scheduler.pipeline import run_plan
from solvers.milp import solve_milp
from workloads.spec import load_workload


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--solver", default="highs")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    fleet, workload = load_fleet(), load_workload()
    chain = default_chain(fleet.defaults.engine)
    outcome = run_plan(fleet, workload, chain=chain, solver=args.solver)
    plan, problem = outcome.plan, outcome.built.problem
    print(f"default: {len(problem.classes)} classes x {len(problem.deployments)} deployments, "
          f"{plan.requests} requests over {plan.horizon_s:.0f} s")
    print(f"optimised: {plan.energy_j / 3.6e6:.3f} kWh, {plan.j_per_request:.1f} J/request, "
          f"{plan.devices_on} devices on, SLO met {plan.slo_attainment:.1%}, "
          f"status {plan.solution.status}, gap {plan.solution.gap:.2e}, "
          f"solve {plan.solution.solve_time_s:.3f} s")
    feasible = {k: v for k, v in outcome.baselines.items() if not isinstance(v, str)}
    for name, other in outcome.baselines.items():
        if isinstance(other, str):
            print(f"  {name:18s} infeasible: {other}")
            continue
        print(f"  {name:18s} {other.energy_j / 3.6e6:8.3f} kWh  "
              f"saving {plan.saving_pct(other):5.1f} %  "
              f"SLO met {other.slo_attainment:.1%}  devices on {other.devices_on}")
    if feasible:
        best = min(feasible.values(), key=lambda p: p.energy_j)
        print(f"saving vs best baseline ({best.name}): "
              f"{plan.saving_pct(best):.1f} %")

    times: dict[str, list[float]] = {args.solver: [], "cbc": []}
    for _ in range(args.repeats):
        for backend, samples in times.items():
            start = time.perf_counter()
            solve_milp(problem, solver=backend)
            samples.append(time.perf_counter() - start)
    ours, reference = (statistics.median(times[args.solver]), statistics.median(times["cbc"]))
    print(f"MILP wall time {args.solver} {ours:.3f} s, cbc {reference:.3f} s "
          f"(median of {args.repeats}); ratio {args.solver}/cbc {ours / reference:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
