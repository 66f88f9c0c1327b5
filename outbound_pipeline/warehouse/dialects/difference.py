"""A partition replaced by rows a query selects in the same database: wholly (one INSERT ...
SELECT), or by only what differs from the rows it holds.

Republishing a day rewrote every row of it, though between two publications of a send only the
rows whose outcome came in meanwhile differ: on DuckDB the delete and insert of the same keys
under the primary key's index cost about 25 s for a million rows, changed or not.

The difference is found by a fingerprint of each row (DuckDB's `hash` of its columns), joined on
the key: comparing whole rows held a million rows of both sides in the join (1.9 GB). Rows that
changed are then UPDATEd in place, not deleted and inserted again: their key is the same, so the
key's index is not touched (a million rows changed: 15 s, where the delete and insert took 61 s on
the same machine, and 0.75 GB, not 2.1).

Measured on PostgreSQL too, twice, and not used there: staging a million rows in a temporary
table, comparing and updating cost more than its plain delete and COPY, up to three times as much
when every row changed (`docs/performance.md`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import sqlalchemy as sa

# A row's columns to one value that differs when any of them does (NULL apart from '').
Fingerprint = Callable[[Sequence[sa.ColumnElement[Any]]], sa.ColumnElement[Any]]


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
    fingerprint: Fingerprint,
) -> int:
    """Make the rows `where` selects in `table` those of `source` (a table or subquery with the
    `columns`, one row per key), in the caller's transaction: rows gone deleted, rows changed
    updated, new rows inserted, rows the same left as they are. The partition's rows after it.

    The keys of the rows that differ are found first, by `fingerprint` joined on the key, into a
    temporary table: only keys and fingerprints are held by that join. A change whose fingerprint
    is the same (a 64-bit hash: odds of 2**-64 a changed row) would be missed until the row
    changes again. `source` is read once more for the changed rows and once for the new ones."""
    keys = [column.name for column in table.primary_key.columns]
    if not keys or not set(keys) <= set(columns):  # no key to match rows by: the whole partition
        rows = sa.select(*(source.c[name] for name in columns))
        return replace_partition_by_select(write, rows, table, where)
    changes = _changes_table(table, keys)
    # Created in the caller's transaction: gone with it if anything below fails.
    changes.create(write)
    write.execute(
        sa.insert(changes).from_select(
            changes.c.keys(), _differing(table, where, columns, source, keys, fingerprint)
        )
    )
    gone, new, changed = write.execute(
        sa.select(
            sa.func.count().filter(changes.c.gone),
            sa.func.count().filter(changes.c.new),
            sa.func.count().filter(~changes.c.gone, ~changes.c.new),
        )
    ).one()

    def listed(which: sa.ColumnElement[bool], side: sa.FromClause) -> sa.Exists:
        return sa.exists().where(which, *(changes.c[k] == side.c[k] for k in keys))

    if gone:
        write.execute(sa.delete(table).where(where, listed(changes.c.gone, table)))
    if changed:
        rows = sa.select(*(source.c[n] for n in columns))
        updated = rows.where(listed(~changes.c.gone & ~changes.c.new, source)).subquery()
        # Matched by the key alone (a changed key is the partition's): a filter by `where` made
        # DuckDB estimate the table's side small and build its join on the million changed rows
        # (1.2 GB, against 0.65 GB on the table's keys).
        write.execute(
            sa.update(table)
            .where(*(table.c[k] == updated.c[k] for k in keys))
            .values({n: updated.c[n] for n in columns if n not in keys})
        )
    if new:
        rows = sa.select(*(source.c[n] for n in columns)).where(listed(changes.c.new, source))
        write.execute(sa.insert(table).from_select(columns, rows))
    changes.drop(write)
    return partition_rows(write, table, where)


def _changes_table(table: sa.Table, keys: list[str]) -> sa.Table:
    """A temporary table of the keys whose rows differ: gone (only in `table`), new (only in the
    source), else changed."""
    return sa.Table(
        f"outbound_changes_{table.name}",
        sa.MetaData(),
        *(sa.Column(k, table.c[k].type) for k in keys),
        sa.Column("gone", sa.Boolean, nullable=False),
        sa.Column("new", sa.Boolean, nullable=False),
        prefixes=["TEMPORARY"],
    )


def _differing(
    table: sa.Table,
    where: sa.ColumnElement[bool],
    columns: tuple[str, ...],
    source: sa.FromClause,
    keys: list[str],
    fingerprint: Fingerprint,
) -> sa.Select[Any]:
    """The keys on either side whose fingerprints differ (a side without the key has none)."""
    theirs = sa.select(
        *(source.c[k] for k in keys), fingerprint([source.c[n] for n in columns]).label("print")
    ).subquery("theirs")
    ours = (
        sa.select(
            *(table.c[k] for k in keys), fingerprint([table.c[n] for n in columns]).label("print")
        )
        .where(where)
        .subquery("ours")
    )
    first = keys[0]  # never NULL in a key: NULL only for a side without the row
    return (
        sa.select(
            *(sa.func.coalesce(theirs.c[k], ours.c[k]).label(k) for k in keys),
            theirs.c[first].is_(None).label("gone"),
            ours.c[first].is_(None).label("new"),
        )
        .select_from(
            theirs.join(ours, sa.and_(*(theirs.c[k] == ours.c[k] for k in keys)), full=True)
        )
        .where(theirs.c.print.is_distinct_from(ours.c.print))
    )
