"""Upgrading both stores' schemas (`outbound-pipeline db upgrade`), and the ledger history of the
previous release carried into a state store apart from the warehouse.

The previous release kept everything in one database, its ledger the table `outbound_deliveries`.
When the state store stays that database, its migration (s0002) copies the rows into
`outbound_ledger`. When the state store is a new database of its own, the rows are in the other
store and only this command, which holds both, can copy them: it does so whenever the ledger has no
row and the warehouse's `outbound_deliveries` has some, whatever revision the warehouse started
from. An upgrade stopped after the warehouse's migrations and before the copy is then completed by
running the command again, and a state store that starts empty beside a warehouse holding a
published history gets that history before anything can be sent again.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from outbound_pipeline.clock import as_utc
from outbound_pipeline.ledger.store import state_schema
from outbound_pipeline.ledger.tables import send_ledger
from outbound_pipeline.outcomes import Status
from outbound_pipeline.warehouse import (
    VersionedSchema,
    current_revision,
    deliveries,
    reading,
    upgrade_schema,
    warehouse_schema,
)

CHUNK_ROWS = 5000


@dataclass(frozen=True)
class StoreRevision:
    """Where a store's schema was and is (None: it had none of its tables)."""

    store: str
    before: str | None
    after: str


@dataclass(frozen=True)
class StoresUpgrade:
    state: StoreRevision
    warehouse: StoreRevision
    history_rows_carried: int


def upgrade_stores(state: sa.Engine, warehouse: sa.Engine) -> StoresUpgrade:
    """Both stores to head, the state store first; then the warehouse's `outbound_deliveries` (the
    previous release's ledger, or a published copy) into a ledger that is still empty.

    Not on the warehouse's revision: a run of this command that stopped between the warehouse's
    migrations and the copy left the warehouse at head and the ledger empty, and the next run must
    still copy, or the next send would message everyone again."""
    state_before, state_after = upgrade_schema(state, state_schema)
    warehouse_before, warehouse_after = upgrade_schema(warehouse, warehouse_schema)
    carried = carry_over_history(warehouse, state)
    return StoresUpgrade(
        StoreRevision("state", state_before, state_after),
        StoreRevision("warehouse", warehouse_before, warehouse_after),
        carried,
    )


def store_revisions(state: sa.Engine, warehouse: sa.Engine) -> list[tuple[str, str | None, str]]:
    """(store, its revision, the head this code needs) for both stores (`db current`)."""
    rows: list[tuple[str, str | None, str]] = []
    for engine, schema in ((state, state_schema), (warehouse, warehouse_schema)):
        rows.append((schema.name, _revision(engine, schema), schema.head))
    return rows


def _revision(engine: sa.Engine, schema: VersionedSchema) -> str | None:
    with engine.connect() as conn:
        return current_revision(conn, schema)


def carry_over_history(warehouse: sa.Engine, state: sa.Engine) -> int:
    """Copy the warehouse's `outbound_deliveries` (the previous release's ledger, or the published
    copy of a ledger this state store does not hold) into an empty `outbound_ledger`, in one
    transaction; the number of rows copied (0 when the ledger has rows already: then it is the
    truth, and the warehouse's table its copy)."""
    # The published copy has the ledger's columns (tables.py): no reflection, which DuckDB's
    # SQLAlchemy dialect cannot do under SQLAlchemy 2.1.
    names = [c.name for c in deliveries.columns]
    with state.begin() as write:
        if write.execute(sa.select(sa.func.count()).select_from(send_ledger)).scalar():
            return 0
        # Only read (`reading`): the warehouse may be the same SQLite file, whose write lock
        # this holds.
        with reading(warehouse) as read:
            rows = read.execution_options(stream_results=True, yield_per=CHUNK_ROWS).execute(
                sa.select(*(deliveries.c[name] for name in names))
            )
            copied = 0
            for chunk in rows.mappings().partitions(CHUNK_ROWS):
                write.execute(sa.insert(send_ledger), [_carried(row) for row in chunk])
                copied += len(chunk)
    return copied


def _carried(row: sa.RowMapping) -> dict[str, Any]:
    """A published row as a ledger row. A row published `sending` may have had its call leave, and
    the copy has no dispatch mark (`dispatched_at` is the ledger's own): it is marked at its claim,
    so that its dead run's claim becomes `unknown`, never `pending` again (as migration s0005)."""
    record = with_utc_timestamps(row)
    sending = record["status"] == Status.SENDING
    # Set on every row: an executemany takes its columns from the first row.
    record["dispatched_at"] = (record["claimed_at"] or record["updated_at"]) if sending else None
    return record


_TIMESTAMPS = tuple(c.name for c in send_ledger.columns if isinstance(c.type, sa.DateTime))


def with_utc_timestamps(row: sa.RowMapping) -> dict[str, Any]:
    """A ledger row to write elsewhere, its timestamps aware, in UTC (SQLite hands them back naive)."""
    record = dict(row)
    for name in _TIMESTAMPS:
        if name in record:
            record[name] = as_utc(record[name])
    return record
