"""The warehouse resource: one SQLAlchemy engine on SQLite (embedded default) or PostgreSQL."""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import dagster as dg
import sqlalchemy as sa
from pydantic import PrivateAttr
from sqlalchemy.dialects import postgresql, sqlite

from outbound_pipeline.warehouse import tables
from outbound_pipeline.whatsapp import mask_phones_in

DEFAULT_WAREHOUSE_DIR = ".outbound"
ANALYZE_LOCK_TIMEOUT = "5s"
# An arbitrary constant: every process creating the owned tables takes the same advisory lock.
_DDL_LOCK_ID = 823_614_201

log = logging.getLogger(__name__)

P = ParamSpec("P")
R = TypeVar("R")


def embedded_warehouse_path() -> Path:
    """The embedded default: a SQLite file under the working directory (or OUTBOUND_HOME)."""
    home = os.environ.get("OUTBOUND_HOME")
    base = Path(home) if home else Path.cwd() / DEFAULT_WAREHOUSE_DIR
    return base / "warehouse.sqlite"


def normalise_url(url: str) -> str:
    """Use psycopg 3 for PostgreSQL URLs that name no driver."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


class PostgresUnreachable(RuntimeError):
    """The PostgreSQL server could not be reached; the message names it without its password."""


@contextlib.contextmanager
def temporary_postgres_database(server_url: str, prefix: str, keep: bool = False) -> Iterator[str]:
    """A new database on the PostgreSQL server, its URL yielded and the database dropped afterwards
    (unless keep). For tests and benchmarks: each gets a warehouse of its own."""
    admin = create_engine(server_url)
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    try:
        with admin.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
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


def create_engine(url: str) -> sa.Engine:
    url = normalise_url(url)
    # Statement errors would otherwise quote their parameters (phone numbers) in logs and the UI.
    if url.startswith("sqlite"):
        engine = sa.create_engine(url, connect_args={"timeout": 120}, poolclass=sa.pool.NullPool, hide_parameters=True)
        _configure_sqlite(engine)
        return engine
    return sa.create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=5, hide_parameters=True)


def _configure_sqlite(engine: sa.Engine) -> None:
    # pysqlite's own transaction handling defers BEGIN and cannot take the write lock up front; we
    # take over so that a write transaction starts with BEGIN IMMEDIATE and never fails half-way with
    # "database is locked" when another process writes at the same time.
    @sa.event.listens_for(engine, "connect")
    def _connect(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA busy_timeout=120000")
        cursor.close()

    @sa.event.listens_for(engine, "begin")
    def _begin(conn: sa.Connection) -> None:
        read_only = conn.get_execution_options().get("read_only", False)
        conn.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")


def is_postgres(engine: sa.Engine) -> bool:
    return engine.dialect.name == "postgresql"


def create_owned_tables(engine: sa.Engine) -> None:
    """Create the pipeline's own tables if missing; safe when several processes race."""
    with engine.begin() as conn:
        if is_postgres(engine):
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:id)"), {"id": _DDL_LOCK_ID})
        tables.metadata.create_all(conn, checkfirst=True)
        # create_all skips a table that exists: an index added since it was created comes here.
        for table in tables.metadata.sorted_tables:
            for index in table.indexes:
                index.create(conn, checkfirst=True)


def ensure_demo_seeded(engine: sa.Engine) -> None:
    """Seed the embedded default once, even when several step processes start together."""
    from outbound_pipeline.demo import demo_is_seeded, seed_demo

    if demo_is_seeded(engine):
        return
    try:
        seed_demo(engine)
    except Exception:
        # Another process won the race: its transaction committed first and ours failed.
        if not demo_is_seeded(engine):
            raise


class WarehouseResource(dg.ConfigurableResource):
    """The brand's warehouse: reads customers, consents and audience tables; writes outbound_* tables.

    `url` empty means the embedded SQLite default, seeded with demo data on first use. A warehouse named
    by URL is never seeded: the pipeline only reads the brand's tables there and writes its own.
    """

    url: str | None = None
    _engine: sa.Engine | None = PrivateAttr(default=None)

    @property
    def is_embedded(self) -> bool:
        return not self.url

    @property
    def resolved_url(self) -> str:
        if self.url:
            return normalise_url(self.url)
        return f"sqlite:///{embedded_warehouse_path()}"

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        self._engine = self.open()

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None

    def open(self) -> sa.Engine:
        """Build the engine, create the owned tables and, for the embedded default, the demo."""
        if self.is_embedded:
            embedded_warehouse_path().parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(self.resolved_url)
        create_owned_tables(engine)
        if self.is_embedded:
            ensure_demo_seeded(engine)
        return engine

    @property
    def engine(self) -> sa.Engine:
        if self._engine is None:
            self._engine = self.open()
        return self._engine

    @contextlib.contextmanager
    def reading(self) -> Iterator[sa.Connection]:
        """A connection for long reads that must not hold SQLite's write lock."""
        with self.engine.connect() as conn:
            yield conn.execution_options(read_only=True)

    def describe(self) -> str:
        """Where the data lives, without credentials, for metadata and logs."""
        return sa.make_url(self.resolved_url).render_as_string(hide_password=True)


def lock_partition(conn: sa.Connection, purpose: str, campaign_key: str, partition_date: str) -> None:
    """Serialise one partition's writers of one kind until this transaction ends.

    PostgreSQL takes a transaction-scoped advisory lock; SQLite needs none, as its transactions that
    write run one at a time.
    """
    if conn.dialect.name == "postgresql":
        name = f"{purpose}:{campaign_key}:{partition_date}"
        conn.execute(sa.select(sa.func.pg_advisory_xact_lock(sa.func.hashtext(name))))


def dialect_insert(conn: sa.Connection | sa.Engine, table: sa.Table) -> Any:
    """INSERT with ON CONFLICT support, for the backend at hand."""
    return (postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert)(table)


# From this many rows an upsert on PostgreSQL goes through COPY into a temporary table and one
# INSERT ... SELECT (a chunk of 5,000 audience rows: 0.65 s for 10 chunks against 1.1 s by executemany).
COPY_MIN_ROWS = 500


class WarehouseError(RuntimeError):
    """A database operation failed. The message names what failed and the database's reason, never
    the rows' values: the driver's own message may quote a whole row, phone number included."""


def database_message(exc: BaseException) -> str:
    """The database's own message for an error, every line, phone numbers masked: for a query the
    brand wrote, whose LINE and HINT lines help fix it. The driver's message, not SQLAlchemy's,
    which goes on to list the statement and its parameters."""
    orig = getattr(exc, "orig", None) or exc
    return mask_phones_in(str(orig).strip())


def database_reason(exc: BaseException) -> str:
    """The database's reason for an error, safe for logs and the UI: its error class and first line
    (a constraint, a column, a type), phone numbers masked. The lines after it (PostgreSQL's DETAIL
    and CONTEXT) quote rows and keys, and a ledger key is a phone number."""
    orig = getattr(exc, "orig", None) or exc
    first = (database_message(exc).splitlines() or [""])[0]
    return f"{type(orig).__name__}: {first[:300]}"


def rows_kept_out_of_errors(compute: Callable[P, R]) -> Callable[P, R]:
    """A Dagster body (asset, op, sensor) whose database errors leave it as WarehouseError with the
    database's reason only. The UI shows every line of a failure and of its causes, and a driver's
    message can go on to quote a row (PostgreSQL's DETAIL names a violated key or a failing row)."""

    @functools.wraps(compute)
    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return compute(*args, **kwargs)
        except sa.exc.DBAPIError as exc:
            raise WarehouseError(f"a database statement failed: {database_reason(exc)}") from None

    return run


def upsert_rows(conn: sa.Connection, table: sa.Table, rows: list[dict[str, Any]]) -> None:
    """Insert rows, replacing those with the same primary key (the last of the list wins).

    Two runs of one partition may write the same rows at once; the last writer wins instead of one
    of them failing on the key. Every row must have the keys of the first. A database error is
    raised as WarehouseError.
    """
    if not rows:
        return
    try:
        _upsert(conn, table, rows)
    except Exception as exc:
        if not isinstance(exc, sa.exc.DBAPIError | conn.dialect.loaded_dbapi.Error):
            raise
        raise WarehouseError(f"writing {len(rows)} rows to {table.name} failed: {database_reason(exc)}") from None


def _upsert(conn: sa.Connection, table: sa.Table, rows: list[dict[str, Any]]) -> None:
    upsert = _compiled_upsert(conn.dialect, table, tuple(rows[0]))
    if upsert.staging is not None and len(rows) >= COPY_MIN_ROWS:
        cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
        if hasattr(cursor, "copy"):  # psycopg 3
            with cursor:
                _copy_upsert(cursor, upsert, rows)
            return
        cursor.close()
    if upsert.positional is not None:
        processors = _by_position(upsert.positional, upsert.processors)
        params: list[Any] = [tuple(_row_values(row, upsert.positional, processors)) for row in rows]
    elif upsert.processors:
        params = [{**row, **{name: process(row[name]) for name, process in upsert.processors.items()}} for row in rows]
    else:
        params = rows
    conn.exec_driver_sql(upsert.sql, params)


def _copy_upsert(cursor: Any, upsert: _CompiledUpsert, rows: list[dict[str, Any]]) -> None:
    assert upsert.staging is not None
    # One INSERT may not touch a row twice: the last of rows with one key is kept, as executemany would.
    by_key = {tuple(row[name] for name in upsert.keys): row for row in rows}
    processors = _by_position(upsert.columns, upsert.processors)
    cursor.execute(upsert.staging.create)
    with cursor.copy(upsert.staging.copy) as copy:
        for row in by_key.values():
            copy.write_row(_row_values(row, upsert.columns, processors))
    cursor.execute(upsert.staging.merge)
    cursor.execute(upsert.staging.empty)


def _by_position(columns: tuple[str, ...], processors: dict[str, Any]) -> list[tuple[int, Any]]:
    return [(columns.index(name), process) for name, process in processors.items()]


def _row_values(row: dict[str, Any], columns: tuple[str, ...], processors: list[tuple[int, Any]]) -> list[Any]:
    """The row's values in column order, each converted as its column type does (booleans, ...)."""
    values = [row[name] for name in columns]
    for index, process in processors:
        values[index] = process(values[index])
    return values


@dataclass(frozen=True)
class _Staging:
    """PostgreSQL: a session's temporary copy of the table that rows are COPYed into, then merged."""

    create: str
    copy: str
    merge: str
    empty: str


@dataclass(frozen=True)
class _CompiledUpsert:
    sql: str
    columns: tuple[str, ...]
    keys: tuple[str, ...]
    positional: tuple[str, ...] | None  # parameter order for a positional driver (SQLite), else None
    processors: dict[str, Any]  # column -> SQLAlchemy's conversion of its values (booleans, ...)
    staging: _Staging | None  # PostgreSQL only


@functools.lru_cache(maxsize=64)
def _compiled_upsert(dialect: sa.Dialect, table: sa.Table, columns: tuple[str, ...]) -> _CompiledUpsert:
    # Compiled once and executed as the driver's own SQL with the column types' conversions applied
    # here: SQLAlchemy's per-row parameter handling costs more than the database's insert (about
    # 4 us a row on SQLite, 14 on PostgreSQL: half a minute for a million-recipient day).
    postgres = dialect.name == "postgresql"
    insert = (postgresql.insert if postgres else sqlite.insert)(table)
    keys = tuple(c.name for c in table.primary_key.columns)
    statement = insert.on_conflict_do_update(
        index_elements=list(keys), set_={name: insert.excluded[name] for name in columns if name not in keys}
    )
    compiled = statement.compile(dialect=dialect, column_keys=list(columns))
    unknown = set(compiled.binds) - set(columns)
    if unknown:
        raise ValueError(f"upsert into {table.name}: parameters {sorted(unknown)} are not among the row's columns")
    staging = None
    if postgres:
        quote = dialect.identifier_preparer.quote
        target = dialect.identifier_preparer.format_table(table)
        temp = quote(f"outbound_upsert_{table.name}")
        listed = ", ".join(quote(name) for name in columns)
        updates = ", ".join(f"{quote(name)} = excluded.{quote(name)}" for name in columns if name not in keys)
        staging = _Staging(
            create=f"CREATE TEMPORARY TABLE IF NOT EXISTS {temp} (LIKE {target}) ON COMMIT DELETE ROWS",
            copy=f"COPY {temp} ({listed}) FROM STDIN",
            merge=(
                f"INSERT INTO {target} ({listed}) SELECT {listed} FROM {temp} "
                f"ON CONFLICT ({', '.join(quote(k) for k in keys)}) "
                + (f"DO UPDATE SET {updates}" if updates else "DO NOTHING")
            ),
            # Emptied at once: a second upsert in the same transaction must not merge these again.
            empty=f"TRUNCATE {temp}",
        )
    return _CompiledUpsert(
        sql=compiled.string,
        columns=columns,
        keys=keys,
        positional=tuple(compiled.positiontup or ()) if compiled.positional else None,
        processors={
            name: process
            for name in columns
            if (process := table.c[name].type.dialect_impl(dialect).bind_processor(dialect)) is not None
        },
        staging=staging,
    )


def refresh_statistics(engine: sa.Engine, *tables: sa.Table) -> None:
    """ANALYZE tables just bulk-written, on PostgreSQL.

    Until autovacuum comes by, a freshly filled table has no statistics and the planner may join it
    with a nested loop: the checks and reconcile over a 100,000-row day then run for many minutes
    instead of a second. SQLite plans from its indexes and needs nothing.
    """
    if not is_postgres(engine):
        return
    for table in tables:
        try:
            with engine.begin() as conn:
                # Statistics are an optimisation: never wait long behind a vacuum for them, nor fail.
                conn.execute(sa.text(f"SET LOCAL lock_timeout = '{ANALYZE_LOCK_TIMEOUT}'"))
                conn.execute(sa.text(f"ANALYZE {conn.dialect.identifier_preparer.format_table(table)}"))
        except sa.exc.DBAPIError as exc:
            log.warning("ANALYZE %s skipped: %s", table.name, getattr(exc, "orig", exc))

