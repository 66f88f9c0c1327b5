"""The one place that knows each warehouse dialect: how rows are bulk-written (COPY on
PostgreSQL, NumPy columns and INSERT ... SELECT on DuckDB, executemany of a compiled statement on
SQLite, a Parquet file loaded by COPY INTO on Snowflake, multi-row INSERTs on BigQuery and
Databricks, SQLAlchemy's batched executemany anywhere else), upserts and per-partition
delete-then-insert, how a date is bound, how names are quoted, and fresh statistics after a load.

Every warehouse write of the stages (audience, messages, the published ledger, the report) and the
state store's plan copy go through here."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import pyarrow as pa
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from outbound_pipeline.warehouse.dialects.arrow import BatchPacker, as_is, as_rows
from outbound_pipeline.warehouse.dialects.difference import partition_rows
from outbound_pipeline.warehouse.dialects.duckdb import DuckDBLoader, copy_from_postgres
from outbound_pipeline.warehouse.dialects.portable import Loader, MultiRowLoader
from outbound_pipeline.warehouse.dialects.postgres import PostgresLoader, pipe_copy
from outbound_pipeline.warehouse.dialects.prepared import Rows
from outbound_pipeline.warehouse.dialects.snowflake import SnowflakeLoader
from outbound_pipeline.warehouse.dialects.sqlite import ExecutemanyLoader, copy_stored_values
from outbound_pipeline.warehouse.errors import WarehouseError, database_reason

_LOADERS: dict[str, Loader] = {
    "postgresql": PostgresLoader(),
    "sqlite": ExecutemanyLoader(),
    "duckdb": DuckDBLoader(),
    "snowflake": SnowflakeLoader(),
    # A statement per row from their drivers' executemany. BigQuery compares a DATE column only
    # with a DATE, and binds an IN list as one array (a DELETE job for 10,000 keys, not 1,000);
    # Databricks' server takes at most 256 parameters a statement.
    "bigquery": MultiRowLoader(
        dates_as_text=False, in_list_binds_each_value=False, keys_per_list=10_000
    ),
    "databricks": MultiRowLoader(statement_parameters=255),
}
_PORTABLE = Loader()


def loader_for(dialect: sa.Dialect) -> Loader:
    """The dialect's loader; the portable one for a dialect without a faster path."""
    return _LOADERS.get(dialect.name, _PORTABLE)


def insert_rows(
    conn: sa.Connection, table: sa.Table, rows: Rows, columns: Sequence[str] | None = None
) -> None:
    """Add rows that are not in the table yet (e.g. after deleting their partition).

    Rows are mappings, or sequences in the order of `columns`. A database error is raised as
    WarehouseError, without the rows' values."""
    _write(conn, table, rows, columns, upsert=False)


def upsert_rows(
    conn: sa.Connection, table: sa.Table, rows: Rows, columns: Sequence[str] | None = None
) -> None:
    """Insert rows, replacing those with the same primary key (the last of the rows wins).

    Two runs of one partition may write the same rows at once; the last writer wins instead of one
    of them failing on the key. A database error is raised as WarehouseError."""
    _write(conn, table, rows, columns, upsert=True)


def _write(
    conn: sa.Connection, table: sa.Table, rows: Rows, columns: Sequence[str] | None, upsert: bool
) -> None:
    if not rows:
        return
    loader = loader_for(conn.dialect)
    prepared = loader.prepared(conn, table, rows, columns)
    try:
        (loader.upsert if upsert else loader.insert)(conn, prepared, rows)
    except Exception as exc:
        if not isinstance(exc, sa.exc.DBAPIError | conn.dialect.loaded_dbapi.Error):
            raise
        raise WarehouseError(
            f"writing {len(rows)} rows to {table.name} failed: {database_reason(exc)}"
        ) from None


class StageWrites:
    """A stage's rows upserted into `table` on `conn` (rows: mappings, or sequences in the order
    of `columns`), gathered into transactions of the dialect's `Loader.stage_rows` rows or more:
    each chunk as it comes on PostgreSQL, 20,000 rows on DuckDB, 50,000 on SQLite and where a
    statement costs more. `flush` writes what is left: a stage that fails before it writes
    nothing more (its next run replaces the partition).

    Where the engine enforces keys and an upsert costs more (`Loader.stage_inserts_first`:
    DuckDB, PostgreSQL), a transaction's rows are inserted, and upserted only when that fails:
    the stage replaced its partition first, so a key is there already only when a concurrent run
    of the partition wrote it.

    `pack` turns rows (sequences in the order of `columns`) into what `add` takes fastest: a
    record batch where the engine scans Arrow (DuckDB), the rows as they are elsewhere;
    `pack_columns` does the same from the rows' columns (each a sequence of one column's values,
    in the order of `columns`): the batch, or rows as lists. Both pickle: a stage's workers pack
    their own rows."""

    def __init__(
        self, conn: sa.Connection, table: sa.Table, columns: Sequence[str] | None = None
    ) -> None:
        self._conn, self._table, self._columns = conn, table, columns
        loader = loader_for(conn.dialect)
        self._batch_rows, self._insert_first = loader.stage_rows, loader.stage_inserts_first
        packer = BatchPacker.of(table, columns) if loader.scans_arrow and columns else None
        self.pack: Callable[[Sequence[Sequence[Any]]], Any] = packer or as_is
        self.pack_columns: Callable[[Sequence[Sequence[Any]]], Any] = (
            as_rows if packer is None else packer.columns
        )
        self._pending: list[Any] = []
        self._batches: list[pa.RecordBatch] = []

    def add(self, rows: Rows | pa.RecordBatch) -> None:
        """Rows (mappings, or sequences in the order of `columns`), or a batch `pack` made; a
        key's last row wins, whichever form each came in."""
        if isinstance(rows, pa.RecordBatch):
            if self._pending:  # written first: they came first
                self.flush()
            self._batches.append(rows)
        else:
            if self._batches:
                self.flush()
            self._pending.extend(rows)
        if len(self._pending) + sum(map(len, self._batches)) >= self._batch_rows:
            self.flush()

    def flush(self) -> None:
        """Write what was added since the last flush: the batches as one Arrow table, the rows."""
        if self._batches:
            self._write(pa.Table.from_batches(self._batches))
            self._batches = []
        if self._pending:
            self._write(self._pending)
            self._pending = []

    def _write(self, rows: Rows | pa.Table) -> None:
        inserted: WarehouseError | None = None
        if self._insert_first:
            try:
                with self._conn.begin():
                    insert_rows(self._conn, self._table, rows, self._columns)
            except WarehouseError as exc:  # rolled back: a key already there, most likely
                inserted = exc
                self._insert_first = False  # a concurrent run is writing: upsert from now on
            else:
                return
        try:
            with self._conn.begin():
                upsert_rows(self._conn, self._table, rows, self._columns)
        except WarehouseError as exc:
            raise exc from inserted  # the insert's error, if any, shown as its cause


def replace_partition(
    conn: sa.Connection,
    table: sa.Table,
    where: sa.ColumnElement[bool],
    batches: Iterable[Rows],
    columns: Sequence[str] | None = None,
) -> int:
    """Delete the rows `where` selects and insert `batches` instead, on `conn` (the caller's
    transaction: one transaction makes the replacement atomic and idempotent). The rows written."""
    conn.execute(sa.delete(table).where(where))
    written = 0
    for batch in batches:
        insert_rows(conn, table, batch, columns)
        written += len(batch)
    return written


def replace_partition_from(
    read: sa.Connection,
    query: sa.Select[Any],
    write: sa.Connection,
    table: sa.Table,
    where: sa.ColumnElement[bool],
    chunk_rows: int,
) -> int:
    """replace_partition with the rows `query` selects on `read` (another database, or another
    connection to the same one): streamed from engine to engine where both have a bulk path for
    it (PostgreSQL to PostgreSQL: COPY piped into COPY; PostgreSQL to DuckDB: CSV COPY read by
    read_csv, only the rows that differ written; SQLite to SQLite: the values as stored), else read in chunks of `chunk_rows` and written
    through the dialect's loader. The query's columns are named as the table's."""
    columns = tuple(query.selected_columns.keys())
    pipe = _pipe(read.dialect.name, write.dialect.name)
    if pipe is not None:
        # None: a driver without COPY; replace_partition then deletes what is left.
        replaced = pipe(read, query, write, table, where, columns)
        if replaced is not None:
            return replaced
    rows = read.execution_options(stream_results=True, yield_per=chunk_rows).execute(query)
    return replace_partition(write, table, where, rows.partitions(chunk_rows), columns)


def _replace_by_copy(
    read: sa.Connection,
    query: sa.Select[Any],
    write: sa.Connection,
    table: sa.Table,
    where: sa.ColumnElement[bool],
    columns: tuple[str, ...],
) -> int | None:
    """PostgreSQL to PostgreSQL: the partition deleted, then COPY piped into COPY."""
    write.execute(sa.delete(table).where(where))
    return pipe_copy(read, query, write, table, columns)


def _pipe(read: str, write: str) -> Callable[..., int | None] | None:
    """The copy from engine to engine without a Python value per row, where the pair has one."""
    if read == "postgresql" and write == "postgresql":
        return _replace_by_copy
    if read == "postgresql" and write == "duckdb":
        return copy_from_postgres
    if read == "sqlite" and write == "sqlite":
        return copy_stored_values
    return None


def refresh_statistics(engine: sa.Engine, *tables: sa.Table) -> None:
    """Fresh planner statistics for tables just bulk-written, where the engine needs them
    (PostgreSQL: ANALYZE); each in a transaction of its own, skipped rather than waited for."""
    loader = loader_for(engine.dialect)
    if type(loader).analyze is Loader.analyze:
        return
    for table in tables:
        with engine.begin() as conn:
            loader.analyze(conn, table)


def analyze_in_transaction(conn: sa.Connection, table: sa.Table) -> None:
    """Fresh statistics inside the caller's transaction (PostgreSQL counts the rows it just
    inserted there); skipped, not waited for, behind another transaction's ANALYZE."""
    loader_for(conn.dialect).analyze(conn, table)


def date_parameter(dialect: sa.Dialect, day: str) -> str | dt.date:
    """A partition date (YYYY-MM-DD) bound into the brand's SQL as the dialect compares it."""
    return loader_for(dialect).date_parameter(day)


def one_of(
    dialect: sa.Dialect, column: sa.ColumnElement[Any], values: Iterable[str]
) -> sa.ColumnElement[bool]:
    """`column IN values` for a long list of strings, bound as ONE parameter where the dialect
    can: `= ANY(array)` on PostgreSQL, `IN (SELECT value FROM json_each(...))` on SQLite. A
    parameter per value costs its expansion and its parsing on every call: 5-6 times the query's
    time for 5,000 phones on PostgreSQL, twice on SQLite."""
    values = list(values)
    if dialect.name == "postgresql":
        array = sa.bindparam(None, values, type_=postgresql.ARRAY(sa.String))
        return column == sa.any_(array)
    if dialect.name == "sqlite":
        each = sa.func.json_each(sa.bindparam(None, json.dumps(values), type_=sa.String))
        return column.in_(sa.select(each.table_valued("value").c.value))
    return column.in_(values)


def compares_text_exactly(dialect: sa.Dialect) -> bool:
    """Whether the pipeline's own tables compare text byte for byte (Loader.compares_text_exactly)."""
    return loader_for(dialect).compares_text_exactly


def key_lists(dialect: sa.Dialect, keys: Sequence[Any], others: int = 0) -> Iterator[list[Any]]:
    """`keys` in IN lists sized for the dialect, each for one statement binding `others` values
    besides (Loader.key_lists): a statement by keys costs a scan on an analytical engine."""
    return loader_for(dialect).key_lists(keys, others)


def quote_name(dialect: sa.Dialect, name: str) -> str:
    """An identifier quoted for the dialect when it needs quoting; a dotted name part by part."""
    return ".".join(dialect.identifier_preparer.quote(part) for part in name.split("."))


__all__ = [
    "Loader",
    "Rows",
    "StageWrites",
    "analyze_in_transaction",
    "compares_text_exactly",
    "date_parameter",
    "insert_rows",
    "key_lists",
    "loader_for",
    "one_of",
    "partition_rows",
    "quote_name",
    "refresh_statistics",
    "replace_partition",
    "replace_partition_from",
    "upsert_rows",
]
