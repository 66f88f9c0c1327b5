"""Publication: a partition's ledger, copied from the state store to the warehouse's
`outbound_deliveries`, where analysts read it.

Idempotent: the partition's published rows are replaced in ONE warehouse transaction, from one
read of the ledger, so a publication shows the ledger as it was at one moment, never a mix, and
publishing twice leaves the same rows. Nothing is lost between two publications: the ledger is the
truth and the next publication copies it again. The rows are read from the state store and written
to the warehouse, also when both are one database (no statement spans the two stores); how they
travel is the dialect layer's (`replace_partition_from`): COPY piped into COPY from PostgreSQL to
PostgreSQL, only the rows that differ into DuckDB, in chunks through the loader otherwise.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import sqlalchemy as sa

from outbound_pipeline.clock import utcnow
from outbound_pipeline.ledger.plan import LedgerHistoryMissing, worked
from outbound_pipeline.ledger.tables import send_ledger
from outbound_pipeline.warehouse import (
    deliveries,
    lock_partition,
    replace_partition_from,
    with_lock_retry,
)

CHUNK_ROWS = 20_000
_COLUMNS = tuple(c.name for c in deliveries.columns)


@dataclass(frozen=True)
class Publication:
    rows: int
    at: dt.datetime


def _of_day(table: sa.Table, campaign_key: str, day: str) -> sa.ColumnElement[bool]:
    return sa.and_(table.c.campaign_key == campaign_key, table.c.partition_date == day)


def _copy(
    state: sa.Engine, warehouse: sa.Engine, campaign_key: str, day: str, chunk_rows: int
) -> int:
    query = sa.select(*(send_ledger.c[name] for name in _COLUMNS)).where(
        _of_day(send_ledger, campaign_key, day)
    )
    where = _of_day(deliveries, campaign_key, day)
    # The same path when both stores are one database (the default): no statement spans the two.
    with state.connect() as state_conn, warehouse.begin() as write:
        # read_only: the warehouse may be the same SQLite file, its write transaction open here.
        read = state_conn.execution_options(read_only=True)
        # Two publications of one day (two runs) write one after the other (PostgreSQL).
        lock_partition(write, "outbound-publish", campaign_key, day)
        _refuse_to_erase_a_history(read, write, campaign_key, day)
        # The dialect layer streams the rows engine to engine where it can (PostgreSQL to
        # PostgreSQL: COPY to COPY), and brings timestamps to UTC (SQLite hands them back naive).
        return replace_partition_from(
            read,
            query,
            write,
            deliveries,
            where,
            chunk_rows,
        )


def _refuse_to_erase_a_history(
    read: sa.Connection, write: sa.Connection, campaign_key: str, day: str
) -> None:
    """A ledger with no row of the day, over a published copy showing rows claimed or sent: this
    state store is not the one that sent them, and replacing the copy would erase the one trace of
    what was sent (the next run would then send it all again)."""
    ledger_day = _of_day(send_ledger, campaign_key, day)
    if read.execute(sa.select(sa.exists().where(ledger_day))).scalar():
        return
    published = write.execute(
        sa.select(sa.func.count()).where(_of_day(deliveries, campaign_key, day), worked(deliveries))
    ).scalar_one()
    if published:
        raise LedgerHistoryMissing(campaign_key, day, published)


def publish_partition(
    state: sa.Engine,
    warehouse: sa.Engine,
    campaign_key: str,
    day: str,
    *,
    chunk_rows: int = CHUNK_ROWS,
) -> Publication:
    """Replace the day's `outbound_deliveries` in the warehouse by its ledger rows (one warehouse
    transaction; again from the start if a lock conflict aborts it). Raises LedgerHistoryMissing,
    and the copy is left as it was, when the ledger has no row of a day the copy shows sent."""
    at = utcnow()
    rows = with_lock_retry(lambda: _copy(state, warehouse, campaign_key, day, chunk_rows))
    return Publication(rows, at)
