"""Snowflake: its own bulk path. A batch of 1,000 rows or more is written as a Parquet file, PUT to
the table's own stage (`@%table`: every table has one, nothing to create; using it takes the
table's ownership, which the pipeline's role has of its tables: docs/warehouses.md) and loaded by
one `COPY INTO ... MATCH_BY_COLUMN_NAME`, in the caller's transaction.

Not `write_pandas`: it creates a temporary stage first, and Snowflake commits the open transaction
before any DDL, so a partition's delete-then-insert would no longer be one transaction. PUT creates
nothing and COPY INTO is DML: both stay inside the caller's transaction, which commits or rolls
back the load with the rest.

The file holds what an INSERT would send. Timestamps are ISO 8601 text with their offset, read
as an INSERT's literal is (a Parquet timestamp would be loaded into a TIMESTAMP_TZ column with the
session's offset, where an INSERT keeps +00:00). A batch the file cannot hold the same way goes
through INSERT, whose rules are the reference: a column type not mapped here, a value Arrow
refuses, a column left out that has a default or is NOT NULL (COPY would leave it NULL).

Smaller batches are INSERT statements (the connector sends an executemany as one multi-row
INSERT): a file's upload costs a round trip to cloud storage. An
upsert deletes the batch's keys first, as the portable loader does: Snowflake enforces no key."""

from __future__ import annotations

import logging
import tempfile
import uuid
from pathlib import Path
from typing import Any

import pyarrow as pa
import sqlalchemy as sa

from outbound_pipeline.warehouse.dialects.arrow import arrow_type
from outbound_pipeline.warehouse.dialects.portable import Loader
from outbound_pipeline.warehouse.dialects.prepared import Prepared
from outbound_pipeline.warehouse.errors import WarehouseError

# From this many rows a write is a Parquet file loaded by COPY INTO.
COPY_FROM_ROWS = 1_000
# Where a load's file waits in the table's stage: a folder of its own, so that COPY INTO loads
# this file alone, and a name Snowflake's load history has never seen.
_STAGE_FOLDER = "outbound_loads"

log = logging.getLogger(__name__)


class SnowflakeLoader(Loader):
    """COPY INTO from the table's stage from `copy_from_rows` rows on; INSERT below, and for a
    batch a Parquet file cannot hold as an INSERT would."""

    # Key lists (an upsert's DELETEs): Snowflake takes 16,384 expressions in an IN list, and the
    # connector writes the keys into the statement's text, which Snowflake advises keeping under
    # 1 MB (half of it here). A statement costs a round trip and a scan, billed: 4 DELETEs for
    # 50,000 short keys, not 50.
    keys_per_list = 16_000
    key_list_bytes = 512 * 1024

    def __init__(self, copy_from_rows: int = COPY_FROM_ROWS) -> None:
        self.copy_from_rows = copy_from_rows

    def _insert_values(
        self, conn: sa.Connection, prepared: Prepared, values: list[list[Any]]
    ) -> None:
        copies = len(values) >= self.copy_from_rows and _copies_as_inserted(prepared)
        frame = _arrow_table(prepared, values) if copies else None
        if frame is None:
            super()._insert_values(conn, prepared, values)
            return
        copy_into(conn, prepared.table, frame)


def copy_into(conn: sa.Connection, table: sa.Table, frame: pa.Table) -> None:
    """An Arrow table of rows loaded into `table` by PUT and COPY INTO, on `conn` in its
    transaction. Raises WarehouseError when Snowflake loads another number of rows."""
    stage = f"{_table_stage(conn.dialect, table)}/{_STAGE_FOLDER}/{uuid.uuid4().hex}/"
    with tempfile.TemporaryDirectory(prefix="outbound_load_") as folder:
        path = Path(folder) / "rows.parquet"
        # Imported here: Parquet's writer is for Snowflake alone, not for every process's start.
        import pyarrow.parquet

        pyarrow.parquet.write_table(frame, path)
        conn.exec_driver_sql(f"PUT '{path.as_uri()}' {stage} AUTO_COMPRESS=FALSE")
    try:
        results = conn.exec_driver_sql(
            f"COPY INTO {conn.dialect.identifier_preparer.format_table(table)} FROM {stage} "
            "FILE_FORMAT=(TYPE=PARQUET USE_LOGICAL_TYPE=TRUE) "
            "MATCH_BY_COLUMN_NAME=CASE_INSENSITIVE ON_ERROR=ABORT_STATEMENT PURGE=TRUE"
        ).mappings()
        loaded = sum(int(row.get("rows_loaded") or 0) for row in results)
    except sa.exc.DBAPIError:
        _remove(conn, stage)
        raise
    if loaded != frame.num_rows:
        raise WarehouseError(
            f"writing {frame.num_rows} rows to {table.name}: Snowflake's COPY INTO loaded {loaded}"
        )


def _copies_as_inserted(prepared: Prepared) -> bool:
    """Whether COPY INTO leaves the columns these rows lack as an INSERT would: every one of them
    nullable without a default (COPY leaves it NULL). Their values' types: _arrow_table."""
    table, given = prepared.table, set(prepared.columns)
    return all(
        c.nullable and c.default is None and c.server_default is None
        for c in table.columns
        if c.name not in given
    )


def _arrow_table(prepared: Prepared, values: list[list[Any]]) -> pa.Table | None:
    """The rows as an Arrow table of their columns' types, timestamps as ISO 8601 text; None for
    a column type not mapped (arrow.arrow_type) or a value Arrow refuses."""
    arrays = {}
    for name, column in zip(prepared.columns, zip(*values, strict=True), strict=True):
        sql_type = prepared.table.c[name].type
        if isinstance(sql_type, sa.DateTime):
            # An aware timestamp (value_lists brought it to UTC) keeps its offset, +00:00.
            kind: pa.DataType | None = pa.string()
            column = tuple(None if v is None else v.isoformat() for v in column)
        else:
            kind = arrow_type(sql_type)
        if kind is None:
            return None
        try:
            arrays[name] = pa.array(column, type=kind)
        except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError, AttributeError):
            return None
    return pa.table(arrays)


def _table_stage(dialect: sa.Dialect, table: sa.Table) -> str:
    """The table's own stage: `@%name`, `@schema.%name` for a table in a named schema."""
    preparer = dialect.identifier_preparer
    schema = f"{preparer.quote_schema(table.schema)}." if table.schema else ""
    return f"@{schema}%{preparer.quote(table.name)}"


def _remove(conn: sa.Connection, stage: str) -> None:
    """A failed load's file taken out of the stage (PURGE removes it only after a load)."""
    try:
        conn.exec_driver_sql(f"REMOVE {stage}")
    except sa.exc.DBAPIError as exc:
        log.warning("a failed load's file was left in %s: %s", stage, type(exc).__name__)
