"""The main job: fleet + workload -> checked optimised plan and checked baseline plans."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np

from energy_models.cost import CostChain, default_chain
from energy_models.regression.fitting import FittedModels
from scheduler.build import Built, build_problem
from scheduler.inventory import Fleet
from scheduler.latency import price_latency
from scheduler.plan import Plan, make_plan
from solvers.baselines import BASELINES, run_baseline
from solvers.errors import InfeasibleError
from solvers.milp import DEFAULT_GAP_REL, solve_milp
from solvers.problem import Solution
from workloads.spec import Workload


def stack_of_source(source: str) -> str:
    """The constants a cost source name (``kind:engine[:detail]``; detail: ``calibrated`` or
    a fitted form) priced with: a stack family or ``cpu``."""
    return source.split(":")[1]


@dataclass(frozen=True)
class Outcome:
    built: Built
    plan: Plan
    baselines: dict[str, Plan | str]
    """Each baseline's checked plan, or the reason its rule cannot serve the workload."""

    notes: dict[tuple[str, str], str]
    """Why a cost source before the last left some of a pair's deployments to later ones."""

    def sources(self) -> list[dict[str, str]]:
        """Per (llm, device, source): which deployments (tp, batch) it priced, and any note."""
        rows = []
        deployments = self.built.deployments.sort_values(["llm", "device", "source", "tp",
                                                          "batch"])
        for (llm, device, source), group in deployments.groupby(["llm", "device", "source"],
                                                                sort=True):
            settings = sorted({(int(t), int(b)) for t, b in zip(group.tp, group.batch,
                                                                strict=True)})
            rows.append({"llm": llm, "device": device, "source": source,
                         "stack": stack_of_source(source),
                         "deployments": " ".join(f"tp{t}/b{b}" for t, b in settings),
                         "note": "" if source.startswith("fitted")
                         else self.notes.get((llm, device), "")})
        return rows


def run_plan(
    fleet: Fleet,
    workload: Workload,
    *,
    chain: CostChain | None = None,
    models: FittedModels | None = None,
    solver: str = "highs",
    time_limit_s: float = 30.0,
    gap_rel: float = DEFAULT_GAP_REL,
    baselines: bool = True,
    progress: Callable[[str], None] = lambda message: None,
) -> Outcome:
    """Price, solve, check; raises InfeasibleError naming what cannot be served.

    ``models`` (fitted regressions) price the pairs they cover before the analytical model.
    """
    chain = chain or default_chain(fleet.defaults.engine, models)
    progress("pricing work on every candidate deployment")
    built = build_problem(fleet, workload, chain)
    problem = built.problem
    progress(f"solving: {len(problem.classes)} demand classes x "
             f"{len(problem.deployments)} candidate deployments")
    solutions = {"optimised": solve_milp(problem, solver=solver, time_limit_s=time_limit_s,
                                         gap_rel=gap_rel)}
    others: dict[str, Plan | str] = {}
    if baselines:
        for number, name in enumerate(BASELINES, start=1):
            progress(f"baseline {number}/{len(BASELINES)}: {name}")
            try:
                solutions[name] = run_baseline(name, problem)
            except InfeasibleError as exc:
                others[name] = "; ".join(exc.reasons)
    progress("predicting per-request latency on the deployments the plans use")
    latency = price_latency(chain, built.deployments, routed_deployments(built, solutions.values()),
                            workload.requests)
    progress("checking the plans")
    plans = {name: make_plan(name, built, solution, workload.requests, latency)
             for name, solution in solutions.items()}
    plan = plans.pop("optimised")
    others = {name: plans.get(name) or others[name] for name in BASELINES if baselines}
    return Outcome(built, plan, others, chain.notes())


def routed_deployments(built: Built, solutions: Iterable[Solution]) -> list[str]:
    """The deployments any of ``solutions`` routes requests to, in problem order."""
    used = np.zeros(len(built.problem.deployments), dtype=bool)
    for solution in solutions:
        used |= (solution.routing > 0).any(axis=0)
    return list(built.deployments.deployment.to_numpy()[used])
