"""SQLite: compiled INSERT (or INSERT ... ON CONFLICT) run by `executemany` over the whole batch.
SQLite works in this process; nothing beats one prepared statement stepped over every row."""

from __future__ import annotations

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

    def insert(self, conn: sa.Connection, prepared: Prepared, rows: Rows) -> None:
        self._run(conn, prepared, value_lists(prepared, rows), upsert=False)

    def upsert(self, conn: sa.Connection, prepared: Prepared, rows: Rows) -> None:
        self._run(conn, prepared, value_lists(prepared, rows), upsert=True)

    def _run(
        self, conn: sa.Connection, prepared: Prepared, values: list[list[object]], upsert: bool
    ) -> None:
        # executemany runs the statement row after row, in order: of rows with one key, the last
        # wins without a pass to keep one per key.
        statement = compiled(conn.dialect, prepared.table, prepared.columns, upsert)
        conn.exec_driver_sql(statement.sql, driver_parameters(statement, prepared.columns, values))
