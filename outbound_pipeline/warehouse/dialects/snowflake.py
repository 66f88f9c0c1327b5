"""Snowflake: Snowflake's own bulk path. A batch is written as a Parquet file, PUT to the table's
own stage (`@%table`, which every table has: nothing to create) and loaded by one
`COPY INTO ... MATCH_BY_COLUMN_NAME`, in the caller's transaction.

Not `write_pandas`: it creates a temporary stage first, and Snowflake commits the open transaction
before any DDL, so a partition's delete-then-insert would no longer be one transaction. PUT creates
nothing and COPY INTO is DML: both stay inside the caller's transaction, which commits or rolls
back the load with the rest.

Small batches, and an installation without pyarrow, go through the portable loader's multi-row
INSERT: a file's upload costs a round trip to cloud storage, and an INSERT of a few hundred rows
less than that. Snowflake does not enforce primary keys: an upsert deletes the batch's keys first,
as the portable loader does."""

from __future__ import annotations

import functools
import logging
import tempfile
import uuid
from pathlib import Path
from types import ModuleType
from typing import Any

import sqlalchemy as sa

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
    def __init__(self, copy_from_rows: int = COPY_FROM_ROWS) -> None:
        self.copy_from_rows = copy_from_rows

    def _insert_values(
        self, conn: sa.Connection, prepared: Prepared, values: list[list[Any]]
    ) -> None:
        arrow = _pyarrow() if len(values) >= self.copy_from_rows else None
        if arrow is None:
            super()._insert_values(conn, prepared, values)
            return
        copy_into(conn, prepared, values, arrow)


def copy_into(
    conn: sa.Connection, prepared: Prepared, values: list[list[Any]], arrow: ModuleType
) -> None:
    """The rows (lists in `prepared.columns` order) loaded into `prepared.table` by PUT and COPY
    INTO, on `conn` in its transaction. Raises WarehouseError, naming the column and never a value,
    when a value does not fit its column's type, or when Snowflake loads another number of rows."""
    table = prepared.table
    frame = _arrow_table(prepared, values, arrow)
    stage = f"{_table_stage(conn.dialect, table)}/{_STAGE_FOLDER}/{uuid.uuid4().hex}/"
    with tempfile.TemporaryDirectory(prefix="outbound_load_") as folder:
        path = Path(folder) / f"{table.name}.parquet"
        arrow.parquet.write_table(frame, path)
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
    if loaded != len(values):
        raise WarehouseError(
            f"writing {len(values)} rows to {table.name}: Snowflake's COPY INTO loaded {loaded}"
        )


def _arrow_table(prepared: Prepared, values: list[list[Any]], arrow: ModuleType) -> Any:
    """The rows as an Arrow table of the SQL columns' types (timestamps already in UTC)."""
    columns = list(zip(*values, strict=True))
    arrays = {}
    for name, column in zip(prepared.columns, columns, strict=True):
        sql_type = prepared.table.c[name].type
        try:
            arrays[name] = arrow.array(column, type=_arrow_type(sql_type, arrow))
        except (arrow.ArrowInvalid, arrow.ArrowTypeError, OverflowError):
            # Arrow's message quotes the value: it may be a phone number.
            raise WarehouseError(
                f"writing {len(values)} rows to {prepared.table.name}: a value of column {name} "
                f"does not fit its type, {sql_type}"
            ) from None
    return arrow.table(arrays)


def _arrow_type(sql_type: sa.types.TypeEngine[Any], arrow: ModuleType) -> Any:
    """The Arrow type a column's values are written as; None lets Arrow infer it."""
    if isinstance(sql_type, sa.Boolean):
        return arrow.bool_()
    if isinstance(sql_type, sa.Integer):
        return arrow.int64()
    if isinstance(sql_type, sa.Float):
        return arrow.float64()
    if isinstance(sql_type, sa.DateTime):
        return arrow.timestamp("us", tz="UTC" if sql_type.timezone else None)
    if isinstance(sql_type, sa.Date):
        return arrow.date32()
    if isinstance(sql_type, sa.String):
        return arrow.string()
    return None


def _table_stage(dialect: sa.Dialect, table: sa.Table) -> str:
    """The table's own stage: `@%name`, `@schema.%name` for a table in a named schema."""
    quote = dialect.identifier_preparer.quote
    schema = f"{quote(table.schema)}." if table.schema else ""
    return f"@{schema}%{quote(table.name)}"


def _remove(conn: sa.Connection, stage: str) -> None:
    """A failed load's file taken out of the stage (PURGE removes it only after a load)."""
    try:
        conn.exec_driver_sql(f"REMOVE {stage}")
    except sa.exc.DBAPIError as exc:
        log.warning("a failed load's file was left in %s: %s", stage, type(exc).__name__)


@functools.cache
def _pyarrow() -> ModuleType | None:
    """pyarrow with its Parquet writer, or None (and one warning) when it is not installed."""
    try:
        import pyarrow
        import pyarrow.parquet  # noqa: F401  (pyarrow.parquet.write_table)
    except ImportError:
        log.warning(
            "pyarrow is not installed: Snowflake writes go through INSERT statements, not "
            "COPY INTO (pip install 'outbound_pipeline[snowflake]')"
        )
        return None
    return pyarrow
