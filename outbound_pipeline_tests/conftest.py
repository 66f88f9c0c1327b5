"""Shared fixtures: a fresh warehouse per test on SQLite and on the PostgreSQL server (the state store
in the same database, the default), the two stores apart (`stores`: a DuckDB warehouse with its state
in SQLite or PostgreSQL), and the sandbox iAdvize served on a loopback port.

PostgreSQL comes from OUTBOUND_TEST_POSTGRES_URL (a server URL; each test gets its own database).
Without it the PostgreSQL variants skip, except under CI (CI=true), where an unreachable server fails.

`make test` runs the tests on several pytest-xdist workers: each worker has its own session
fixtures and temporary directories, each test its own databases and loopback ports.

What the fixtures hand out (`Warehouse`, scratch PostgreSQL databases, the demo's tables copied in):
stores.py. Runs of a campaign, in-process or by the `dagster` CLI: the helpers below.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from outbound_pipeline.clock import ClockResource
from outbound_pipeline.config import OutboundConfig, load_config
from outbound_pipeline.iadvize import IAdvizeResource, forget_tokens
from outbound_pipeline.sandbox import SandboxServer
from outbound_pipeline.sending import forget_limiters
from outbound_pipeline.unsubscribe import UnsubscribeLinksResource
from outbound_pipeline_tests.stores import DemoCopies, PostgresSchemas, Warehouse, open_stores

DAY = "2026-11-24"


@pytest.fixture(scope="session", autouse=True)
def _outbound_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The embedded default's directory (OUTBOUND_HOME) and the Dagster home in temporary
    directories of this worker's: a test, or a `dagster` process it starts, never writes to the
    checkout's `.outbound/` nor to a developer's Dagster instance."""
    home = tmp_path_factory.mktemp("outbound_home")
    dagster_home = tmp_path_factory.mktemp("dagster_home")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("OUTBOUND_HOME", str(home))
        patch.setenv("DAGSTER_HOME", str(dagster_home))
        yield home


@pytest.fixture(scope="session")
def postgres_schemas() -> Iterator[PostgresSchemas]:
    with contextlib.ExitStack() as stack:
        yield PostgresSchemas(stack)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def warehouse(request: pytest.FixtureRequest, tmp_path, postgres_schemas) -> Iterator[Warehouse]:  # type: ignore[no-untyped-def]
    """An empty warehouse with the pipeline's tables, on each backend; the state store in it."""
    with open_stores(request.param, tmp_path, postgres_schemas) as stores:
        yield stores


# (warehouse, state store): one database, or a DuckDB warehouse file and its state store apart.
STORES = [
    "sqlite",
    pytest.param("postgres", marks=pytest.mark.postgres),
    "duckdb+sqlite",
    pytest.param("duckdb+postgres", marks=pytest.mark.postgres),
]
DUCKDB_STORES = STORES[2:]


@pytest.fixture(params=STORES)
def stores(request: pytest.FixtureRequest, tmp_path, postgres_schemas) -> Iterator[Warehouse]:  # type: ignore[no-untyped-def]
    """An empty warehouse and state store with their tables (`Warehouse.kind` names the
    warehouse; `state_url` is set when the state store is apart). Parametrize it indirectly with
    DUCKDB_STORES for the two-store layouts only."""
    with open_stores(request.param, tmp_path, postgres_schemas) as both:
        yield both


@pytest.fixture(scope="session")
def demo_copies(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DemoCopies]:
    with contextlib.ExitStack() as stack:
        yield DemoCopies(tmp_path_factory.mktemp("demo_templates"), stack)


@pytest.fixture
def big(warehouse: Warehouse, demo_copies: DemoCopies) -> Warehouse:
    """The demo's tables with 2,500 customers: hundreds of eligible rows for a bulk campaign."""
    return demo_copies.seed(warehouse, customers=2500)


@pytest.fixture
def seeded(warehouse: Warehouse, demo_copies: DemoCopies) -> Warehouse:
    """The warehouse with the demo's brand tables (as a brand would load them)."""
    return demo_copies.seed(warehouse, customers=1500)


@pytest.fixture
def small(warehouse: Warehouse, demo_copies: DemoCopies) -> Warehouse:
    """A few hundred demo customers: about 60 eligible rows per 90 customers."""
    return demo_copies.seed(warehouse, customers=300)


@pytest.fixture(scope="session")
def demo_config() -> OutboundConfig:
    return load_config()


@pytest.fixture(autouse=True)
def _forget_senders_limiters() -> Iterator[None]:
    """A test's pauses and rates stay in its test: a worker process runs many tests, and a limiter
    left in use (a loop never run, a unit test's own) would hold the next one to them."""
    yield
    forget_limiters()


@pytest.fixture
def sandbox(demo_config: OutboundConfig) -> Iterator[SandboxServer]:
    forget_tokens()
    with SandboxServer(demo_config.templates) as server:
        yield server
    forget_tokens()


def resources_for(
    warehouse: Warehouse, sandbox: SandboxServer, timeout_seconds: float = 5, **clock: Any
) -> dict[str, Any]:
    return {
        "warehouse": warehouse.resource(),
        "state": warehouse.state_resource(),
        "iadvize": IAdvizeResource(
            mode="sandbox",
            graphql_url=sandbox.graphql_url,
            token_url=sandbox.token_url,
            username="brand-admin",
            password="not-a-real-password",
            timeout_seconds=timeout_seconds,
        ),
        "clock": ClockResource(**clock),
        "unsubscribe_links": UnsubscribeLinksResource(),
    }


def send_calls(sandbox: SandboxServer) -> int:
    """GraphQL calls that could send (mutations): the conversations step's reads do not count."""
    stats = sandbox.stats()
    return int(stats["graphql_calls"] - stats["graphql_reads"])


def campaign_assets(config: OutboundConfig, key: str) -> list[dg.AssetsDefinition]:
    from outbound_pipeline.defs.campaigns.assets import build_campaign_assets

    return build_campaign_assets(config.campaign(key), config)


def materialize_campaign(
    config: OutboundConfig,
    key: str,
    resources: dict[str, Any],
    day: str = DAY,
    run_config: dict[str, Any] | None = None,
    raise_on_error: bool = True,
    selection: list[str] | None = None,
) -> dg.ExecuteInProcessResult:
    """Materialize a campaign's assets for one day; `selection` names assets (e.g. "deliveries")."""
    return dg.materialize(
        campaign_assets(config, key),
        partition_key=day,
        resources=resources,
        run_config=run_config,
        raise_on_error=raise_on_error,
        selection=[dg.AssetKey([key, name]) for name in selection] if selection else None,
    )


def cli_materialize(
    selection: str,
    config_path: Path,
    warehouse: Warehouse,
    sandbox: SandboxServer,
    home: Path,
    run_config: dict[str, Any],
    day: str = DAY,
) -> tuple[list[str], dict[str, str]]:
    """`dagster asset materialize` of `day` as a user runs it, and its environment: the
    configuration file, the warehouse, the sandbox over its socket, and a Dagster home of its own."""
    home.mkdir()
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "OUTBOUND_CONFIG": str(config_path),
        "OUTBOUND_WAREHOUSE_URL": warehouse.url,
        **({"OUTBOUND_STATE_URL": warehouse.state_url} if warehouse.state_url else {}),
        "IADVIZE_MODE": "sandbox",
        "IADVIZE_GRAPHQL_URL": sandbox.graphql_url,
        "IADVIZE_TOKEN_URL": sandbox.token_url,
    }
    # The in-process executor: the steps run in the `dagster` process itself, so it is the process
    # that sends (what a kill or an interrupt reaches), without a Python process started per step.
    run_config = {"execution": {"config": {"in_process": {}}}, **run_config}
    command = [
        sys.executable,
        "-m",
        "dagster",
        "asset",
        "materialize",
        "-m",
        "outbound_pipeline",
        "--select",
        selection,
        "--partition",
        day,
        "--config-json",
        json.dumps(run_config),
    ]
    return command, env


def deliveries_run_config(key: str, **values: Any) -> dict[str, Any]:
    return {"ops": {f"{key}__deliveries": {"config": values}}}
