# Everything runs from a virtualenv in .venv, made on first use.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
DATE ?= $(shell date -u +%F)

.PHONY: install demo test lint dev sandbox bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

## Run every demo campaign for one day (DATE=YYYY-MM-DD, default today) on the embedded default
## (SQLite + in-process sandbox) through the dagster CLI, then print the day's figures.
demo: install
	$(BIN)/outbound-pipeline demo --date $(DATE)

## The whole test suite. PostgreSQL tests use OUTBOUND_TEST_POSTGRES_URL and skip without it.
test: install
	$(BIN)/pytest

lint: install
	$(BIN)/ruff check outbound_pipeline outbound_pipeline_tests benchmarks

## The Dagster UI on http://127.0.0.1:3000
dev: install
	DAGSTER_HOME=$${DAGSTER_HOME:-$(CURDIR)/.outbound/dagster_home} sh -c 'mkdir -p "$$DAGSTER_HOME" && $(BIN)/dagster dev -w workspace.yaml'

## The sandbox iAdvize on http://127.0.0.1:8765
sandbox: install
	$(BIN)/python -m outbound_pipeline.sandbox --port 8765

bench: install
	$(BIN)/python -m benchmarks.send_throughput
	$(BIN)/python -m benchmarks.audience_scale
	$(BIN)/python -m benchmarks.rerun_cost

clean:
	rm -rf .outbound .pytest_cache
