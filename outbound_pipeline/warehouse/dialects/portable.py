"""The portable loader: what any SQLAlchemy dialect can run (BigQuery, Databricks, Redshift, ...,
and Snowflake's small batches), and the base the engines with a faster path build on.

Inserts go through SQLAlchemy's `executemany` in large batches (which it turns into multi-row
VALUES where the dialect allows); an upsert deletes the batch's keys and inserts the rows again, in
the caller's transaction: a DELETE per list of keys sharing their leading key columns (a
partition), never one per row (a statement billed, and seconds long, on Snowflake or BigQuery).

Where a driver's executemany is a loop that sends one statement per row (BigQuery's DB-API: a
query job each, googleapis/python-bigquery#2048; Databricks' connector: an HTTP round trip each,
databricks/databricks-sql-python#558), `MultiRowLoader` writes explicit multi-row
`INSERT ... VALUES (...), (...)` statements instead, each within the driver's bound of
parameters (Databricks' server takes 256), and keeps its DELETEs' key lists within it too, unless
the dialect binds a whole list as one parameter (BigQuery: `IN UNNEST(@list)`). BigQuery's load
jobs would be faster and are not used yet (docs/warehouses.md)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Sequence
from typing import Any

import sqlalchemy as sa

from outbound_pipeline.warehouse.dialects.prepared import (
    Prepared,
    Rows,
    column_names,
    last_per_key,
    prepare,
    value_lists,
)
from outbound_pipeline.warehouse.errors import WarehouseError

BATCH_ROWS = 10_000
# Keys one IN list of a statement by key names (an upsert's DELETEs, the duplicates' UPDATEs):
# a statement's cost is paid once per list.
KEYS_PER_LIST = 1_000
# Bound parameters in one statement of MultiRowLoader, where the engine's limit is not lower.
STATEMENT_PARAMETERS = 1_000


class Loader:
    """Bulk writes into one dialect's tables; subclasses replace what their engine does faster."""

    # Whether a partition date is bound as text (compared with a DATE column, the engine casts
    # it), or as a datetime.date for the engines that will not.
    binds_dates_as_text = True
    # Whether this loader applies SQLAlchemy's bind conversions itself (it runs driver SQL).
    applies_processors = False
    # The bound parameters a statement may hold, where the driver has a limit below the IN lists
    # and batches the pipeline writes (None: no such limit).
    statement_parameters: int | None = None
    # Keys one IN list names (key_lists), and the bytes they may take in all where the driver
    # writes them into the statement's text (Snowflake's; None: no such limit).
    keys_per_list = KEYS_PER_LIST
    key_list_bytes: int | None = None
    # Whether an IN list binds a parameter per value (False: one for the list, as BigQuery's
    # UNNEST of an array), which statement_parameters then bounds.
    in_list_binds_each_value = True
    # The rows a stage gathers before writing them in one transaction (StageWrites): an
    # analytical engine's statement costs a second or more, billed (DuckDB: 20,000; PostgreSQL:
    # each chunk as it comes).
    stage_rows = 50_000
    # Whether a stage's rows are first inserted, upserted only when that fails (StageWrites): for
    # an engine that enforces the primary key, where an upsert costs far more than an insert.
    # Never where keys are not enforced (Snowflake, BigQuery, Databricks, Redshift): there an
    # insert would duplicate a row that a concurrent run of the partition wrote.
    stage_inserts_first = False
    # Whether the engine scans an Arrow table in place: a stage's workers then hand their rows back
    # packed as record batches (StageWrites.pack), written without a Python value each (DuckDB).
    scans_arrow = False
    # Whether text compares byte for byte in the pipeline's own tables, whose columns take the
    # database's default collation (SQLite's BINARY; PostgreSQL's, which cannot be
    # nondeterministic), so that a rule on their values applied in Python agrees with SQL (the
    # audience's duplicates). Elsewhere a default collation may fold case (Snowflake's,
    # DuckDB's default_collation): such a rule stays in SQL there.
    compares_text_exactly = False

    def prepared(
        self, conn: sa.Connection, table: sa.Table, rows: Rows, columns: Sequence[str] | None
    ) -> Prepared:
        return prepare(
            conn.dialect, table, column_names(rows, columns), processors=self.applies_processors
        )

    def insert(self, conn: sa.Connection, prepared: Prepared, rows: Rows) -> None:
        """Add rows (none of them in the table yet)."""
        self._insert_values(conn, prepared, value_lists(prepared, rows))

    def upsert(self, conn: sa.Connection, prepared: Prepared, rows: Rows) -> None:
        """Add rows, replacing those with the same primary key (the last of rows with one key)."""
        values = last_per_key(prepared, value_lists(prepared, rows))
        for delete in self.deletes(prepared, values):
            conn.execute(delete)
        self._insert_values(conn, prepared, values)

    def deletes(self, prepared: Prepared, values: list[list[Any]]) -> list[sa.Delete]:
        """The DELETEs of an upsert: the rows with these keys, grouped by all key columns but the
        last (a partition's campaign and day), each group's last key column in key_lists."""
        table = prepared.table
        *leading, last = prepared.keys
        *leading_at, last_at = prepared.key_positions
        groups: dict[tuple[Any, ...], list[Any]] = {}
        for v in values:
            groups.setdefault(tuple(v[p] for p in leading_at), []).append(v[last_at])
        deletes = []
        for prefix, keys in groups.items():
            same = [table.c[name] == value for name, value in zip(leading, prefix, strict=True)]
            for chunk in self.key_lists(keys, others=len(leading)):
                deletes.append(sa.delete(table).where(*same, table.c[last].in_(chunk)))
        return deletes

    def key_lists(self, keys: Sequence[Any], others: int = 0) -> Iterator[list[Any]]:
        """`keys` in IN lists, each for one statement that binds `others` values besides: at most
        `keys_per_list` or what the driver's bound leaves, and within `key_list_bytes` of text."""
        most = self.keys_per_list
        if self.in_list_binds_each_value:
            most = self.values_per_statement(most, others)
        return _key_lists(keys, most, self.key_list_bytes)

    def values_per_statement(self, wanted: int, others: int = 0) -> int:
        """How many values one statement may bind beside `others`: `wanted`, or fewer where the
        driver limits a statement's parameters. Raises WarehouseError when `others` alone take
        them all."""
        if self.statement_parameters is None:
            return wanted
        room = self.statement_parameters - others
        if room < 1:
            raise WarehouseError(
                f"a statement binding {others} parameters besides its values exceeds the "
                f"driver's bound of {self.statement_parameters}"
            )
        return min(wanted, room)

    def _insert_values(
        self, conn: sa.Connection, prepared: Prepared, values: list[list[Any]]
    ) -> None:
        insert = sa.insert(prepared.table)
        columns = prepared.columns
        for start in range(0, len(values), BATCH_ROWS):
            batch = values[start : start + BATCH_ROWS]
            conn.execute(insert, [dict(zip(columns, v, strict=True)) for v in batch])

    def analyze(self, conn: sa.Connection, table: sa.Table) -> None:
        """Fresh planner statistics after a bulk write, where the engine needs them."""

    def date_parameter(self, day: str) -> str | dt.date:
        """A partition date (YYYY-MM-DD) as a bound parameter of the brand's SQL."""
        return day if self.binds_dates_as_text else dt.date.fromisoformat(day)


class MultiRowLoader(Loader):
    """For drivers whose executemany sends a statement per row: explicit multi-row INSERTs, and
    every statement within `statement_parameters` bound parameters."""

    def __init__(
        self,
        statement_parameters: int = STATEMENT_PARAMETERS,
        dates_as_text: bool = True,
        in_list_binds_each_value: bool = True,
        keys_per_list: int = KEYS_PER_LIST,
    ) -> None:
        self.statement_parameters = statement_parameters
        self.binds_dates_as_text = dates_as_text
        self.in_list_binds_each_value = in_list_binds_each_value
        self.keys_per_list = keys_per_list

    def _insert_values(
        self, conn: sa.Connection, prepared: Prepared, values: list[list[Any]]
    ) -> None:
        if not conn.dialect.supports_multivalues_insert:
            super()._insert_values(conn, prepared, values)
            return
        for insert in self.inserts(prepared, values):
            conn.execute(insert)

    def inserts(self, prepared: Prepared, values: list[list[Any]]) -> list[sa.Insert]:
        """The rows (lists in `prepared.columns` order) as multi-row INSERTs, each within the
        driver's bound of parameters."""
        columns = prepared.columns
        per_statement = self.values_per_statement(STATEMENT_PARAMETERS) // len(columns)
        if per_statement == 0:
            raise WarehouseError(
                f"writing to {prepared.table.name}: a row of {len(columns)} columns binds more "
                f"parameters than the driver takes in a statement ({self.statement_parameters})"
            )
        return [
            sa.insert(prepared.table).values(
                [dict(zip(columns, v, strict=True)) for v in values[start : start + per_statement]]
            )
            for start in range(0, len(values), per_statement)
        ]


def _key_lists(keys: Sequence[Any], most: int, max_bytes: int | None) -> Iterator[list[Any]]:
    """The keys in lists of at most `most`, each list's keys taking at most `max_bytes` as UTF-8
    text (two quotes, a comma and a space each; a single longer key gets a list of its own)."""
    chunk: list[Any] = []
    used = 0
    for key in keys:
        size = len(str(key).encode()) + 4
        if chunk and (len(chunk) >= most or (max_bytes is not None and used + size > max_bytes)):
            yield chunk
            chunk, used = [], 0
        chunk.append(key)
        used += size
    if chunk:
        yield chunk
