# Two entry points: `make demo` plans the embedded default, `make test` runs the tests.
# Each creates the virtual environment in .venv when it is missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test lint bench

$(BIN)/wattsched: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

demo: $(BIN)/wattsched
	$(BIN)/wattsched plan

test: $(BIN)/wattsched
	$(BIN)/ruff check .
	$(BIN)/python -m pytest

bench: $(BIN)/wattsched
	$(BIN)/python benchmarks/analytical_accuracy.py
	$(BIN)/python benchmarks/regression_accuracy.py
	$(BIN)/python benchmarks/plan_default.py
	$(BIN)/python benchmarks/predictor_accuracy.py
