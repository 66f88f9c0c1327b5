# Everything runs from a virtualenv in .venv, made on first use (VENV=DIR for another: .ci/run
# installs its own, so that CI never touches a developer's .venv).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
DATE ?= $(shell date -u +%F)
DAYS ?= 1
# pytest-xdist workers. More than the cores: most tests wait on sockets, databases and timers.
TEST_WORKERS ?= 4
# Extra pytest arguments for `make test`, e.g. PYTEST_ARGS='-k pacing --durations=25'.
PYTEST_ARGS ?=
LINTED := outbound_pipeline outbound_pipeline_tests benchmarks

.PHONY: install demo test lint dev sandbox bench clean

install: $(VENV)/.installed

# uv installs the project in seconds where pip takes a minute; --compile-bytecode as pip does:
# without it, where PYTHONDONTWRITEBYTECODE is set, every process (a test worker, a worker of the
# stages' pool, a CLI run) compiles Dagster from source, 1.7 s more each.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet uv
	$(BIN)/uv pip install --quiet --compile-bytecode --python $(BIN)/python -e '.[dev]'
	touch $@

## Run every demo campaign for one day (DATE=YYYY-MM-DD, default today; DAYS=N for the N days
## ending on it) on the embedded default (SQLite + the sandbox on a loopback port, simulating
## replies and conversions) through the dagster CLI, then print the figures.
demo: install
	$(BIN)/outbound-pipeline demo --date $(DATE) --days $(DAYS)

## The whole test suite, in parallel. PostgreSQL tests use OUTBOUND_TEST_POSTGRES_URL and skip
## without it. Tests marked xdist_group (one webserver for its module) share a worker.
test: install
	$(BIN)/pytest -n $(TEST_WORKERS) --dist loadgroup $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check $(LINTED)
	$(BIN)/ruff format --check $(LINTED)

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
	$(BIN)/python -m benchmarks.publish_scale
	$(BIN)/python -m benchmarks.stage_cpu

clean:
	rm -rf .outbound .pytest_cache
