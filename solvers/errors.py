"""The solver layer's exceptions; each carries the data a caller needs to explain it."""

from __future__ import annotations


class SolverError(Exception):
    """Base class of every error the solver layer raises."""


class ProblemError(SolverError, ValueError):
    """The problem's arrays or ids are inconsistent."""


class InfeasibleError(SolverError):
    """No plan meets every constraint; ``reasons`` names the classes and constraints at fault."""

    def __init__(self, reasons: list[str]):
        self.reasons = reasons
        super().__init__("infeasible: " + "; ".join(reasons))


class PlanRejected(SolverError):  # noqa: N818 (public name, kept)
    """The independent checker found a plan that breaks a constraint."""

    def __init__(self, source: str, violations: list[str]):
        self.source = source
        self.violations = violations
        super().__init__(f"plan from {source} rejected: " + "; ".join(violations[:5]))


class NoSolutionError(SolverError):
    """The solver stopped (time limit, numerical trouble) before it found any plan."""

    def __init__(self, solver: str, detail: str):
        self.solver = solver
        self.detail = detail
        super().__init__(f"{solver} found no plan: {detail}")
