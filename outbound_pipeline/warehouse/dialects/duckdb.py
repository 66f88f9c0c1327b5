"""DuckDB: each batch handed to DuckDB as columns (a dict of NumPy arrays, scanned in place by
DuckDB's replacement scan) and written by one INSERT ... SELECT, ON CONFLICT for an upsert.
`executemany` costs DuckDB about 2 ms a row (500 rows/s); this path runs at 100,000+ rows/s."""

from __future__ import annotations

import datetime as dt
import functools
from typing import Any

import numpy as np
import sqlalchemy as sa

from outbound_pipeline.warehouse.dialects.portable import Loader
from outbound_pipeline.warehouse.dialects.prepared import (
    Prepared,
    Rows,
    last_per_key,
    value_lists,
)

# The name the batch is registered under, on this connection, for one statement.
_BATCH = "outbound_batch"


class DuckDBLoader(Loader):
    def insert(self, conn: sa.Connection, prepared: Prepared, rows: Rows) -> None:
        self._load(conn, prepared, value_lists(prepared, rows), upsert=False)

    def upsert(self, conn: sa.Connection, prepared: Prepared, rows: Rows) -> None:
        self._load(conn, prepared, last_per_key(prepared, value_lists(prepared, rows)), upsert=True)

    def _load(
        self, conn: sa.Connection, prepared: Prepared, values: list[list[Any]], upsert: bool
    ) -> None:
        if not values:
            return
        name = _BATCH
        columns = _arrays(prepared, values)
        duck = conn.connection.driver_connection  # the DuckDB connection, in this transaction
        duck.register(name, columns)  # type: ignore[union-attr]
        try:
            duck.execute(
                _insert_select(conn.dialect, prepared.table, prepared.columns, name, upsert)
            )  # type: ignore[union-attr]
        finally:
            duck.unregister(name)  # type: ignore[union-attr]


def _arrays(prepared: Prepared, values: list[list[Any]]) -> dict[str, np.ndarray]:
    """Column arrays: timestamps as naive UTC datetime64 (DuckDB converts no datetime object), the
    rest as Python objects, cast to the column's type by the INSERT."""
    table = prepared.table
    out: dict[str, np.ndarray] = {}
    for position, name in enumerate(prepared.columns):
        column = [v[position] for v in values]
        if isinstance(table.c[name].type, sa.DateTime | sa.Date):
            out[name] = np.array([_naive_utc(x) for x in column], dtype="datetime64[us]")
        else:
            out[name] = np.array(column, dtype=object)
    return out


def _naive_utc(value: Any) -> Any:
    if isinstance(value, dt.datetime) and value.tzinfo is not None:
        return value.astimezone(dt.UTC).replace(tzinfo=None)
    return value


@functools.lru_cache(maxsize=128)
def _insert_select(
    dialect: sa.Dialect, table: sa.Table, columns: tuple[str, ...], source: str, upsert: bool
) -> str:
    quote = dialect.identifier_preparer.quote
    selected = []
    for name in columns:
        type_ = table.c[name].type
        value = f"{source}.{quote(name)}"
        if isinstance(type_, sa.DateTime) and type_.timezone:
            selected.append(f"timezone('UTC', {value})")  # the naive UTC value as an instant
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
