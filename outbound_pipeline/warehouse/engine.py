"""Connecting to a store: one SQLAlchemy engine per URL (SQLite, PostgreSQL, DuckDB, any dialect),
the pipeline's own tables created there, and the dialect differences the rest of the code needs.

Both stores use it: the brand's warehouse (any dialect) and the state store (SQLite or PostgreSQL,
outbound_pipeline.ledger.store)."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from outbound_pipeline.warehouse.retry import with_lock_retry

# An arbitrary constant: every process creating the owned tables takes the same advisory lock.
_DDL_LOCK_ID = 823_614_201


def normalise_url(url: str) -> str:
    """Use psycopg 3 for PostgreSQL URLs that name no driver."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


class PostgresUnreachable(RuntimeError):
    """The PostgreSQL server could not be reached; the message names it without its password."""


@contextlib.contextmanager
def temporary_postgres_database(
    server_url: str, prefix: str, keep: bool = False, template: str | None = None
) -> Iterator[str]:
    """A new database on the PostgreSQL server (a copy of the database `template` when given, which
    must have no connection open), its URL yielded and the database dropped afterwards (unless
    keep). For tests and benchmarks: each gets a warehouse of its own."""
    admin = create_engine(server_url)
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    copied = f' TEMPLATE "{template}"' if template else ""
    try:
        with admin.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"{copied}')
    except sa.exc.OperationalError as exc:
        admin.dispose()
        shown = admin.url.render_as_string(hide_password=True)
        raise PostgresUnreachable(f"PostgreSQL at {shown} is unreachable: {exc.orig}") from None
    try:
        yield admin.url.set(database=name).render_as_string(hide_password=False)
    finally:
        if not keep:
            with admin.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


# Each SQLite connection's page cache, in KiB.
SQLITE_CACHE_KIB = 65536
# DuckDB writes its WAL into the file (a checkpoint) when a commit leaves more than this in it, and
# when the file's last connection closes. At its default, 16 MiB, a stage's commits checkpointed
# many times where once at the end does: a million-customer day took 41-43 s with it raised,
# 45-46 s at the default (docs/performance.md). Every commit is in the WAL either way; a process
# killed mid-stage leaves up to this much WAL, replayed by the file's next opening.
DUCKDB_CHECKPOINT_THRESHOLD = "1GiB"
# Dialects whose indexes the pipeline creates: the analytical engines have none, or need none.
INDEXED_DIALECTS = ("sqlite", "postgresql")


def create_engine(url: str, pooled: bool = True) -> sa.Engine:
    """The engine of a store. `pooled=False` (the warehouse): no connection is kept open between
    operations on any dialect, each opened for its operation and closed after it (a file database
    always: it admits one process at a time)."""
    url = normalise_url(url)
    # Statement errors would otherwise quote their parameters (phone numbers) in logs and the UI.
    if url.startswith("sqlite"):
        engine = sa.create_engine(
            url, connect_args={"timeout": 120}, poolclass=sa.pool.NullPool, hide_parameters=True
        )
        _configure_sqlite(engine)
        return engine
    if url.startswith("duckdb"):
        return _duckdb_engine(url)
    if not pooled:
        return sa.create_engine(url, poolclass=sa.pool.NullPool, hide_parameters=True)
    return sa.create_engine(
        url, pool_pre_ping=True, pool_size=5, max_overflow=5, hide_parameters=True
    )


def is_duckdb_file(database: str | None) -> bool:
    """Whether a DuckDB URL's database is a file on this machine: not in memory, not MotherDuck's
    (`md:` or `motherduck:`), not another scheme (`s3://...`)."""
    if not database or database.startswith(":memory:"):
        return False
    return not database.lower().startswith(("md:", "motherduck:")) and "://" not in database


def _duckdb_engine(url: str) -> sa.Engine:
    """A DuckDB file admits one process at a time: no connection is kept between operations (no
    pool), and opening one waits while another process holds the file (warehouse.retry)."""
    database = sa.make_url(url).database
    if database in (None, "", ":memory:"):  # one database per connection: the pool must keep it
        return sa.create_engine(url, hide_parameters=True)
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool, hide_parameters=True)

    @sa.event.listens_for(engine, "do_connect")
    def _connect(dialect: sa.Dialect, _record: Any, cargs: Any, cparams: Any) -> Any:
        return with_lock_retry(lambda: dialect.connect(*cargs, **cparams))

    if is_duckdb_file(database):

        @sa.event.listens_for(engine, "connect")
        def _checkpoint_threshold(dbapi_connection: Any, _record: Any) -> None:
            dbapi_connection.execute(f"SET checkpoint_threshold = '{DUCKDB_CHECKPOINT_THRESHOLD}'")

    return engine


def _configure_sqlite(engine: sa.Engine) -> None:
    # pysqlite's own transaction handling defers BEGIN and cannot take the write lock up front; we
    # take over so that a write transaction starts with BEGIN IMMEDIATE and never fails half-way with
    # "database is locked" when another process writes at the same time.
    @sa.event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA busy_timeout=120000")
        # A page cache of 64 MiB instead of 2: a day's joins and ordered reads of a million rows
        # re-read their index pages from the file otherwise (a tenth of the stages' time at 1M).
        # Filled only as pages are read: a small database costs no more.
        cursor.execute(f"PRAGMA cache_size=-{SQLITE_CACHE_KIB}")
        cursor.close()

    @sa.event.listens_for(engine, "begin")
    def _begin(conn: sa.Connection) -> None:
        read_only = conn.get_execution_options().get("read_only", False)
        conn.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")


@contextlib.contextmanager
def reading(engine: sa.Engine) -> Iterator[sa.Connection]:
    """A connection for reads only: on SQLite its transactions begin deferred and never hold the
    write lock (a write transaction begins IMMEDIATE and holds it to its end, which stops every
    other writer of the file, the state store's too when both are one file)."""
    with engine.connect() as conn:
        yield conn.execution_options(read_only=True)


def is_postgres(engine: sa.Engine) -> bool:
    return engine.dialect.name == "postgresql"


def create_owned_tables(engine: sa.Engine, metadata: sa.MetaData) -> None:
    """Create a store's own tables (`metadata`: the warehouse's or the state store's) if missing;
    safe when several processes race. Unversioned: the stores' schemas are made by
    outbound_pipeline.warehouse.versioning, which uses `create_tables`."""
    with engine.begin() as conn:
        lock_ddl(conn)
        create_tables(conn, metadata)


def lock_ddl(conn: sa.Connection) -> None:
    """Serialise the processes that shape a store's schema until this transaction ends (SQLite's
    write transactions already run one at a time)."""
    if conn.dialect.name == "postgresql":
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(:id)"), {"id": _DDL_LOCK_ID})


def create_tables(conn: sa.Connection, metadata: sa.MetaData) -> None:
    """The tables of `metadata` that are missing, with their indexes where the engine has them."""
    indexed = conn.dialect.name in INDEXED_DIALECTS
    for table in metadata.sorted_tables:
        if not indexed:  # an analytical engine: the table without its indexes
            _create_bare(conn, table)
            continue
        table.create(conn, checkfirst=True)
        # create skips a table that exists: an index added since it was created comes here.
        for index in table.indexes:
            index.create(conn, checkfirst=True)


def _create_bare(conn: sa.Connection, table: sa.Table) -> None:
    """CREATE TABLE without the table's indexes (DuckDB's cost every bulk write), if missing."""
    if sa.inspect(conn).has_table(table.name, schema=table.schema):
        return
    conn.execute(sa.schema.CreateTable(table))


def lock_partition(
    conn: sa.Connection, purpose: str, campaign_key: str, partition_date: str, shared: bool = False
) -> None:
    """Serialise one partition's writers of one kind until this transaction ends (`shared`: with
    the exclusive holders only, not with each other).

    PostgreSQL takes a transaction-scoped advisory lock; SQLite needs none, as its transactions that
    write run one at a time.
    """
    if conn.dialect.name == "postgresql":
        name = f"{purpose}:{campaign_key}:{partition_date}"
        lock = sa.func.pg_advisory_xact_lock_shared if shared else sa.func.pg_advisory_xact_lock
        conn.execute(sa.select(lock(sa.func.hashtext(name))))


# Dialects that speak PostgreSQL's INSERT ... ON CONFLICT (DuckDB's SQLAlchemy dialect derives from it).
_PG_INSERT_DIALECTS = ("postgresql", "duckdb")


def dialect_insert(conn: sa.Connection | sa.Engine, table: sa.Table) -> Any:
    """INSERT with ON CONFLICT support, for the backend at hand."""
    pg_like = conn.dialect.name in _PG_INSERT_DIALECTS
    return (postgresql.insert if pg_like else sqlite.insert)(table)
