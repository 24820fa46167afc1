"""The core MILP of DESIGN.md: energy-optimal replicas and routing, solved with PuLP.

min   Σ e[c,d]·x[c,d] + Σ n[d]·P_idle[d]·H
s.t.  demand, replica capacity, pool inventory, rack power caps, mean quality
      (see ``solvers.formulation`` for one builder per family); x only on eligible pairs.
"""

from __future__ import annotations

import numpy as np

from solvers import formulation
from solvers.diagnose import explain_infeasibility
from solvers.errors import InfeasibleError, NoSolutionError, SolverError
from solvers.problem import Problem, Solution

ROUTING_ZERO_REL = 1e-9
"""Routed amounts below this fraction of their class's count are solver noise and become 0."""


def solve_milp(
    problem: Problem,
    *,
    solver: str = "highs",
    time_limit_s: float = 30.0,
    gap_rel: float = 1e-4,
    threads: int = 1,
    fixed_replicas: np.ndarray | None = None,
) -> Solution:
    """The least-energy plan that meets every constraint of ``problem``.

    ``solver`` is ``"highs"`` (falls back to CBC when HiGHS is not installed) or ``"cbc"``;
    ``Solution.solver`` records the one that ran as ``milp:highs`` or ``milp:cbc``.
    Status is ``optimal`` (proven within ``gap_rel``) or ``feasible`` (``time_limit_s`` hit with a
    plan in hand). ``bound_j`` is the solver's MIP dual bound in joules and ``gap`` is
    (objective_j − bound_j) / objective_j, so both are real numbers for either status.
    ``objective_j`` is recomputed from the returned (rounded, cleaned) plan.

    ``fixed_replicas`` (D,) pins every deployment's replica count, leaving only the routing
    to the solver (``solvers.routing`` solves that case as an LP, much faster).

    Runs are deterministic: one thread by default, and PuLP hands variables to the solver
    sorted by name, so the same problem gives the same arrays.

    Raises:
        InfeasibleError: no plan exists; ``reasons`` come from ``explain_infeasibility``.
        NoSolutionError: the solver stopped before it found any plan.
        UnknownNameError: ``solver`` is neither ``highs`` nor ``cbc``.
    """
    model = formulation.build_variables(problem, "wattsched_milp")
    if fixed_replicas is not None:
        for dep, count in zip(problem.deployments, fixed_replicas, strict=True):
            model.n[dep.id].lowBound = model.n[dep.id].upBound = int(count)
    formulation.add_demand(problem, model)
    formulation.add_capacity(problem, model)
    formulation.add_inventory(problem, model)
    formulation.add_rack_power(problem, model)
    formulation.add_mean_quality(problem, model)
    model.prob.setObjective(formulation.energy_kj(problem, model))

    outcome = formulation.solve(
        model.prob, solver=solver, time_limit_s=time_limit_s, gap_rel=gap_rel, threads=threads
    )
    if outcome.status == "infeasible":
        raise InfeasibleError(explain_infeasibility(problem))
    if outcome.status == "unbounded":
        # Every variable is bounded (n by inventory, x by demand), so this is a solver fault.
        raise SolverError(f"{outcome.solver} reports an unbounded model, which cannot happen")
    if outcome.status == "no_solution":
        raise NoSolutionError(
            f"milp:{outcome.solver}", f"no plan within the {time_limit_s} s time limit"
        )

    replicas, routing = _plan_arrays(problem, model)
    active_j, idle_j = problem.plan_energy_j(replicas, routing)
    objective_j = active_j + idle_j
    bound_j = None if outcome.bound is None else outcome.bound * formulation.OBJECTIVE_SCALE_J
    return Solution(
        replicas=replicas,
        routing=routing,
        solver=f"milp:{outcome.solver}",
        status=outcome.status,
        objective_j=objective_j,
        bound_j=bound_j,
        gap=_relative_gap(objective_j, bound_j),
        solve_time_s=outcome.solve_time_s,
    )


def _plan_arrays(problem: Problem, model: formulation.Model) -> tuple[np.ndarray, np.ndarray]:
    """Integer replicas and routing without solver noise, in problem order."""
    replicas = np.array(
        [round(model.n[dep.id].varValue) for dep in problem.deployments], dtype=np.int64
    )
    routing = np.zeros((len(problem.classes), len(problem.deployments)))
    for (c, d), var in model.x.items():
        routing[problem.index("classes", c), problem.index("deployments", d)] = var.varValue
    # Clips tiny negatives too: the threshold is >= 0.
    routing[routing <= ROUTING_ZERO_REL * problem.demand[:, None]] = 0.0
    return replicas, routing


def _relative_gap(objective_j: float, bound_j: float | None) -> float | None:
    """(objective − bound) / |objective|, 0 when both are 0; None without a bound."""
    if bound_j is None:
        return None
    slack_j = max(objective_j - bound_j, 0.0)
    if slack_j == 0.0:
        return 0.0
    return slack_j / abs(objective_j) if objective_j != 0 else float("inf")
