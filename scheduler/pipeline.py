"""The main job: fleet + workload -> checked optimised plan and checked baseline plans."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np

from energy_models.cost import CostChain, default_chain
from energy_models.regression.fitting import FittedModels
from scheduler.build import Built, build_problem, solver_id
from scheduler.errors import InputError
from scheduler.inventory import CurrentReplicas, Fleet
from scheduler.latency import price_latency
from scheduler.plan import Plan, make_plan
from solvers.baselines import BASELINES, run_baseline
from solvers.errors import InfeasibleError
from solvers.milp import DEFAULT_GAP_REL, solve_milp
from solvers.problem import Problem, Solution
from solvers.routing import solve_routing
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
    chain: CostChain
    solve: Callable[[Problem], Solution]
    """How the optimised plan was solved, to solve a tightened problem the same way."""

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
    replicas: CurrentReplicas | None = None,
    progress: Callable[[str], None] = lambda message: None,
) -> Outcome:
    """Price, solve, check; raises InfeasibleError naming what cannot be served.

    ``models`` (fitted regressions) price the pairs they cover before the analytical model.
    With ``replicas`` (the ones an operator runs today) only the routing is optimised, as an
    exact LP on those replicas.
    """
    chain = chain or default_chain(fleet.defaults.engine, models)
    if replicas is not None:
        # The settings running today become candidates, whatever the default grid holds.
        sizes = {r.max_num_seqs for r in replicas.replicas} | set(fleet.defaults.batch_sizes)
        fleet = fleet.model_copy(update={"defaults": fleet.defaults.model_copy(
            update={"batch_sizes": tuple(sorted(sizes))})})
    progress("pricing work on every candidate deployment")
    built = build_problem(fleet, workload, chain)
    problem = built.problem
    if replicas is None:
        progress(f"solving: {len(problem.classes)} demand classes x "
                 f"{len(problem.deployments)} candidate deployments")
    else:
        progress(f"routing {len(problem.classes)} demand classes on the replicas given")
    solve = solver_for(solver, time_limit_s, gap_rel,
                       None if replicas is None else replica_counts(built, replicas))
    solutions = {"optimised": solve(problem)}
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
    return Outcome(built, plan, others, chain.notes(), chain, solve)


def solver_for(solver: str, time_limit_s: float, gap_rel: float,
               replicas: np.ndarray | None = None) -> Callable[[Problem], Solution]:
    """Problem -> solution with ``solver`` (``highs``, ``cbc`` or ``cpsat``), or with
    ``replicas`` (D,) fixed, the exact routing on them."""
    if replicas is not None:
        return lambda problem: solve_routing(problem, replicas, time_limit_s=time_limit_s)
    if solver == "cpsat":
        from solvers.cpsat import solve_cpsat

        return lambda problem: solve_cpsat(problem, time_limit_s=time_limit_s, gap_rel=gap_rel)
    return lambda problem: solve_milp(problem, solver=solver, time_limit_s=time_limit_s,
                                      gap_rel=gap_rel)


def replica_counts(built: Built, replicas: CurrentReplicas) -> np.ndarray:
    """(D,) replicas per deployment of ``built`` from a replicas file; a setting the fleet
    cannot run (memory, or ``tp`` against the pool's devices per node) is an InputError."""
    index = {d: k for k, d in enumerate(built.deployments["deployment"])}
    counts = np.zeros(len(index), dtype=np.int64)
    for i, replica in enumerate(replicas.replicas):
        key = solver_id(f"{replica.pool}.{replica.llm}.tp{replica.tp}.b{replica.max_num_seqs}")
        if key not in index:
            raise InputError(replicas.where, f"replicas[{i}]",
                             f"pool {replica.pool} cannot run {replica.llm} at tp "
                             f"{replica.tp} with max_num_seqs {replica.max_num_seqs}: the "
                             f"weights and one sequence do not fit, or tp does not divide the "
                             f"pool's devices_per_node")
        counts[index[key]] += replica.count
    return counts


def routed_deployments(built: Built, solutions: Iterable[Solution]) -> list[str]:
    """The deployments any of ``solutions`` routes requests to, in problem order."""
    used = np.zeros(len(built.problem.deployments), dtype=bool)
    for solution in solutions:
        used |= (solution.routing > 0).any(axis=0)
    return list(built.deployments.deployment.to_numpy()[used])
