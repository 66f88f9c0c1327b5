"""PostgreSQL: COPY. An insert COPYs straight into the table; an upsert COPYs into a temporary
copy of the table and merges it with one INSERT ... SELECT ... ON CONFLICT (a chunk of 5,000
audience rows: 0.65 s for 10 chunks against 1.1 s by executemany). Small batches and drivers
without COPY (psycopg 2) go through the compiled statement's executemany. From one PostgreSQL
database to another (the state store's ledger published to the warehouse), `pipe_copy` streams
`COPY (SELECT ...) TO STDOUT` into `COPY ... FROM STDIN`: no Python value per row, and in binary
where the columns' types are the same on both sides."""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from outbound_pipeline.warehouse.dialects.prepared import (
    Prepared,
    Rows,
    last_per_key,
    value_lists,
)
from outbound_pipeline.warehouse.dialects.sqlite import ExecutemanyLoader

# From this many rows a write goes through COPY.
COPY_MIN_ROWS = 500
ANALYZE_LOCK_TIMEOUT = "5s"

log = logging.getLogger(__name__)


class PostgresLoader(ExecutemanyLoader):
    # A chunk a transaction: a PostgreSQL commit writes no index page again, and 20,000-row
    # transactions were not faster (docs/performance.md).
    stage_rows = 1
    # COPY straight into the table: a million-customer day's reads and writes took 29-32 s
    # against 46-48 s through the staging table's merge (docs/performance.md).
    stage_inserts_first = True

    def insert(self, conn: sa.Connection, prepared: Prepared, rows: Rows) -> None:
        cursor = _copy_cursor(conn, len(rows))
        if cursor is None:
            super().insert(conn, prepared, rows)
            return
        statements = _statements(conn.dialect, prepared.table, prepared.columns)
        with cursor:
            _copy(cursor, statements.copy_into_table, value_lists(prepared, rows))

    def upsert(self, conn: sa.Connection, prepared: Prepared, rows: Rows) -> None:
        cursor = _copy_cursor(conn, len(rows))
        if cursor is None:
            super().upsert(conn, prepared, rows)
            return
        statements = _statements(conn.dialect, prepared.table, prepared.columns)
        with cursor:
            cursor.execute(statements.create_staging)
            _copy(
                cursor,
                statements.copy_into_staging,
                last_per_key(prepared, value_lists(prepared, rows)),
            )
            cursor.execute(statements.merge)
            # Emptied at once: a second upsert in the same transaction must not merge these again.
            cursor.execute(statements.empty_staging)

    def analyze(self, conn: sa.Connection, table: sa.Table) -> None:
        """ANALYZE a table just bulk-written: until autovacuum comes by, the planner may join it
        with a nested loop (minutes instead of a second). Never waited for long, never fatal."""
        name = conn.dialect.identifier_preparer.format_table(table)
        try:
            with conn.begin_nested():
                conn.exec_driver_sql(f"SET LOCAL lock_timeout = '{ANALYZE_LOCK_TIMEOUT}'")
                conn.exec_driver_sql(f"ANALYZE {name}")
        except sa.exc.OperationalError as exc:
            log.warning("ANALYZE %s skipped: %s", table.name, getattr(exc, "orig", exc))


def pipe_copy(
    read: sa.Connection,
    query: sa.Select[Any],
    write: sa.Connection,
    table: sa.Table,
    columns: tuple[str, ...],
) -> int | None:
    """Insert what `query` selects on `read` into `table`'s `columns` on `write` (both PostgreSQL
    through psycopg 3), as COPY's text stream from one to the other; the rows copied. None when
    a side cannot COPY (the caller copies row by row)."""
    sink = write.connection.driver_connection.cursor()  # type: ignore[union-attr]
    with sink:
        if not hasattr(sink, "copy"):
            return None
        # Binary where each column has the same type on both sides: no value printed as text by
        # one server and parsed by the other (timestamps the dearest), about a third less time.
        binary = " (FORMAT binary)" if _same_types(read, query, write, sink, table, columns) else ""
        with copied_out(read, query, binary) as out:
            if out is None:
                return None
            into_table = _statements(write.dialect, table, columns).copy_into_table
            with sink.copy(into_table + binary) as into:
                for chunk in out:
                    into.write(chunk)
        return int(sink.rowcount)


def _for_the_driver(query: sa.Select[Any], dialect: sa.Dialect) -> tuple[str, dict[str, Any]]:
    """The query as psycopg takes it straight: its SQL, lists rendered in place (IN (...), which
    SQLAlchemy otherwise expands at execution), and its parameters."""
    compiled = query.compile(dialect=dialect, compile_kwargs={"render_postcompile": True})
    return compiled.string, compiled.params


# Types whose binary form is the same: the text of a string.
_TEXT_TYPES = frozenset({25, 1043})  # text, varchar


def _same_types(
    read: sa.Connection,
    query: sa.Select[Any],
    write: sa.Connection,
    sink: Any,
    table: sa.Table,
    columns: tuple[str, ...],
) -> bool:
    """Whether the columns `query` selects have, in the databases themselves, the types of
    `table`'s `columns` (binary COPY reads each value as its column's type: an int8 read as an
    int4 fails). A length or precision is checked by the receiving side, as with text."""
    sql, params = _for_the_driver(query, read.dialect)
    with read.connection.driver_connection.cursor() as source:  # type: ignore[union-attr]
        source.execute(f"SELECT * FROM ({sql}) AS selected LIMIT 0", params)
        selected = [column.type_code for column in source.description or ()]
    sink.execute(
        "SELECT attname, atttypid FROM pg_attribute WHERE attrelid = %s::regclass "
        "AND attnum > 0 AND NOT attisdropped",
        (write.dialect.identifier_preparer.format_table(table),),
    )
    stored = dict(sink.fetchall())
    if len(selected) != len(columns) or not set(columns) <= set(stored):
        return False
    return all(
        theirs == stored[name] or {theirs, stored[name]} <= _TEXT_TYPES
        for theirs, name in zip(selected, columns, strict=True)
    )


@contextlib.contextmanager
def copied_out(
    read: sa.Connection, query: sa.Select[Any], options: str = ""
) -> Iterator[Iterable[Any] | None]:
    """The chunks of `COPY (query) TO STDOUT options` on `read` (psycopg 3), or None when its
    driver cannot COPY."""
    source = read.connection.driver_connection.cursor()  # type: ignore[union-attr]
    with source:
        if not hasattr(source, "copy"):
            yield None
            return
        sql, params = _for_the_driver(query, read.dialect)
        with source.copy(f"COPY ({sql}) TO STDOUT{options}", params) as out:
            yield out


def _copy_cursor(conn: sa.Connection, rows: int) -> Any:
    """A psycopg 3 cursor that can COPY, for a batch worth it; else None."""
    if rows < COPY_MIN_ROWS:
        return None
    cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    if hasattr(cursor, "copy"):
        return cursor
    cursor.close()
    return None


def _copy(cursor: Any, statement: str, values: list[list[Any]]) -> None:
    with cursor.copy(statement) as copy:
        for row in values:
            copy.write_row(row)


@dataclass(frozen=True)
class _Statements:
    copy_into_table: str
    create_staging: str
    copy_into_staging: str
    merge: str
    empty_staging: str


@functools.lru_cache(maxsize=64)
def _statements(dialect: sa.Dialect, table: sa.Table, columns: tuple[str, ...]) -> _Statements:
    quote = dialect.identifier_preparer.quote
    target = dialect.identifier_preparer.format_table(table)
    staging = quote(f"outbound_upsert_{table.name}")
    keys = [c.name for c in table.primary_key.columns]
    listed = ", ".join(quote(name) for name in columns)
    updates = ", ".join(
        f"{quote(name)} = excluded.{quote(name)}" for name in columns if name not in keys
    )
    return _Statements(
        copy_into_table=f"COPY {target} ({listed}) FROM STDIN",
        create_staging=(
            f"CREATE TEMPORARY TABLE IF NOT EXISTS {staging} (LIKE {target}) ON COMMIT DELETE ROWS"
        ),
        copy_into_staging=f"COPY {staging} ({listed}) FROM STDIN",
        merge=(
            f"INSERT INTO {target} ({listed}) SELECT {listed} FROM {staging} "
            f"ON CONFLICT ({', '.join(quote(k) for k in keys)}) "
            + (f"DO UPDATE SET {updates}" if updates else "DO NOTHING")
        ),
        empty_staging=f"TRUNCATE {staging}",
    )
