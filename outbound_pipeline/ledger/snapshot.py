"""The day's snapshot: the warehouse's audience rows and their messages, copied into the state
store's `outbound_plan`, so that reconcile's SQL works on one store and never spans the two.

One streamed query reads the partition's audience joined to its messages from the warehouse; the
rows are checked as they come (every eligible audience row has a message, every message an eligible
audience row) and written in bulk (delete-then-insert of the partition) inside the caller's
state-store transaction, the one reconcile then runs in.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from outbound_pipeline.ledger.plan import CampaignPlan
from outbound_pipeline.ledger.tables import plan_rows
from outbound_pipeline.warehouse import (
    analyze_in_transaction,
    audience,
    messages,
    replace_partition,
)

CHUNK_ROWS = 5000
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
) -> Iterator[dict[str, Any]]:
    """The rows as outbound_plan records; mismatched rows counted, not written."""
    for row in rows:
        eligible, has_message = row["eligible"], bool(row["has_message"])
        if eligible is None or (has_message and not eligible):
            found.orphaned += 1
            continue
        if eligible and not has_message:
            found.unrendered += 1
            continue
        record = {k: row[k] for k in _COPIED}
        record.update(campaign_key=plan.campaign_key, partition_date=plan.partition_date)
        record["eligible"] = bool(eligible)
        record["rendered"] = None if row["rendered"] is None else bool(row["rendered"])
        yield record


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


def copy_plan(
    conn: sa.Connection, warehouse: sa.Engine, plan: CampaignPlan, chunk_rows: int = CHUNK_ROWS
) -> int:
    """Replace the partition's `outbound_plan` rows (on `conn`, a state-store transaction) by the
    warehouse's audience and messages of the day; the rows copied. Raises SnapshotMismatch, and
    the caller's transaction then leaves the state store as it was."""
    found, copied = _Mismatches(), 0

    def batches(result: sa.CursorResult[Any]) -> Iterator[list[dict[str, Any]]]:
        for chunk in result.mappings().partitions(chunk_rows):
            records = list(_plan_records(plan, chunk, found))
            if records and not (found.unrendered or found.orphaned):
                yield records

    with warehouse.connect() as read:
        # read_only: SQLite's read never takes the write lock (the state store may be that file).
        read = read.execution_options(read_only=True, stream_results=True, yield_per=chunk_rows)
        result = read.execute(_snapshot_select(plan))
        copied = replace_partition(conn, plan_rows, plan.where(plan_rows), batches(result))
    mismatch = found.error(plan)
    if mismatch is not None:
        raise mismatch
    # Fresh statistics inside the transaction: without them the planner may run reconcile's
    # anti-joins as nested loops, for minutes instead of a second.
    analyze_in_transaction(conn, plan_rows)
    return copied
