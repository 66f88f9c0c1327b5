"""A test's stores: its warehouse and state store (one database, or a DuckDB warehouse with its state
apart), made on SQLite, DuckDB or a scratch PostgreSQL database; the demo's brand tables copied in
(`DemoCopies`), as a brand's loader would put them there (`seed_demo` writes only SQLite and
PostgreSQL: its consent ids are SERIAL).

PostgreSQL comes from OUTBOUND_TEST_POSTGRES_URL; without it a PostgreSQL test skips, except under
CI (CI=true), where it fails. The fixtures that hand these out are in conftest.py.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import sqlalchemy as sa

from outbound_pipeline.demo import (
    consents_table,
    customers_table,
    offer_calendar_table,
    orders_table,
    seed_demo,
)
from outbound_pipeline.ledger import CampaignPlan, StateStoreResource, create_state_tables
from outbound_pipeline.warehouse import (
    PostgresUnreachable,
    WarehouseConsent,
    WarehouseResource,
    create_engine,
    create_warehouse_tables,
    temporary_postgres_database,
)

BRAND_TABLES = (customers_table, consents_table, orders_table, offer_calendar_table)


def copy_brand_tables(source: sa.Engine, target: sa.Engine) -> None:
    """The demo's brand tables and their rows, from one warehouse into another (same columns and
    types; keys without autoincrement, as a loader writes them)."""
    copies = sa.MetaData()
    for table in BRAND_TABLES:
        columns = [
            sa.Column(c.name, c.type, primary_key=c.primary_key, autoincrement=False)
            for c in table.columns
        ]
        copy = sa.Table(table.name, copies, *columns)
        with source.connect() as read, target.begin() as write:
            copy.create(write)
            rows = [dict(r) for r in read.execute(sa.select(table)).mappings()]
            for start in range(0, len(rows), 5000):
                write.execute(sa.insert(copy), rows[start : start + 5000])


POSTGRES_ENV = "OUTBOUND_TEST_POSTGRES_URL"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


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


@contextlib.contextmanager
def open_stores(layout: str, tmp_path: Path, schemas: PostgresSchemas) -> Iterator[Warehouse]:
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


# Another process holding a DuckDB file: it opens it, says so, keeps it `seconds`, then exits.
_HOLDER = """
import pathlib, sys, time
import duckdb
connection = duckdb.connect(sys.argv[1])
pathlib.Path(sys.argv[2]).touch()
time.sleep(float(sys.argv[3]))
connection.close()
"""


def hold_duckdb_file(url: str, seconds: float, directory: Path) -> subprocess.Popen[str]:
    """Another process holding the DuckDB file at `url` for `seconds` from when this returns (as a
    brand's loader or another run does)."""
    ready = directory / f"holding-{time.monotonic_ns()}"
    path = sa.make_url(url).database
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(path), str(ready), str(seconds)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    while not ready.exists():
        assert holder.poll() is None, holder.communicate()[1][-2000:]
        assert time.monotonic() < deadline, "the holder did not open the file"
        time.sleep(0.02)
    return holder
