"""A partition replaced through a staging table: the new rows are bulk-copied into a temporary
table, then only the difference is written to the target.

Republishing a day rewrote every row of it, though between two publications of a send only the
rows whose outcome came in meanwhile differ: on DuckDB the delete and insert of the same keys
under the primary key's index cost about 25 s for a million rows, unchanged or not.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import sqlalchemy as sa


@functools.cache
def staging_table(table: sa.Table, columns: tuple[str, ...]) -> sa.Table:
    """The temporary table a copy into `table`'s `columns` is staged in (same names and types)."""
    return sa.Table(
        f"{table.name}_staged",
        sa.MetaData(),
        *(sa.Column(name, table.c[name].type) for name in columns),
        prefixes=["TEMPORARY"],
    )


def replace_by_difference(
    write: sa.Connection,
    table: sa.Table,
    where: sa.ColumnElement[bool],
    columns: tuple[str, ...],
    stage: Callable[[sa.Table], int | None],
    analyze: Callable[[sa.Connection, sa.Table], None],
) -> int | None:
    """Make the rows `where` selects in `table` those `stage(staged)` copies into the staging
    table, in the caller's transaction: rows changed are deleted and inserted again, rows gone are
    deleted, new rows inserted, rows the same left as they are. The partition's rows after it;
    None when `stage` could not copy (nothing was written then)."""
    keys = [column.name for column in table.primary_key.columns]
    staged = staging_table(table, columns)
    staged.create(write)
    try:
        if stage(staged) is None:
            return None
        # Fresh statistics on both sides (PostgreSQL): with a partition it believes empty or a
        # temporary table it knows nothing of, the planner compares them row by row (minutes for
        # 20,000 rows instead of a fraction of a second).
        analyze(write, staged)
        analyze(write, table)
        if keys and set(keys) <= set(columns):
            _write_difference(write, table, staged, where, columns, keys)
        else:  # no key to match rows by: the whole partition again
            write.execute(sa.delete(table).where(where))
            write.execute(
                sa.insert(table).from_select(columns, sa.select(*(staged.c[n] for n in columns)))
            )
        return write.execute(
            sa.select(sa.func.count()).select_from(table).where(where)
        ).scalar_one()
    finally:
        staged.drop(write)


def _write_difference(
    write: sa.Connection,
    table: sa.Table,
    staged: sa.Table,
    where: sa.ColumnElement[bool],
    columns: tuple[str, ...],
    keys: list[str],
) -> None:
    """Every comparison joins on the key: the planner hashes it whatever its estimates (an EXCEPT
    of whole rows, filtered by the partition, was estimated at one row and compared row by row)."""
    same_key = sa.and_(*(table.c[k] == staged.c[k] for k in keys))
    same_row = sa.and_(*(table.c[n].is_not_distinct_from(staged.c[n]) for n in columns))
    # Gone from the source: deleted.
    write.execute(sa.delete(table).where(where, ~sa.exists().where(same_key)))
    # The same in both: left as it is, out of the staging table.
    write.execute(sa.delete(staged).where(sa.exists().where(where, same_key, same_row)))
    # What is left staged is new or changed: the old versions out, the staged ones in.
    write.execute(sa.delete(table).where(where, sa.exists().where(same_key)))
    write.execute(sa.insert(table).from_select(columns, sa.select(*(staged.c[n] for n in columns))))
