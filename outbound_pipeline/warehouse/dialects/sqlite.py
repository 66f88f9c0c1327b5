"""SQLite: compiled INSERT (or INSERT ... ON CONFLICT) run by `executemany` over the whole batch.
SQLite works in this process; nothing beats one prepared statement stepped over every row."""

from __future__ import annotations

import sqlalchemy as sa

from outbound_pipeline.warehouse.dialects.compiled import compiled, driver_parameters
from outbound_pipeline.warehouse.dialects.portable import Loader
from outbound_pipeline.warehouse.dialects.prepared import (
    Prepared,
    Rows,
    last_per_key,
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
        statement = compiled(conn.dialect, prepared.table, prepared.columns, upsert)
        if upsert:
            # executemany applies the rows in order: the last of rows with one key wins anyway.
            values = last_per_key(prepared, values)
        conn.exec_driver_sql(statement.sql, driver_parameters(statement, prepared.columns, values))
