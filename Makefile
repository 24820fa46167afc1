# Two entry points: `make demo` plans the embedded default, `make test` runs the tests.
# Each creates the virtual environment in .venv when it is missing and installs the exact
# versions in requirements.lock; `make lock` refreshes the lock from pyproject.toml.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test lint bench lock

$(BIN)/wattsched: pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements.lock
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps -e .
	touch $@

demo: $(BIN)/wattsched
	$(BIN)/wattsched plan

test: $(BIN)/wattsched
	$(BIN)/ruff check .
	$(BIN)/python -m pytest

# Exact versions for every Python from 3.10 up, resolved afresh from pyproject.toml's bounds.
lock: $(BIN)/wattsched
	$(BIN)/uv pip compile pyproject.toml --extra dev --universal --python-version 3.10 \
		--no-header --upgrade --quiet -o requirements.lock

bench: $(BIN)/wattsched
	$(BIN)/python benchmarks/analytical_accuracy.py
	$(BIN)/python benchmarks/regression_accuracy.py
	$(BIN)/python benchmarks/plan_default.py
	$(BIN)/python benchmarks/plan_speed.py
	$(BIN)/python benchmarks/predictor_accuracy.py
	$(BIN)/python benchmarks/batch_scale.py
	$(BIN)/python benchmarks/batch_hardware_choice.py
	$(BIN)/python benchmarks/replay_powertrace.py
	$(BIN)/python benchmarks/replay_mlenergy.py
	$(BIN)/python benchmarks/replay_speed.py
