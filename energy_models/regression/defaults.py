"""Defaults of ``wattsched fit``, apart so the command line reads them without scikit-learn."""

DEFAULT_GATE_R2 = 0.96
"""A fit whose cross-validated R² is below this is refused."""
DEFAULT_FOLDS = 5
"""Grouped K-fold cross-validation folds."""
