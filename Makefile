# Two commands on a fresh machine: `make demo` and `make test` (README).
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: demo test install dev lint typecheck pytest redis browser bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e .
	@touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e ".[dev]"
	@touch $@ $(VENV)/.installed

install: $(VENV)/.installed
dev: $(VENV)/.installed-dev

demo: install
	$(BIN)/job-doctor demo

redis:
	@bash .ci/ensure-redis.sh

browser:
	@bash .ci/ensure-browser.sh

lint: dev
	$(BIN)/ruff check bot handlers tests bench
	$(BIN)/ruff format --check bot handlers tests bench
	$(BIN)/lint-imports

typecheck: dev
	$(BIN)/mypy bot handlers

pytest: dev redis browser
	$(BIN)/python -m pytest -W error --timeout=120 $(PYTEST_ARGS)

test: lint typecheck pytest

bench: dev
	@for f in bench/*.py; do echo "== $$f"; $(BIN)/python $$f || exit 1; done

clean:
	rm -rf $(VENV) dist build .mypy_cache .ruff_cache test-artifacts
