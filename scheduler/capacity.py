"""How much more of a workload a fleet can carry: the largest multiple of its demand the
planner still finds a plan for."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from solvers.errors import InfeasibleError, NoSolutionError
from solvers.problem import Problem, Solution

RESOLUTION = 1.02
"""Bisection stops once the largest multiple served is within this factor of the smallest
refused."""
MAX_MULTIPLE = 1e6


def capacity_multiple(problem: Problem, solve: Callable[[Problem], Solution], *,
                      progress: Callable[[str], None] = lambda message: None) -> float:
    """The largest ``m`` (within ``RESOLUTION``) such that every class's demand times ``m``
    has a plan: each request counts for ``m`` times its replica time, which for inventory,
    memory, replica time and rack caps is the same as ``m`` times the requests.

    A plan not found in the solver's time limit counts as refused, so near capacity this
    errs low. Raises the solver's error when even the demand as it is has no plan."""

    def served(multiple: float) -> bool:
        progress(f"capacity: trying {multiple:.3g} x the demand")
        try:
            solve(dataclasses.replace(problem, occupancy_s=problem.occupancy_s * multiple))
        except (InfeasibleError, NoSolutionError):
            return False
        return True

    solve(problem)
    low, high = 1.0, 2.0
    while served(high):
        low, high = high, high * 2.0
        if high > MAX_MULTIPLE:
            return low
    while high / low > RESOLUTION:
        middle = (low * high) ** 0.5
        low, high = (middle, high) if served(middle) else (low, middle)
    return low
