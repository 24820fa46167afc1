"""Self-contained optimisation problems, their backends, baselines and checkers."""

MILP_SOLVERS = ("highs", "cbc")
"""MILP backends by name; here, not beside them, so the CLI lists them without importing PuLP."""
