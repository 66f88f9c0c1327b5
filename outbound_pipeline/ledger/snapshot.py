"""The day's snapshot: the warehouse's audience rows and their messages, copied into the state
store's `outbound_plan`, so that reconcile's SQL works on one store and never spans the two.

One streamed query reads the partition's audience joined to its messages from the warehouse; the
rows are checked as they come (every eligible audience row has a message, every message an eligible
audience row) and kept aside (`read_snapshot`) before the state store's transaction opens; in it,
they are written in bulk (delete-then-insert of the partition) and reconcile runs.
"""

from __future__ import annotations

import contextlib
import pickle
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import IO, Any

import sqlalchemy as sa

from outbound_pipeline.ledger.plan import CampaignPlan, worked
from outbound_pipeline.ledger.tables import plan_rows
from outbound_pipeline.warehouse import (
    analyze_in_transaction,
    audience,
    deliveries,
    messages,
    replace_partition,
)

CHUNK_ROWS = 5000
# A day's snapshot up to this size stays in memory; a larger one is spooled to a temporary file.
SPOOLED_IN_MEMORY_BYTES = 32 * 1024 * 1024
# The consent record that allowed each row, as the audience read it: carried to the ledger.
PROVENANCE = ("consent_category", "consent_status", "consent_updated_at", "consent_record_json")


class SnapshotMismatch(RuntimeError):
    """The day's audience and messages do not match: nothing can be reconciled from them."""


@dataclass
class _Mismatches:
    unrendered: int = 0  # eligible audience rows without a message
    orphaned: int = 0  # messages without an eligible audience row

    def error(self, plan: CampaignPlan) -> SnapshotMismatch | None:
        if not (self.unrendered or self.orphaned):
            return None
        return SnapshotMismatch(
            f"campaign {plan.campaign_key} {plan.partition_date}: the day's audience and messages "
            f"do not match ({self.unrendered} eligible audience rows without a message, "
            f"{self.orphaned} messages without an eligible audience row): a run stopped while "
            "writing them, or another run is writing them now. Nothing was sent or changed. Run the "
            "day's audience and messages again (the campaign's daily job for this partition), "
            "which re-sends nothing already handled."
        )


def _snapshot_select(plan: CampaignPlan) -> sa.CompoundSelect[Any]:
    """Each audience row with its message, then each message without an audience row (one
    statement: the warehouse answers from one snapshot). Portable SQL: no FULL OUTER JOIN."""
    a = sa.select(audience).where(plan.where(audience)).subquery("a")
    m = sa.select(messages).where(plan.where(messages)).subquery("m")
    joined = sa.select(
        a.c.row_key,
        sa.func.coalesce(m.c.customer_id, a.c.customer_id).label("customer_id"),
        sa.func.coalesce(m.c.recipient, a.c.recipient).label("recipient"),
        a.c.eligible,
        a.c.reason.label("audience_reason"),
        m.c.rendered,
        m.c.reason.label("message_reason"),
        m.c.template_name,
        m.c.language,
        m.c.category,
        m.c.header_params_json,
        m.c.body_params_json,
        *(a.c[name] for name in PROVENANCE),
        m.c.variant,
        (m.c.row_key.is_not(None)).label("has_message"),
    ).select_from(a.outerjoin(m, m.c.row_key == a.c.row_key))
    no_audience = sa.select(
        m.c.row_key,
        m.c.customer_id,
        m.c.recipient,
        sa.null().label("eligible"),
        sa.null().label("audience_reason"),
        m.c.rendered,
        m.c.reason,
        m.c.template_name,
        m.c.language,
        m.c.category,
        m.c.header_params_json,
        m.c.body_params_json,
        *(sa.null().label(name) for name in PROVENANCE),
        m.c.variant,
        sa.true().label("has_message"),
    ).where(~sa.exists().where(plan.where(audience), audience.c.row_key == m.c.row_key))
    return sa.union_all(joined, no_audience)


def _plan_records(
    plan: CampaignPlan, rows: Sequence[sa.RowMapping], found: _Mismatches
) -> Iterator[tuple[Any, ...]]:
    """The rows as outbound_plan rows (PLAN_COLUMNS); mismatched rows counted, not written."""
    for row in rows:
        eligible, has_message = row["eligible"], bool(row["has_message"])
        if eligible is None or (has_message and not eligible):
            found.orphaned += 1
            continue
        if eligible and not has_message:
            found.unrendered += 1
            continue
        rendered = None if row["rendered"] is None else bool(row["rendered"])
        yield (
            plan.campaign_key,
            plan.partition_date,
            *(row[k] for k in _COPIED),
            bool(eligible),
            rendered,
        )


_COPIED = (
    "row_key",
    "customer_id",
    "recipient",
    "audience_reason",
    "message_reason",
    "template_name",
    "language",
    "category",
    "header_params_json",
    "body_params_json",
    *PROVENANCE,
    "variant",
)
PLAN_COLUMNS = ("campaign_key", "partition_date", *_COPIED, "eligible", "rendered")


@dataclass
class DaySnapshot:
    """A partition's audience and messages as the warehouse held them when read, checked, and kept
    in a spooled temporary file (memory for a small day, disk for a large one) until the state
    store's transaction writes them into `outbound_plan`: that transaction never waits on the
    warehouse (a DuckDB file another process holds, a billed query queued), and SQLite's write
    lock, which it holds, is never held while the warehouse is read."""

    plan: CampaignPlan
    # The day's rows in the warehouse's outbound_deliveries that a run claimed: a published
    # history, which the state store's ledger must hold too (`reconcile`).
    published: int
    _file: IO[bytes]

    def batches(self) -> Iterator[list[tuple[Any, ...]]]:
        self._file.seek(0)
        while True:
            try:
                yield pickle.load(self._file)
            except EOFError:
                return


@contextlib.contextmanager
def read_snapshot(
    warehouse: sa.Engine, plan: CampaignPlan, chunk_rows: int = CHUNK_ROWS
) -> Iterator[DaySnapshot]:
    """Read the partition's audience and messages from the warehouse (one streamed query, on a
    connection closed before this yields) and check them. Raises SnapshotMismatch."""
    found = _Mismatches()
    with tempfile.SpooledTemporaryFile(max_size=SPOOLED_IN_MEMORY_BYTES) as file:
        with warehouse.connect() as read:
            # read_only: SQLite's read never takes the write lock (the state store may be that file).
            read = read.execution_options(read_only=True, stream_results=True, yield_per=chunk_rows)
            result = read.execute(_snapshot_select(plan))
            for chunk in result.mappings().partitions(chunk_rows):
                records = list(_plan_records(plan, chunk, found))
                if records and not (found.unrendered or found.orphaned):
                    pickle.dump(records, file, protocol=pickle.HIGHEST_PROTOCOL)
            published = read.execute(
                sa.select(sa.func.count()).where(plan.where(deliveries), worked(deliveries))
            ).scalar_one()
        mismatch = found.error(plan)
        if mismatch is not None:
            raise mismatch
        yield DaySnapshot(plan, published, file)


def copy_plan(conn: sa.Connection, snapshot: DaySnapshot) -> int:
    """Replace the partition's `outbound_plan` rows (on `conn`, a state-store transaction) by the
    snapshot's; the rows copied."""
    plan = snapshot.plan
    copied = replace_partition(
        conn, plan_rows, plan.where(plan_rows), snapshot.batches(), PLAN_COLUMNS
    )
    # Fresh statistics inside the transaction: without them the planner may run reconcile's
    # anti-joins as nested loops, for minutes instead of a second.
    analyze_in_transaction(conn, plan_rows)
    return copied
