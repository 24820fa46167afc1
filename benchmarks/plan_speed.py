"""Wall time of each stage of ``wattsched plan`` on the bundled fleet and workload.

    python benchmarks/plan_speed.py [--quick]

Stages: start-up (in subprocesses: ``import scheduler.cli`` and ``wattsched --help``), loading,
pricing the demand classes, the MILP, each baseline, pricing the latency grid, the checker and
the per-request look-up, and (without ``--quick``) the end-to-end ``wattsched plan`` with and
without baselines. Where the previous implementation still exists it runs in the same process
on the same plan and the ratio is printed: the trees walked node by node
(``Trees.predict_by_walking``) and every request priced through the cost chain on every route
(the reference below, the planner's code before the latency grid). ``--quick`` prices the
reference on the first 2,000 requests only and skips the subprocess plans.
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pandas as pd

from energy_models.cost import CostChain, default_chain
from energy_models.predictor.model import Trees
from scheduler.build import Built, build_problem
from scheduler.inventory import load_fleet
from scheduler.latency import price_latency
from scheduler.pipeline import routed_deployments
from scheduler.plan import _per_request_latency
from solvers.baselines import BASELINES, run_baseline
from solvers.checker import assert_valid
from solvers.errors import InfeasibleError
from solvers.milp import solve_milp
from workloads.spec import load_workload

QUICK_REQUESTS = 2000


def reference_per_request_latency(built: Built, routing: pd.DataFrame, requests: pd.DataFrame,
                                  chain: CostChain) -> pd.DataFrame:
    """The previous implementation: each request priced on every route of its class."""
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


@contextlib.contextmanager
def walking_trees() -> Iterator[None]:
    """The trees as they predicted before: node by node, tree by tree."""
    fast = Trees.predict
    Trees.predict = Trees.predict_by_walking
    try:
        yield
    finally:
        Trees.predict = fast


def timed(function: Callable[[], object]) -> tuple[float, object]:
    start = time.perf_counter()
    result = function()
    return time.perf_counter() - start, result


def subprocess_s(command: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def _routing(built: Built, solution) -> pd.DataFrame:
    import numpy as np

    c_idx, d_idx = np.nonzero(solution.routing > 0)
    return pd.DataFrame({"class_id": built.classes.class_id.to_numpy()[c_idx],
                         "deployment": built.deployments.deployment.to_numpy()[d_idx],
                         "requests": solution.routing[c_idx, d_idx]})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="Reference on 2,000 requests; no end-to-end subprocess plans.")
    args = parser.parse_args(argv)
    rows: list[tuple[str, float, float | None]] = []  # (stage, seconds, previous seconds)
    python = sys.executable
    wattsched = shutil.which("wattsched") or str(Path(python).with_name("wattsched"))
    rows.append(("import scheduler.cli (subprocess)",
                 subprocess_s([python, "-c", "import scheduler.cli"]), None))
    if Path(wattsched).exists():
        rows.append(("wattsched --help (subprocess)", subprocess_s([wattsched, "--help"]), None))

    load_s, (fleet, workload) = timed(lambda: (load_fleet(), load_workload()))
    rows.append(("load fleet and workload", load_s, None))
    chain = default_chain(fleet.defaults.engine)
    build_s, built = timed(lambda: build_problem(fleet, workload, chain))
    before = None
    if not args.quick:
        with walking_trees():
            before, _ = timed(lambda: build_problem(fleet, workload, chain))
    rows.append(("price demand classes (build)", build_s, before))
    problem = built.problem
    milp_s, solution = timed(lambda: solve_milp(problem))
    rows.append(("MILP (highs)", milp_s, None))
    solutions = {"optimised": solution}
    for name in BASELINES:
        try:
            seconds, solutions[name] = timed(lambda name=name: run_baseline(name, problem))
        except InfeasibleError:
            seconds = float("nan")
        rows.append((f"baseline {name}", seconds, None))
    check_s = sum(timed(lambda s=s, n=n: assert_valid(problem, s, source=n))[0]
                  for n, s in solutions.items())
    rows.append((f"checker ({len(solutions)} plans)", check_s, None))
    grid_s, table = timed(lambda: price_latency(chain, built.deployments,
                                                routed_deployments(built, solutions.values()),
                                                workload.requests))
    rows.append((f"price latency grid ({len(table.deployments)} deployments)", grid_s, None))

    requests = workload.requests
    routing = _routing(built, solution)
    if args.quick:
        requests = requests.iloc[:QUICK_REQUESTS]
        built = Built(built.problem, built.classes, built.request_class.iloc[:QUICK_REQUESTS],
                      built.deployments)
    lookup_s, _ = timed(lambda: _per_request_latency(built, routing, requests, table))
    with walking_trees():
        reference_s, _ = timed(lambda: reference_per_request_latency(built, routing, requests,
                                                                     chain))
    rows.append((f"per-request latency, optimised plan ({len(requests)} requests)",
                 grid_s + lookup_s, reference_s))
    rows.append(("  of which the look-up", lookup_s, None))

    if not args.quick and Path(wattsched).exists():
        rows.append(("wattsched plan (subprocess)", subprocess_s([wattsched, "plan"]), None))
        rows.append(("wattsched plan --no-baselines (subprocess)",
                     subprocess_s([wattsched, "plan", "--no-baselines"]), None))

    width = max(len(stage) for stage, _, _ in rows)
    print(f"{'stage':{width}s}  {'wall s':>8s}  {'before s':>9s}  {'speed-up':>8s}")
    for stage, seconds, previous in rows:
        prev = "" if previous is None else f"{previous:9.3f}"
        ratio = "" if previous is None else f"{previous / seconds:7.1f}x"
        wall = "infeasible" if seconds != seconds else f"{seconds:8.3f}"
        print(f"{stage:{width}s}  {wall:>8s}  {prev:>9s}  {ratio:>8s}")
    print("before: the same stage with trees walked node by node and, for per-request "
          "latency, every request priced through the cost chain on every route")
    return 0


if __name__ == "__main__":
    sys.exit(main())
