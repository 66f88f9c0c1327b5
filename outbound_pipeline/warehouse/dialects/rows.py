"""A large query's rows streamed chunk by chunk: what the stages hand their worker processes. As
Arrow record batches where the engine gives them (DuckDB: a batch pickles as a few buffers, and the
worker makes its tuples), else as tuples (a pickled tuple costs a fraction of a row object or a
dict)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from outbound_pipeline.warehouse.dialects.arrow import Chunk, arrow_query
from outbound_pipeline.warehouse.errors import as_raised_by_sqlalchemy

# Dialects whose driver hands rows over as plain tuples, as they are fetched (no server-side
# cursor needed to stream). Others' rows may be objects of their own (BigQuery's Row carries its
# column names: six times a tuple pickled).
_DRIVER_TUPLES = frozenset({"sqlite", "duckdb"})


def streaming(dialect: sa.Dialect, size: int) -> dict[str, Any]:
    """Execution options that stream a large result in chunks of `size` rows: a server-side
    cursor where the dialect has them (PostgreSQL). No options elsewhere: SQLite and DuckDB hand
    rows over as they are fetched anyway, and SQLAlchemy's buffer would only stand between the
    driver and `tuple_chunks` (it reads the first row ahead of the driver's cursor)."""
    if dialect.supports_server_side_cursors:
        return {"stream_results": True, "yield_per": size}
    return {}


@dataclass(frozen=True)
class QueryChunks:
    """A query under way: its column names and its rows, chunk by chunk (`rows_of` makes a
    chunk's tuples, whichever form it has). Used as a context manager: closed on leaving it, read
    to the end or not (a DuckDB connection with a result open runs nothing else, not even the
    rollback that returns it to the pool)."""

    names: tuple[str, ...]
    chunks: Iterator[Chunk]
    close: Callable[[], None]

    def __enter__(self) -> QueryChunks:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def query_chunks(
    conn: sa.Connection, statement: sa.Executable, params: Mapping[str, Any], size: int
) -> QueryChunks:
    """The query `statement` (text() bound with `params`, or a select) run on `conn` and streamed
    in chunks of `size` rows, to be used in a `with` block: Arrow record batches on DuckDB where
    every column's values come back alike (arrow.arrow_query), else tuples (tuple_chunks, with
    `streaming`'s options). A failure, at the start or on a later chunk, is raised as SQLAlchemy
    raises the driver's."""
    arrow = arrow_query(conn, statement, params, size)
    if arrow is not None:
        return QueryChunks(*arrow)
    result = conn.execution_options(**streaming(conn.dialect, size)).execute(statement, params)
    return QueryChunks(tuple(result.keys()), tuple_chunks(result, size), result.close)


def tuple_chunks(result: sa.CursorResult[Any], size: int) -> Iterator[list[tuple[Any, ...]]]:
    """The rows of `result`, chunk by chunk, as tuples.

    Straight from the driver's cursor where SQLAlchemy's rows would hold the same values: on
    SQLite and DuckDB, when SQLAlchemy buffers none of them (no `stream_results` or `yield_per`:
    `streaming`'s options) and none of the query's columns converts its values (text, numbers; a
    text() query's columns are untyped). A million audience rows: 1.4 s on SQLite against 3.1 s
    through SQLAlchemy's rows, 2.0 s against 3.8 s on DuckDB. Elsewhere through SQLAlchemy's
    rows."""
    if _driver_rows_are_final(result):
        cursor, dialect = result.cursor, result.context.dialect
        try:
            while chunk := cursor.fetchmany(size):
                yield chunk
        except dialect.loaded_dbapi.Error as exc:
            # As SQLAlchemy raises it (a query may fail after its first rows; callers name it).
            raise as_raised_by_sqlalchemy(exc, dialect) from None
        return
    for chunk in result.partitions(size):
        yield [tuple(row) for row in chunk]


def _driver_rows_are_final(result: sa.CursorResult[Any]) -> bool:
    context = result.context
    dialect, options = context.dialect, context.execution_options
    if dialect.name not in _DRIVER_TUPLES:
        return False
    if options.get("stream_results") or options.get("yield_per"):
        return False  # SQLAlchemy reads rows ahead into a buffer of its own
    compiled = context.compiled
    columns = getattr(compiled.statement, "selected_columns", ()) if compiled is not None else ()
    return all(_converts_nothing(column.type, dialect) for column in columns)


def _converts_nothing(type_: sa.types.TypeEngine[Any], dialect: sa.Dialect) -> bool:
    try:
        return type_.dialect_impl(dialect).result_processor(dialect, None) is None
    except Exception:  # a type that needs the driver's own type code to say: assume it converts
        return False
