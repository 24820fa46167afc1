"""The measurement schema and the loaders of public files (Wilkins et al., ML.ENERGY)."""
