"""Self-contained optimisation problems, their backends, baselines and checkers."""

MILP_SOLVERS = ("highs", "cbc")
"""MILP backends by name; here, not beside them, so the CLI lists them without importing PuLP."""
PLAN_SOLVERS = (*MILP_SOLVERS, "cpsat")
"""Every backend ``plan --solver`` offers: the MILP ones and OR-Tools CP-SAT."""
