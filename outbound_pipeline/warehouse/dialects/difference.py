"""A partition replaced by rows a query selects in the same database: wholly (one INSERT ...
SELECT), or by only what differs from the rows it holds.

Republishing a day rewrote every row of it, though between two publications of a send only the
rows whose outcome came in meanwhile differ: on DuckDB the delete and insert of the same keys
under the primary key's index cost about 25 s for a million rows, changed or not.

Measured on PostgreSQL too, and not used there: staging a million rows in a temporary table and
comparing cost more than its plain delete and COPY (`docs/performance.md`).
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa


def partition_rows(conn: sa.Connection, table: sa.Table, where: sa.ColumnElement[bool]) -> int:
    """The rows `where` selects in `table`, counted (SQLAlchemy reports no row count for an
    INSERT ... SELECT on psycopg)."""
    return conn.execute(sa.select(sa.func.count()).select_from(table).where(where)).scalar_one()


def replace_partition_by_select(
    conn: sa.Connection, query: sa.Select[Any], table: sa.Table, where: sa.ColumnElement[bool]
) -> int:
    """replace_partition with the rows `query` selects in the same database: one INSERT ... SELECT
    in the caller's transaction, no row through Python. The query's columns are named as the
    table's. The partition's rows after it."""
    conn.execute(sa.delete(table).where(where))
    columns = tuple(query.selected_columns.keys())
    conn.execute(sa.insert(table).from_select(columns, query))
    return partition_rows(conn, table, where)


def replace_by_difference(
    write: sa.Connection,
    table: sa.Table,
    where: sa.ColumnElement[bool],
    columns: tuple[str, ...],
    source: sa.FromClause,
) -> int:
    """Make the rows `where` selects in `table` those of `source` (a table or subquery with the
    `columns`, one row per key), in the caller's transaction: rows gone or changed are deleted, new
    or changed rows inserted, rows the same left as they are. The partition's rows after it.

    Every comparison joins on the table's key, which the engine hashes (an EXCEPT of whole rows,
    filtered by the partition, was estimated at one row and compared row by row)."""
    keys = [column.name for column in table.primary_key.columns]
    rows = sa.select(*(source.c[name] for name in columns))
    if not keys or not set(keys) <= set(columns):  # no key to match rows by: the whole partition
        return replace_partition_by_select(write, rows, table, where)
    same_key = sa.and_(*(table.c[k] == source.c[k] for k in keys))
    differs = sa.or_(*(table.c[n].is_distinct_from(source.c[n]) for n in columns))
    write.execute(sa.delete(table).where(where, ~sa.exists().where(same_key)))  # gone
    write.execute(sa.delete(table).where(where, sa.exists().where(same_key, differs)))
    kept = sa.exists().where(where, same_key)  # what is left: the same in both
    write.execute(sa.insert(table).from_select(columns, rows.where(~kept)))
    return partition_rows(write, table, where)
