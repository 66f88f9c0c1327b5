"""Publication: a partition's ledger, copied from the state store to the warehouse's
`outbound_deliveries`, where analysts read it.

Idempotent: the partition's published rows are deleted and inserted again in ONE warehouse
transaction, from one read of the ledger, so a publication shows the ledger as it was at one moment,
never a mix, and publishing twice leaves the same rows. Nothing is lost between two publications:
the ledger is the truth and the next publication copies it again.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from outbound_pipeline.clock import as_utc, utcnow
from outbound_pipeline.ledger.tables import send_ledger
from outbound_pipeline.warehouse import deliveries, lock_partition, upsert_rows, with_lock_retry

CHUNK_ROWS = 5000
# The ledger's timestamps: SQLite hands them back naive (they are UTC); an analytical warehouse
# would take a naive value for its session's local time.
_TIMESTAMPS = tuple(c.name for c in deliveries.columns if isinstance(c.type, sa.DateTime))


@dataclass(frozen=True)
class Publication:
    rows: int
    at: dt.datetime


def _of_day(table: sa.Table, campaign_key: str, day: str) -> sa.ColumnElement[bool]:
    return sa.and_(table.c.campaign_key == campaign_key, table.c.partition_date == day)


def _copy(
    state: sa.Engine, warehouse: sa.Engine, campaign_key: str, day: str, chunk_rows: int
) -> int:
    columns = [c.name for c in deliveries.columns]
    rows = 0
    with state.connect() as read, warehouse.begin() as write:
        # Two publications of one day (two runs) write one after the other (PostgreSQL).
        lock_partition(write, "outbound-publish", campaign_key, day)
        write.execute(sa.delete(deliveries).where(_of_day(deliveries, campaign_key, day)))
        # read_only: the warehouse may be the same SQLite file, its write transaction open here.
        ledger_rows = read.execution_options(
            read_only=True, stream_results=True, yield_per=chunk_rows
        ).execute(
            sa.select(*(send_ledger.c[name] for name in columns)).where(
                _of_day(send_ledger, campaign_key, day)
            )
        )
        for chunk in ledger_rows.mappings().partitions(chunk_rows):
            records = [with_utc_timestamps(row) for row in chunk]
            upsert_rows(write, deliveries, records)
            rows += len(records)
    return rows


def with_utc_timestamps(row: sa.RowMapping) -> dict[str, Any]:
    """A ledger row to write elsewhere, its timestamps aware, in UTC."""
    record = dict(row)
    for name in _TIMESTAMPS:
        if name in record:
            record[name] = as_utc(record[name])
    return record


def publish_partition(
    state: sa.Engine,
    warehouse: sa.Engine,
    campaign_key: str,
    day: str,
    *,
    chunk_rows: int = CHUNK_ROWS,
) -> Publication:
    """Replace the day's `outbound_deliveries` in the warehouse by its ledger rows (one warehouse
    transaction; again from the start if a lock conflict aborts it)."""
    at = utcnow()
    rows = with_lock_retry(lambda: _copy(state, warehouse, campaign_key, day, chunk_rows))
    return Publication(rows, at)
