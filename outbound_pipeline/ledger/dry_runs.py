"""Dry run of the send step: every check of a real run, no call, no trace in the ledger.

The ledger's own code decides, so a dry run cannot drift from a real one: in ONE state-store
transaction it copies the day's plan from the warehouse and reconciles the partition, claims batch
after batch with all the claim-time checks (halts, consent re-check, suppressions, quiet hours, pair
rate, marketing cap, messaging limit), reads what it decided, and ROLLS BACK. The ledger is left
exactly as it was, so a later real run sends the same rows it would have sent without the dry run.
What it would have done is written to the warehouse's `outbound_dry_runs` (delete-then-insert for
the partition), with the preview of each message that would go.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from outbound_pipeline.clock import as_utc
from outbound_pipeline.ledger.claim import ClaimCursor, claim_batch
from outbound_pipeline.ledger.plan import CampaignPlan, ExtraCheck
from outbound_pipeline.ledger.reconcile import reconcile
from outbound_pipeline.ledger.senders import new_claim_token
from outbound_pipeline.ledger.snapshot import read_snapshot
from outbound_pipeline.ledger.tables import send_ledger
from outbound_pipeline.outcomes import Status
from outbound_pipeline.warehouse import (
    ConsentSource,
    dry_runs,
    key_lists,
    messages,
    reading,
    replace_partition,
)

WOULD_SEND = "would_send"
HALTED = "halted"


@dataclass
class DryRunSummary:
    rows: int = 0
    would_send: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    reasons: dict[str, dict[str, int]] = field(default_factory=dict)
    halted: str | None = None


def dry_run(
    state: sa.Engine,
    warehouse: sa.Engine,
    plan: CampaignPlan,
    run_id: str,
    now: dt.datetime,
    *,
    consent: ConsentSource,
    batch_size: int = 500,
    extra_checks: Sequence[ExtraCheck] = (),
    resend_unknown: bool = False,
    resend_failed_codes: Sequence[str] = (),
) -> DryRunSummary:
    """Decide every row of the partition as a real run would, record it, change nothing else."""
    token = new_claim_token(run_id)
    summary = DryRunSummary()
    with read_snapshot(warehouse, plan) as snapshot, state.connect() as conn:
        consent.refresh()  # the warehouse read before the transaction opens, as a real run does
        transaction = conn.begin()
        try:
            reconcile(
                conn,
                snapshot,
                run_id,
                now,
                resend_unknown=resend_unknown,
                resend_failed_codes=resend_failed_codes,
            )
            summary.halted = _claim_all(
                conn, plan, token, run_id, now, batch_size, consent, extra_checks
            )
            decided = _decided_rows(conn, plan)
        finally:
            # The whole point: nothing of the above is kept.
            transaction.rollback()

    records = [_record(row, plan, token, run_id, now, summary) for row in decided]
    summary.rows = len(records)
    summary.would_send = summary.outcomes[WOULD_SEND]
    _add_previews(warehouse, plan, records)
    with warehouse.begin() as conn:
        batches = (records[start : start + 5000] for start in range(0, len(records), 5000))
        replace_partition(conn, dry_runs, plan.where(dry_runs), batches)
    return summary


def _claim_all(
    conn: sa.Connection,
    plan: CampaignPlan,
    token: str,
    run_id: str,
    now: dt.datetime,
    batch_size: int,
    consent: ConsentSource,
    extra_checks: Sequence[ExtraCheck],
) -> str | None:
    """Claim batch after batch until nothing is claimable, as a real run does; the halt, if any."""
    cursor = ClaimCursor()
    while True:
        result = claim_batch(
            conn,
            plan,
            token,
            run_id,
            now,
            batch_size,
            consent=consent,
            extra_checks=extra_checks,
            after=cursor.after,
            usage_counts=False,
        )
        if result.halted:
            return result.halted
        if not cursor.advance(result):
            return None


def _decided_rows(conn: sa.Connection, plan: CampaignPlan) -> Sequence[sa.Row[Any]]:
    """The day's ledger rows as the claims left them."""
    d = send_ledger.c
    return conn.execute(
        sa.select(
            d.delivery_key,
            d.row_key,
            d.customer_id,
            d.recipient,
            d.status,
            d.reason,
            d.claim_token,
            d.not_before,
            d.template_name,
            d.language,
        )
        .where(plan.where(send_ledger))
        .order_by(d.delivery_key)
    ).all()


def _add_previews(warehouse: sa.Engine, plan: CampaignPlan, records: list[dict[str, Any]]) -> None:
    """Each would-send record's preview text, from the warehouse's messages (read in batches)."""
    by_row = {r["row_key"]: r for r in records if r["outcome"] == WOULD_SEND}
    keys = list(by_row)
    m = messages.c
    with reading(warehouse) as conn:
        # The plan's campaign and day are parameters too.
        for batch in key_lists(warehouse.dialect, keys, others=2):
            for row_key, text in conn.execute(
                sa.select(m.row_key, m.preview_text).where(
                    plan.where(messages), m.row_key.in_(batch)
                )
            ):
                by_row[row_key]["preview_text"] = text


def _record(
    row: sa.Row[Any],
    plan: CampaignPlan,
    token: str,
    run_id: str,
    now: dt.datetime,
    summary: DryRunSummary,
) -> dict[str, Any]:
    """A row's `outbound_dry_runs` record: what the run would have done with it (counted in the
    summary)."""
    if row.status == Status.SENDING and row.claim_token == token:
        outcome, reason = WOULD_SEND, None
    elif summary.halted and row.status in (Status.PENDING, Status.DEFERRED):
        outcome, reason = HALTED, summary.halted
    else:
        outcome, reason = row.status, row.reason
    summary.outcomes[outcome] += 1
    summary.reasons.setdefault(outcome, {})
    summary.reasons[outcome][reason or outcome] = (
        summary.reasons[outcome].get(reason or outcome, 0) + 1
    )
    return {
        "campaign_key": plan.campaign_key,
        "partition_date": plan.partition_date,
        "delivery_key": row.delivery_key,
        "row_key": row.row_key,
        "customer_id": row.customer_id,
        "recipient": row.recipient,
        "outcome": outcome,
        "reason": (reason or None) and str(reason)[:300],
        "not_before": as_utc(row.not_before) if outcome == Status.DEFERRED else None,
        "template_name": row.template_name,
        "language": row.language,
        "preview_text": None,  # a would-send row's: _add_previews
        "run_id": run_id,
        "dry_run_at": now,
    }
