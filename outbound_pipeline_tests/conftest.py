"""Shared fixtures: a fresh warehouse per test on SQLite and on the PostgreSQL server, and the sandbox
iAdvize served on a loopback port.

PostgreSQL comes from OUTBOUND_TEST_POSTGRES_URL (a server URL; each test gets its own database).
Without it the PostgreSQL variants skip, except under CI (CI=true), where an unreachable server fails.

`make test` runs the tests on several pytest-xdist workers: each worker has its own session
fixtures and temporary directories, each test its own databases and loopback ports.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import sqlalchemy as sa

from outbound_pipeline.clock import ClockResource
from outbound_pipeline.config import OutboundConfig, load_config
from outbound_pipeline.demo import seed_demo
from outbound_pipeline.iadvize import IAdvizeResource, forget_tokens
from outbound_pipeline.sandbox import SandboxServer
from outbound_pipeline.warehouse import (
    PostgresUnreachable,
    WarehouseResource,
    create_engine,
    create_owned_tables,
    temporary_postgres_database,
)

POSTGRES_ENV = "OUTBOUND_TEST_POSTGRES_URL"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
DAY = "2026-11-24"


def postgres_server_url() -> str | None:
    url = os.environ.get(POSTGRES_ENV)
    if not url:
        if IN_CI:
            pytest.fail(
                f"CI=true but {POSTGRES_ENV} is not set: the PostgreSQL tests must run in CI"
            )
        pytest.skip(
            f"no PostgreSQL server configured: set {POSTGRES_ENV}=postgresql://user@host:5432/db"
        )
    return url


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


@dataclass
class Warehouse:
    url: str
    engine: sa.Engine
    kind: str

    def resource(self) -> WarehouseResource:
        return WarehouseResource(url=self.url)


@contextlib.contextmanager
def scratch_postgres_database(server_url: str, prefix: str = "outbound_test") -> Iterator[str]:
    """A new database on the PostgreSQL server (its URL), dropped afterwards.

    An unreachable server fails the test under CI and skips it elsewhere, with the reason.
    """
    with contextlib.ExitStack() as stack:
        try:
            url = stack.enter_context(temporary_postgres_database(server_url, prefix))
        except PostgresUnreachable as exc:
            if IN_CI:
                pytest.fail(str(exc))
            pytest.skip(str(exc))
        yield url


@contextlib.contextmanager
def seeded_postgres_warehouse(customers: int) -> Iterator[Warehouse]:
    """A scratch PostgreSQL warehouse with the demo's brand tables, for a test about PostgreSQL alone."""
    with scratch_postgres_database(postgres_server_url()) as url:  # type: ignore[arg-type]
        engine = create_engine(url)
        try:
            create_owned_tables(engine)
            seed_demo(engine, customers=customers)
            yield Warehouse(url, engine, "postgres")
        finally:
            engine.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def warehouse(request: pytest.FixtureRequest, tmp_path) -> Iterator[Warehouse]:  # type: ignore[no-untyped-def]
    """An empty warehouse with the pipeline's tables, on each backend."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'warehouse.sqlite'}"
        engine = create_engine(url)
        create_owned_tables(engine)
        yield Warehouse(url, engine, "sqlite")
        engine.dispose()
        return
    with scratch_postgres_database(postgres_server_url()) as url:  # type: ignore[arg-type]
        engine = create_engine(url)
        create_owned_tables(engine)
        try:
            yield Warehouse(url, engine, "postgres")
        finally:
            engine.dispose()


class DemoCopies:
    """The demo's brand tables in a test's warehouse, exactly as `seed_demo` writes them (its data is
    fixed by its seed), copied from a warehouse seeded once per session, backend and size: seeding
    took 0.3-0.7 s a test, a copy takes a fraction of that."""

    def __init__(self, directory: Path, stack: contextlib.ExitStack) -> None:
        self.directory = directory
        self.stack = stack
        self.templates: dict[tuple[str, int], str] = {}

    def seed(self, warehouse: Warehouse, customers: int) -> Warehouse:
        key = (warehouse.kind, customers)
        if key not in self.templates:
            self.templates[key] = self._template(warehouse.kind, customers)
        template = self.templates[key]
        warehouse.engine.dispose()  # every connection closed: the database can be replaced
        target = sa.make_url(warehouse.url)
        if warehouse.kind == "sqlite":
            for suffix in ("-wal", "-shm"):
                Path(f"{target.database}{suffix}").unlink(missing_ok=True)
            shutil.copyfile(template, target.database)  # type: ignore[arg-type]
            return warehouse
        admin = create_engine(postgres_server_url())  # type: ignore[arg-type]
        try:
            with admin.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                conn.exec_driver_sql(f'DROP DATABASE "{target.database}" WITH (FORCE)')
                conn.exec_driver_sql(f'CREATE DATABASE "{target.database}" TEMPLATE "{template}"')
        finally:
            admin.dispose()
        return warehouse

    def _template(self, kind: str, customers: int) -> str:
        if kind == "sqlite":
            path = self.directory / f"demo_{customers}.sqlite"
            url = f"sqlite:///{path}"
        else:
            url = self.stack.enter_context(
                scratch_postgres_database(postgres_server_url(), "outbound_tpl")
            )  # type: ignore[arg-type]
        engine = create_engine(url)
        try:
            create_owned_tables(engine)
            seed_demo(engine, customers=customers)
            if kind == "sqlite":
                raw = engine.raw_connection()  # outside a transaction, where a checkpoint can run
                try:
                    raw.cursor().execute(
                        "PRAGMA wal_checkpoint(TRUNCATE)"
                    )  # all of it in the file copied
                finally:
                    raw.close()
        finally:
            engine.dispose()  # a template database must have no connection when it is copied
        return str(path) if kind == "sqlite" else sa.make_url(url).database  # type: ignore[return-value]


@pytest.fixture(scope="session")
def demo_copies(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DemoCopies]:
    with contextlib.ExitStack() as stack:
        yield DemoCopies(tmp_path_factory.mktemp("demo_templates"), stack)


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
        "iadvize": IAdvizeResource(
            mode="sandbox",
            graphql_url=sandbox.graphql_url,
            token_url=sandbox.token_url,
            username="brand-admin",
            password="not-a-real-password",
            timeout_seconds=timeout_seconds,
        ),
        "clock": ClockResource(**clock),
    }


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
) -> tuple[list[str], dict[str, str]]:
    """`dagster asset materialize` of DAY as a user runs it, and its environment: the configuration
    file, the warehouse, the sandbox over its socket, and a Dagster home of its own."""
    home.mkdir()
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "OUTBOUND_CONFIG": str(config_path),
        "OUTBOUND_WAREHOUSE_URL": warehouse.url,
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
        DAY,
        "--config-json",
        json.dumps(run_config),
    ]
    return command, env


def deliveries_run_config(key: str, **values: Any) -> dict[str, Any]:
    return {"ops": {f"{key}__deliveries": {"config": values}}}
