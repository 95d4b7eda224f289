# The two commands of the README: `make demo` (the main job) and `make test` (the suite).
# Both create the virtualenv .venv on first use; nothing else needs installing by hand.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test lint bench clean

$(BIN)/firebreak: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

demo: $(BIN)/firebreak
	$(BIN)/firebreak demo invoices --n 1000

test: $(BIN)/firebreak
	$(BIN)/python scripts/test.py

lint: $(BIN)/firebreak
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy --strict src

bench: $(BIN)/firebreak
	$(BIN)/pip install --quiet -e '.[dev,bench]'
	$(BIN)/python bench/overhead.py
	$(BIN)/python bench/workflow.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
