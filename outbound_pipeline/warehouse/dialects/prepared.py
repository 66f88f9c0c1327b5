"""What every loader does to rows before its engine sees them: the columns in one order, the
timestamps in UTC, each value converted as its SQLAlchemy column type does, one row per key."""

from __future__ import annotations

import datetime as dt
import functools
import operator
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import sqlalchemy as sa

# A batch of rows: mappings (column -> value), or sequences in the order of `columns`.
Rows = Sequence[Mapping[str, Any]] | Sequence[Sequence[Any]]
T = TypeVar("T")


@dataclass(frozen=True)
class Prepared:
    """One table and column list as a dialect writes them."""

    table: sa.Table
    columns: tuple[str, ...]
    keys: tuple[str, ...]
    key_positions: tuple[int, ...]
    # Timezone-aware timestamp columns: their values are brought to UTC (a naive value is UTC,
    # as SQLite hands the ledger's back), never left to a session's local time zone.
    utc_positions: tuple[int, ...]
    processors: tuple[tuple[int, Callable[[Any], Any]], ...]  # SQLAlchemy's own conversions


@functools.lru_cache(maxsize=128)
def prepare(
    dialect: sa.Dialect, table: sa.Table, columns: tuple[str, ...], processors: bool = True
) -> Prepared:
    unknown = [name for name in columns if name not in table.c]
    if unknown:
        raise ValueError(f"{table.name} has no column(s) {unknown}")
    keys = tuple(c.name for c in table.primary_key.columns)
    missing = [k for k in keys if k not in columns]
    if missing:
        raise ValueError(f"rows for {table.name} lack its key column(s) {missing}")
    found = []
    if processors:
        for position, name in enumerate(columns):
            process = table.c[name].type.dialect_impl(dialect).bind_processor(dialect)
            if process is not None:
                found.append((position, process))
    return Prepared(
        table=table,
        columns=columns,
        keys=keys,
        key_positions=tuple(columns.index(k) for k in keys),
        utc_positions=tuple(
            position
            for position, name in enumerate(columns)
            if isinstance(table.c[name].type, sa.DateTime) and table.c[name].type.timezone
        ),
        processors=tuple(found),
    )


def column_names(rows: Rows, columns: Sequence[str] | None) -> tuple[str, ...]:
    if columns is not None:
        return tuple(columns)
    first = rows[0]
    if not isinstance(first, Mapping):
        raise TypeError("rows given as sequences need their column names (columns=...)")
    return tuple(first)


def as_utc(value: dt.datetime | None) -> dt.datetime | None:
    if value is None or not isinstance(value, dt.datetime):
        return value
    if value.tzinfo is None:
        return value.replace(tzinfo=dt.UTC)
    return value.astimezone(dt.UTC)


def value_lists(prepared: Prepared, rows: Rows) -> list[list[Any]]:
    """The rows as lists in column order, timestamps in UTC, each value converted by its type."""
    columns = prepared.columns
    if rows and isinstance(rows[0], Mapping):
        out = [[row[name] for name in columns] for row in rows]  # type: ignore[call-overload]
    else:
        out = [list(row) for row in rows]
    for position in prepared.utc_positions:
        for values in out:
            values[position] = as_utc(values[position])
    for position, process in prepared.processors:
        for values in out:
            values[position] = process(values[position])
    return out


def last_per_key(prepared: Prepared, rows: Sequence[T]) -> list[T]:
    """One row per key, the last given: one INSERT ... ON CONFLICT may not touch a row twice.
    Rows are mappings, or sequences in column order; a list is given back as it is when no key
    repeats (a stage's rows, one per key)."""
    if not rows:
        return list(rows)
    keys = prepared.keys if isinstance(rows[0], Mapping) else prepared.key_positions
    key_of = operator.itemgetter(*keys)  # the key's values in one C call a row
    last = {key_of(row): row for row in rows}
    if len(last) == len(rows) and isinstance(rows, list):
        return rows
    return list(last.values())
