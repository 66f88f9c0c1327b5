"""DuckDB: each batch handed to DuckDB as columns (an Arrow table a stage's workers packed, else a
dict of NumPy arrays, scanned in place by DuckDB's replacement scan) and written by one
INSERT ... SELECT, ON CONFLICT for an upsert.
`executemany` costs DuckDB about 2 ms a row (500 rows/s); this path runs at 100,000+ rows/s.
Rows read from PostgreSQL (the state store's ledger, published) skip Python altogether:
`copy_from_postgres` writes PostgreSQL's CSV COPY to a temporary file that DuckDB's `read_csv`
reads, and writes only the rows that differ."""

from __future__ import annotations

import datetime as dt
import functools
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import sqlalchemy as sa
from sqlalchemy.ext.compiler import compiles

from outbound_pipeline.warehouse.dialects.difference import (
    partition_rows,
    replace_by_difference,
    replace_partition_by_select,
)
from outbound_pipeline.warehouse.dialects.portable import Loader
from outbound_pipeline.warehouse.dialects.postgres import copied_out
from outbound_pipeline.warehouse.dialects.prepared import Prepared, Rows, last_per_key

# The name the batch is registered under, on this connection, for one statement.
_BATCH = "outbound_batch"


@compiles(sa.Float, "duckdb")
def _float_is_double(type_: sa.Float, compiler: Any, **kw: Any) -> str:
    """DuckDB's FLOAT is 4 bytes (PostgreSQL's is 8): a rate or ratio keeps a double's precision."""
    return "DOUBLE"


class DuckDBLoader(Loader):
    # A statement's own cost is nearly a third of a 5,000-row upsert's time: four chunks at once
    # cut the stages' writes by a fifth (ten chunks by a quarter, for 2.5 times the rows held).
    stage_rows = 20_000
    # A million audience rows: inserted in 2.8 s, upserted in 5.8 s (a script, docs/performance.md).
    stage_inserts_first = True
    # A statement by keys scans the partition: a million-row day's 14,000 duplicates marked by
    # one UPDATE, not 14 (0.5 s, not 1.5).
    keys_per_list = 50_000
    scans_arrow = True

    def insert(self, conn: sa.Connection, prepared: Prepared, rows: Rows) -> None:
        self._load(conn, prepared, rows, upsert=False)

    def upsert(self, conn: sa.Connection, prepared: Prepared, rows: Rows) -> None:
        if isinstance(rows, pa.Table) and not _keys_unique(rows, prepared.keys):
            rows = rows.to_pylist()  # type: ignore[assignment]  # rare: last_per_key's rows
        if not isinstance(rows, pa.Table):
            rows = last_per_key(prepared, rows)
        self._load(conn, prepared, rows, upsert=True)

    def _load(self, conn: sa.Connection, prepared: Prepared, rows: Rows, upsert: bool) -> None:
        if not rows:
            return
        duck: Any = conn.connection.driver_connection  # the DuckDB connection, in this transaction
        arrow = isinstance(rows, pa.Table)
        duck.register(_BATCH, rows if arrow else _arrays(prepared, rows))
        try:
            sql = _insert_select(conn.dialect, prepared.table, prepared.columns, upsert, arrow)
            duck.execute(sql)
        finally:
            duck.unregister(_BATCH)


def copy_from_postgres(
    read: sa.Connection,
    query: sa.Select[Any],
    write: sa.Connection,
    table: sa.Table,
    where: sa.ColumnElement[bool],
    columns: tuple[str, ...],
) -> int | None:
    """Make the rows `where` selects in `table` on `write` (DuckDB) what `query` selects on `read`
    (PostgreSQL through psycopg 3): PostgreSQL's CSV COPY into a temporary file that DuckDB's
    read_csv reads, casting each column. Into an empty partition one INSERT ... SELECT; else only
    the rows that differ are written (`difference.replace_by_difference`, rows compared by their
    `hash`), the file read in place of a staging table (one in memory took 2.7 GB for a million
    rows). The partition's rows; None when `read` cannot COPY. CSV keeps NULL (empty) apart from the
    empty text (quoted)."""
    with (
        tempfile.TemporaryDirectory(prefix="outbound-copy-") as folder,
        copied_out(read, query, " (FORMAT csv)") as out,
    ):
        if out is None:
            return None
        path = Path(folder) / "rows.csv"
        with path.open("wb") as file:
            for chunk in out:
                file.write(chunk)
        if not path.stat().st_size:  # no row: read_csv cannot sniff an empty file
            write.execute(sa.delete(table).where(where))
            return 0
        source = _read_csv(write.dialect, table, columns, str(path))
        if partition_rows(write, table, where):
            return replace_by_difference(write, table, where, columns, source, _row_hash)
        rows = sa.select(*(source.c[name] for name in columns))
        return replace_partition_by_select(write, rows, table, where)


def _row_hash(columns: Sequence[sa.ColumnElement[Any]]) -> sa.ColumnElement[Any]:
    """DuckDB's 64-bit hash of the values, in order: NULL hashes apart from '' and from 0."""
    return sa.func.hash(*columns)


def _read_csv(
    dialect: sa.Dialect, table: sa.Table, columns: tuple[str, ...], path: str
) -> sa.Subquery:
    """The file's rows as a subquery of the table's columns and types. auto_detect only sniffs
    the file's size in rows (the columns, their types and the dialect, comments none, are given):
    without it DuckDB estimates the file at 42 rows and builds its joins' hash tables on the file's
    million rows, not on the table's keys (1.7 GB for an update of a million rows)."""
    quote = dialect.identifier_preparer.quote
    as_text = ", ".join(f"'{name}': 'VARCHAR'" for name in columns)
    casts = ", ".join(
        f"CAST({quote(name)} AS {table.c[name].type.compile(dialect=dialect)}) AS {quote(name)}"
        for name in columns
    )
    literal_path = path.replace("'", "''")
    text = sa.text(
        f"SELECT {casts} FROM read_csv('{literal_path}', header = false, auto_detect = true, "
        f"columns = {{{as_text}}}, delim = ',', quote = '\"', escape = '\"', "
        "comment = '', allow_quoted_nulls = false)"
    )
    return text.columns(*(sa.column(name, table.c[name].type) for name in columns)).subquery(
        "copied"
    )


def _arrays(prepared: Prepared, rows: Rows) -> dict[str, np.ndarray]:
    """The batch as columns, built straight from the rows: timestamps as epoch microseconds (DuckDB
    converts no aware datetime object), the rest as Python objects, cast to the column's type by
    the INSERT."""
    table = prepared.table
    columns: Sequence[Sequence[Any]]
    if isinstance(rows[0], Mapping):
        columns = [[row[name] for row in rows] for name in prepared.columns]  # type: ignore[index]
    else:
        columns = list(zip(*rows, strict=True))  # transposed in C, not a pass a column in Python
    out: dict[str, np.ndarray] = {}
    for name, column in zip(prepared.columns, columns, strict=True):
        type_ = table.c[name].type
        if isinstance(type_, sa.DateTime):
            out[name] = _epoch_micros(column)
        elif isinstance(type_, sa.Date):
            out[name] = np.array(column, dtype="datetime64[us]")
        else:
            out[name] = np.array(column, dtype=object)
    return out


def _epoch_micros(column: Sequence[Any]) -> np.ndarray:
    """Timestamps as microseconds since the epoch (NaN for NULL; a naive value is UTC): one C call
    a value, where NumPy's own datetime conversion costs ten times as much. A float64 holds
    today's epoch seconds to 0.3 us: rounded to the microsecond, the value is exact."""
    seconds = np.array(
        [
            np.nan
            if value is None
            else (value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)).timestamp()
            for value in column
        ],
        dtype=np.float64,
    )
    return np.round(seconds * 1_000_000)


def _keys_unique(rows: pa.Table, keys: Sequence[str]) -> bool:
    return len(set(zip(*(rows.column(k).to_pylist() for k in keys), strict=True))) == len(rows)


@functools.lru_cache(maxsize=128)
def _insert_select(
    dialect: sa.Dialect, table: sa.Table, columns: tuple[str, ...], upsert: bool, arrow: bool
) -> str:
    """The batch registered as _BATCH inserted (upserted) into `table`: each column cast to the
    table's type; timestamps from epoch microseconds, unless the batch is Arrow's own."""
    source = _BATCH
    quote = dialect.identifier_preparer.quote
    selected = []
    for name in columns:
        type_ = table.c[name].type
        value = f"{source}.{quote(name)}"
        if isinstance(type_, sa.DateTime) and not arrow:
            micros = (
                f"CASE WHEN isnan({value}) THEN NULL "
                f"ELSE make_timestamp(CAST({value} AS BIGINT)) END"
            )
            # A timezone-aware column: the UTC wall time as an instant.
            selected.append(f"timezone('UTC', {micros})" if type_.timezone else micros)
        else:
            selected.append(f"CAST({value} AS {type_.compile(dialect=dialect)})")
    listed = ", ".join(quote(name) for name in columns)
    sql = (
        f"INSERT INTO {dialect.identifier_preparer.format_table(table)} ({listed}) "
        f"SELECT {', '.join(selected)} FROM {source}"
    )
    if not upsert:
        return sql
    keys = [c.name for c in table.primary_key.columns]
    updates = ", ".join(
        f"{quote(name)} = excluded.{quote(name)}" for name in columns if name not in keys
    )
    conflict = f" ON CONFLICT ({', '.join(quote(k) for k in keys)}) "
    return sql + conflict + (f"DO UPDATE SET {updates}" if updates else "DO NOTHING")
