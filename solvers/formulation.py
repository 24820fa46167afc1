"""The PuLP model of placement and routing, shared by the MILP backend and the diagnosis.

Variables are keyed by domain ids: ``n[d]`` replicas of deployment ``d`` and ``x[c, d]``
requests of class ``c`` routed to ``d`` (only for eligible pairs), named ``n_{d}`` and
``x_{c},{d}``. Each constraint family has its own builder and names its rows ``{family}_{id}``
(``link_{c},{d}`` for pairs). Ids match ``[A-Za-z0-9_.]+``, so the comma joins a (class,
deployment) pair into a name no other pair can produce.

The objective is kept in kJ (``OBJECTIVE_SCALE_J``): an hour of base draw of a replica is then
~1e3 rather than ~1e6, closer to the per-request energies. Everything leaving this module in
a ``Solution`` is converted back to joules by the caller.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pulp

from energy_models.registry import Registry
from solvers.errors import SolverError
from solvers.problem import Problem

OBJECTIVE_SCALE_J = 1e3
"""Joules per objective unit inside the model (kJ)."""


@dataclass
class Model:
    """A PuLP problem and its variables keyed by domain ids."""

    prob: pulp.LpProblem
    n: dict[str, pulp.LpVariable]
    """Replicas per deployment id (integer)."""
    x: dict[tuple[str, str], pulp.LpVariable]
    """Requests routed per (class id, deployment id), eligible pairs only."""


@dataclass(frozen=True)
class SolveOutcome:
    """What a solver run produced, in the model's objective units; status already classified."""

    solver: str
    status: str
    """``optimal``, ``feasible`` (stopped early with a plan), ``infeasible``, ``unbounded`` or
    ``no_solution`` (stopped before any plan was found)."""
    objective: float | None
    bound: float | None
    solve_time_s: float


def replica_upper_bounds(problem: Problem) -> np.ndarray:
    """(D,) most replicas each deployment could ever have: its pool's devices over ``tp``.

    Zero for a deployment whose per-device memory need exceeds the device's memory.
    """
    bounds = np.zeros(len(problem.deployments), dtype=np.int64)
    for k, dep in enumerate(problem.deployments):
        if dep.memory_need_gb <= dep.memory_gb:
            bounds[k] = problem.pool_of(dep).count // dep.tp
    return bounds


def build_variables(problem: Problem, name: str) -> Model:
    """A fresh minimisation problem with ``n`` for every deployment, ``x`` for eligible pairs."""
    prob = pulp.LpProblem(name, pulp.LpMinimize)
    n = {
        dep.id: prob.add_variable(f"n_{dep.id}", lowBound=0, upBound=int(bound), cat="Integer")
        for dep, bound in zip(problem.deployments, replica_upper_bounds(problem), strict=True)
    }
    eligible = problem.eligible()
    x = {
        (demand.id, dep.id): prob.add_variable(f"x_{demand.id},{dep.id}", lowBound=0)
        for i, demand in enumerate(problem.classes)
        for k, dep in enumerate(problem.deployments)
        if eligible[i, k]
    }
    return Model(prob=prob, n=n, x=x)


def add_demand(
    problem: Problem, model: Model, unmet: dict[str, pulp.LpVariable] | None = None
) -> None:
    """``demand_{c}``: every request of every class is routed exactly once.

    With ``unmet`` (the elastic model of the diagnosis) a slack per class absorbs what cannot
    be routed.
    """
    for demand in problem.classes:
        routed = pulp.lpSum(
            model.x[demand.id, dep.id]
            for dep in problem.deployments
            if (demand.id, dep.id) in model.x
        )
        if unmet is not None:
            routed += unmet[demand.id]
        model.prob.addConstraint(routed == demand.count, f"demand_{demand.id}")


def add_capacity(problem: Problem, model: Model) -> None:
    """``capacity_{d}``: routed replica-seconds fit in the replicas' usable time.

    Work that takes no replica time would otherwise flow to a deployment with no replicas, so
    such pairs also get ``link_{c},{d}``: x <= count·n.
    """
    usable_s = problem.horizon_s * problem.max_utilization
    for k, dep in enumerate(problem.deployments):
        routed = [
            (i, demand, model.x[demand.id, dep.id])
            for i, demand in enumerate(problem.classes)
            if (demand.id, dep.id) in model.x
        ]
        load_s = pulp.lpSum(problem.occupancy_s[i, k] * var for i, _, var in routed)
        model.prob.addConstraint(load_s <= usable_s * model.n[dep.id], f"capacity_{dep.id}")
        for i, demand, var in routed:
            if problem.occupancy_s[i, k] == 0:
                model.prob.addConstraint(
                    var <= demand.count * model.n[dep.id], f"link_{demand.id},{dep.id}"
                )


def add_inventory(problem: Problem, model: Model) -> None:
    """``inventory_{pool}``: replicas use at most the pool's devices (``tp`` each)."""
    for pool in problem.pools:
        used = pulp.lpSum(
            dep.tp * model.n[dep.id] for dep in problem.deployments if dep.pool == pool.id
        )
        model.prob.addConstraint(used <= pool.count, f"inventory_{pool.id}")


def add_rack_power(problem: Problem, model: Model) -> None:
    """``rackpower_{rack}``: summed peak power of a capped rack's replicas stays under its cap."""
    for rack in problem.racks:
        if rack.power_cap_w is None:
            continue
        peak_w = pulp.lpSum(
            dep.peak_power_w * model.n[dep.id]
            for dep in problem.deployments
            if problem.pool_of(dep).rack == rack.id
        )
        model.prob.addConstraint(peak_w <= rack.power_cap_w, f"rackpower_{rack.id}")


def quality_sum(problem: Problem, model: Model) -> pulp.LpAffineExpression:
    """Σ x[c, d]·quality[d]: the numerator of the request-weighted mean quality."""
    quality = {dep.id: dep.quality for dep in problem.deployments}
    return pulp.lpSum(quality[d] * var for (_, d), var in model.x.items())


def add_mean_quality(problem: Problem, model: Model) -> None:
    """``meanquality``: request-weighted mean quality reaches the target, when one is set."""
    if problem.min_mean_quality is None:
        return
    target = problem.min_mean_quality * float(problem.demand.sum())
    model.prob.addConstraint(quality_sum(problem, model) >= target, "meanquality")


def energy_kj(problem: Problem, model: Model) -> pulp.LpAffineExpression:
    """Active energy of the routed work plus base energy of the replicas that are on, in kJ."""
    active = pulp.lpSum(
        problem.energy_j[problem.index("classes", c), problem.index("deployments", d)] * var
        for (c, d), var in model.x.items()
    )
    base = pulp.lpSum(
        dep.base_power_w * problem.horizon_s * model.n[dep.id] for dep in problem.deployments
    )
    return (active + base) / OBJECTIVE_SCALE_J


def classify_status(status: int, sol_status: int) -> str:
    """Our status from PuLP's pair; ``sol_status`` tells a proven optimum from a time-limited plan.

    Both solvers report ``status`` Optimal for a plan kept at the time limit; only
    ``sol_status`` (IntegerFeasible) says it is not proven optimal.
    """
    if sol_status == pulp.LpSolutionIntegerFeasible:
        return "feasible"
    if sol_status == pulp.LpSolutionOptimal and status == pulp.LpStatusOptimal:
        return "optimal"
    if pulp.LpStatusInfeasible in (status, sol_status):
        return "infeasible"
    if pulp.LpStatusUnbounded in (status, sol_status):
        return "unbounded"
    return "no_solution"


MilpBackend = Callable[[pulp.LpProblem, float, float, int], tuple[str, "float | None"]]
"""Runs a PuLP problem (time limit s, relative gap, threads); returns (status, MIP bound)."""

MILP_BACKENDS: Registry[MilpBackend] = Registry("solver")
"""By the names in ``solvers.MILP_SOLVERS``, which the command line offers."""


@MILP_BACKENDS.register("highs")
def _solve_highs(prob: pulp.LpProblem, time_limit_s: float, gap_rel: float,
                 threads: int) -> tuple[str, float | None]:
    _run(prob, pulp.HiGHS(msg=False, timeLimit=time_limit_s, gapRel=gap_rel, threads=threads),
         "highs")
    status = classify_status(prob.status, prob.sol_status)
    return status, _highs_bound(prob) if status in ("optimal", "feasible") else None


@MILP_BACKENDS.register("cbc")
def _solve_cbc(prob: pulp.LpProblem, time_limit_s: float, gap_rel: float,
               threads: int) -> tuple[str, float | None]:
    with tempfile.TemporaryDirectory() as tmp:
        log_path = Path(tmp) / "cbc.log"
        with warnings.catch_warnings():
            # PuLP 3 deprecates its bundled CBC, the only CBC we can count on being there.
            warnings.filterwarnings("ignore", "PULP_CBC_CMD", DeprecationWarning)
            backend = pulp.PULP_CBC_CMD(msg=False, timeLimit=time_limit_s, gapRel=gap_rel,
                                        threads=threads, logPath=str(log_path))
        _run(prob, backend, "cbc")
        log = log_path.read_text()
    status = classify_status(prob.status, prob.sol_status)
    if status not in ("optimal", "feasible"):
        return status, None
    return status, _cbc_bound(log, status, pulp.value(prob.objective), gap_rel)


def resolve_solver(solver: str) -> str:
    """The solver that will actually run: HiGHS when asked for and installed, else CBC."""
    MILP_BACKENDS.lookup(solver)
    if solver == "highs" and not pulp.HiGHS().available():
        return "cbc"
    return solver


def solve(
    prob: pulp.LpProblem, *, solver: str, time_limit_s: float, gap_rel: float, threads: int
) -> SolveOutcome:
    """Solve ``prob`` with ``solver`` (falling back from HiGHS to CBC) and read status and bound.

    The bound is the solver's MIP dual bound: HiGHS reports it in ``getInfo().mip_dual_bound``
    of the ``highspy.Highs`` object PuLP keeps as ``prob.solverModel``; CBC prints it as
    ``Lower bound:`` in its log when it stops early. When CBC proves optimality it prints no
    bound, and the one its stopping rule guarantees (objective − gap_rel·|objective|) is used.
    """
    used = resolve_solver(solver)
    started = time.perf_counter()
    status, bound = MILP_BACKENDS[used](prob, time_limit_s, gap_rel, threads)
    elapsed_s = time.perf_counter() - started
    objective = pulp.value(prob.objective) if status in ("optimal", "feasible") else None
    return SolveOutcome(
        solver=used, status=status, objective=objective, bound=bound, solve_time_s=elapsed_s
    )


@contextlib.contextmanager
def native_stdout_silenced() -> Iterator[None]:
    """File descriptor 1 points at /dev/null while a solver runs.

    HiGHS prints a banner from C on every solve, whatever ``msg`` says, straight to fd 1;
    PuLP's own messages are off, so nothing of ours is lost.
    """
    sys.stdout.flush()
    saved_fd = os.dup(1)
    devnull_fd = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull_fd, 1)
        yield
    finally:
        os.dup2(saved_fd, 1)
        os.close(saved_fd)
        os.close(devnull_fd)


def _run(prob: pulp.LpProblem, backend: pulp.LpSolver, name: str) -> None:
    """Run ``backend`` on ``prob``, translating PuLP's solver failures into ours."""
    try:
        with native_stdout_silenced():
            prob.solve(backend)
    except pulp.PulpSolverError as exc:
        raise SolverError(f"{name} failed: {exc}") from exc


def _highs_bound(prob: pulp.LpProblem) -> float | None:
    bound = prob.solverModel.getInfo().mip_dual_bound
    return bound if math.isfinite(bound) else None


_CBC_LOWER_BOUND = re.compile(r"^Lower bound:\s+(\S+)", re.MULTILINE)


def _cbc_bound(log: str, status: str, objective: float, gap_rel: float) -> float | None:
    found = _CBC_LOWER_BOUND.search(log)
    if found:
        bound = float(found.group(1))
        return bound if math.isfinite(bound) else None
    if status == "optimal":
        return objective - gap_rel * abs(objective)
    return None
