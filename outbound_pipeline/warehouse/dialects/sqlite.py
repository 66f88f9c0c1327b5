"""SQLite: compiled INSERT (or INSERT ... ON CONFLICT) run by `executemany` over the whole batch.
SQLite works in this process; nothing beats one prepared statement stepped over every row. From
SQLite to SQLite (a SQLite state store's ledger published to a SQLite warehouse) the values travel
as the driver stores them, no Python conversion on the way."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from outbound_pipeline.warehouse.dialects.compiled import compiled, driver_parameters
from outbound_pipeline.warehouse.dialects.portable import Loader
from outbound_pipeline.warehouse.dialects.prepared import (
    Prepared,
    Rows,
    value_lists,
)


class ExecutemanyLoader(Loader):
    """The compiled statement through the driver's executemany (SQLite; small PostgreSQL batches)."""

    applies_processors = True
    compares_text_exactly = True  # PostgresLoader's too
    # 50,000 rows a transaction, not a chunk (5,000): the stage tables' keys (row_key, a hash, and
    # the recipient) land all over their indexes, so a commit writes a page of each index for
    # nearly every row it holds, and a larger one writes each page it touches once for more rows.
    # A million rows keyed so (a script, docs/performance.md): written in 19.8 s in 20,000-row
    # transactions (commits 9.2 s), 15.0 s in 50,000-row ones (commits 4.6 s). The write lock
    # (the state store's too, when both share the file) is held about 0.7 s a transaction.
    stage_rows = 50_000

    def insert(self, conn: sa.Connection, prepared: Prepared, rows: Rows) -> None:
        self._run(conn, prepared, value_lists(prepared, rows), upsert=False)

    def upsert(self, conn: sa.Connection, prepared: Prepared, rows: Rows) -> None:
        self._run(conn, prepared, value_lists(prepared, rows), upsert=True)

    def _run(
        self, conn: sa.Connection, prepared: Prepared, values: list[list[object]], upsert: bool
    ) -> None:
        # executemany runs the statement row after row, in order: of rows with one key, the last
        # wins without a pass to keep one per key. (Sorted by key first, each statement ran a
        # sixth faster, yet a million-customer audience + messages took 74 s against 64 s.)
        statement = compiled(conn.dialect, prepared.table, prepared.columns, upsert)
        conn.exec_driver_sql(statement.sql, driver_parameters(statement, prepared.columns, values))


def copy_stored_values(
    read: sa.Connection,
    query: sa.Select[Any],
    write: sa.Connection,
    table: sa.Table,
    where: sa.ColumnElement[bool],
    columns: tuple[str, ...],
    chunk_rows: int = 20_000,
) -> int:
    """SQLite to SQLite: the partition deleted, then the query's rows read as SQLite stores them
    (a timestamp stays its UTC text, a boolean its integer) and written the same way. Both ends
    store each type alike, so the copy is exact, in about half the time of parsing every value
    into Python and formatting it again (a million ledger rows: 18-24 s against 41-44)."""
    write.execute(sa.delete(table).where(where))
    statement = compiled(write.dialect, table, columns, upsert=False)
    # SQLAlchemy binds the query's parameters (its conversions, lists expanded), and the rows are
    # then read from pysqlite's own cursor: SQLite streams them as they are stepped, nothing
    # buffered ahead, as it stores them (no result conversion), tuples executemany takes as they
    # are (a Row object and a tuple more per row cost 3 s per million rows).
    result = read.execute(query)
    cursor, written = result.cursor, 0
    try:
        while chunk := cursor.fetchmany(chunk_rows):
            write.exec_driver_sql(statement.sql, driver_parameters(statement, columns, chunk))
            written += len(chunk)
    finally:
        result.close()
    return written
