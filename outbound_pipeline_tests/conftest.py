"""Shared fixtures: a fresh warehouse per test on SQLite and on the PostgreSQL server (the state store
in the same database, the default), the two stores apart (`stores`: a DuckDB warehouse with its state
in SQLite or PostgreSQL), and the sandbox iAdvize served on a loopback port.

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
from collections.abc import Callable, Iterator
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
from outbound_pipeline.ledger import CampaignPlan, StateStoreResource, create_state_tables
from outbound_pipeline.sandbox import SandboxServer
from outbound_pipeline.sending import forget_limiters
from outbound_pipeline.unsubscribe import UnsubscribeLinksResource
from outbound_pipeline.warehouse import (
    PostgresUnreachable,
    WarehouseConsent,
    WarehouseResource,
    create_engine,
    create_warehouse_tables,
    temporary_postgres_database,
)
from outbound_pipeline_tests.stores import copy_brand_tables

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
    """A test's warehouse and its state store: the same database unless `state_url` is given."""

    url: str
    engine: sa.Engine
    kind: str
    state_url: str | None = None
    state_engine: sa.Engine | None = None

    @property
    def state(self) -> sa.Engine:
        """The state store's engine (the ledger's tables)."""
        return self.state_engine or self.engine

    def resource(self) -> WarehouseResource:
        return WarehouseResource(url=self.url)

    def state_resource(self) -> StateStoreResource:
        return StateStoreResource(url=self.state_url or self.url)


def consent_for(warehouse: Warehouse, plan: CampaignPlan) -> WarehouseConsent:
    """The consent source a send step of `plan` reads: the warehouse's consent table."""
    return WarehouseConsent(warehouse.engine, plan.consents_table, plan.consent_category)


def create_all_tables(engine: sa.Engine) -> None:
    """Both stores' tables in one database (the default: the state store is the warehouse)."""
    create_warehouse_tables(engine)
    create_state_tables(engine)


@contextlib.contextmanager
def scratch_postgres_database(
    server_url: str, prefix: str = "outbound_test", template: str | None = None
) -> Iterator[str]:
    """A new database on the PostgreSQL server (its URL; a copy of `template` when given), dropped
    afterwards.

    An unreachable server fails the test under CI and skips it elsewhere, with the reason.
    """
    with contextlib.ExitStack() as stack:
        try:
            url = stack.enter_context(
                temporary_postgres_database(server_url, prefix, template=template)
            )
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
            create_all_tables(engine)
            seed_demo(engine, customers=customers)
            yield Warehouse(url, engine, "postgres")
        finally:
            engine.dispose()


class PostgresSchemas:
    """New PostgreSQL databases holding the pipeline's tables, each a copy of a template database
    made once per session (pytest-xdist worker) and table set: creating the tables took about
    0.5 s a test, copying the template's files a fraction of that."""

    def __init__(self, stack: contextlib.ExitStack) -> None:
        self.stack = stack
        self.templates: dict[Callable[[sa.Engine], None], str] = {}

    def database(
        self, create_tables: Callable[[sa.Engine], None], stack: contextlib.ExitStack
    ) -> str:
        """The URL of a new database with the tables `create_tables` makes, dropped with `stack`."""
        if create_tables not in self.templates:
            url = self.stack.enter_context(
                scratch_postgres_database(postgres_server_url(), "outbound_tpl")  # type: ignore[arg-type]
            )
            engine = create_engine(url)
            try:
                create_tables(engine)
            finally:
                engine.dispose()  # a template database must have no connection when it is copied
            self.templates[create_tables] = sa.make_url(url).database  # type: ignore[assignment]
        return stack.enter_context(
            scratch_postgres_database(
                postgres_server_url(),  # type: ignore[arg-type]
                template=self.templates[create_tables],
            )
        )


@pytest.fixture(scope="session")
def postgres_schemas() -> Iterator[PostgresSchemas]:
    with contextlib.ExitStack() as stack:
        yield PostgresSchemas(stack)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def warehouse(request: pytest.FixtureRequest, tmp_path, postgres_schemas) -> Iterator[Warehouse]:  # type: ignore[no-untyped-def]
    """An empty warehouse with the pipeline's tables, on each backend; the state store in it."""
    with _stores(request.param, tmp_path, postgres_schemas) as stores:
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
    with _stores(request.param, tmp_path, postgres_schemas) as both:
        yield both


@contextlib.contextmanager
def _stores(layout: str, tmp_path: Path, schemas: PostgresSchemas) -> Iterator[Warehouse]:
    kind, _, state_kind = layout.partition("+")
    with contextlib.ExitStack() as stack:
        tables = create_warehouse_tables if state_kind else create_all_tables
        url = _database_with(tables, kind, tmp_path / "warehouse", stack, schemas)
        engine = create_engine(url)
        stack.callback(engine.dispose)
        if not state_kind:
            yield Warehouse(url, engine, kind)
            return
        state_url = _database_with(
            create_state_tables, state_kind, tmp_path / "state", stack, schemas
        )
        state_engine = create_engine(state_url)
        stack.callback(state_engine.dispose)
        yield Warehouse(url, engine, kind, state_url, state_engine)


def _database_with(
    create_tables: Callable[[sa.Engine], None],
    kind: str,
    stem: Path,
    stack: contextlib.ExitStack,
    schemas: PostgresSchemas,
) -> str:
    """The URL of a new database with the tables `create_tables` makes: a file named after `stem`,
    or a scratch PostgreSQL database."""
    if kind not in ("sqlite", "duckdb"):
        return schemas.database(create_tables, stack)
    url = f"{kind}:///{stem}.{kind}"
    engine = create_engine(url)
    try:
        create_tables(engine)
    finally:
        engine.dispose()
    return url


class DemoCopies:
    """The demo's brand tables in a test's warehouse, exactly as `seed_demo` writes them (its data is
    fixed by its seed), copied from a warehouse seeded once per session, backend and size: seeding
    took 0.3-0.7 s a test, a copy takes a fraction of that."""

    def __init__(self, directory: Path, stack: contextlib.ExitStack) -> None:
        self.directory = directory
        self.stack = stack
        self.templates: dict[tuple[str, int], str] = {}

    def seed(self, warehouse: Warehouse, customers: int) -> Warehouse:
        template = self.template(warehouse.kind, customers)
        warehouse.engine.dispose()  # every connection closed: the database can be replaced
        target = sa.make_url(warehouse.url)
        if warehouse.kind == "duckdb":
            Path(f"{target.database}.wal").unlink(missing_ok=True)
            shutil.copyfile(template, target.database)  # type: ignore[arg-type]
            return warehouse
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
        if kind == "duckdb":
            return self._duckdb_template(customers)
        if kind == "sqlite":
            path = self.directory / f"demo_{customers}.sqlite"
            url = f"sqlite:///{path}"
        else:
            url = self.stack.enter_context(
                scratch_postgres_database(postgres_server_url(), "outbound_tpl")
            )  # type: ignore[arg-type]
        engine = create_engine(url)
        try:
            create_all_tables(engine)
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

    def template(self, kind: str, customers: int) -> str:
        """The demo's warehouse on `kind` (once per session and size): a file's path (SQLite,
        DuckDB) or a database's name (PostgreSQL), for a test that copies its brand tables."""
        key = (kind, customers)
        if key not in self.templates:
            self.templates[key] = self._template(kind, customers)
        return self.templates[key]

    def _duckdb_template(self, customers: int) -> str:
        """The demo's brand tables in a DuckDB file, copied from the SQLite template: seed_demo
        cannot create them there (its consent ids are SERIAL, which DuckDB lacks), and a brand's
        loader, not the pipeline, fills a warehouse named by URL."""
        path = self.directory / f"demo_{customers}.duckdb"
        source = create_engine(f"sqlite:///{self.template('sqlite', customers)}")
        target = create_engine(f"duckdb:///{path}")
        try:
            create_warehouse_tables(target)
            copy_brand_tables(source, target)
        finally:
            source.dispose()
            target.dispose()
        return str(path)


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
