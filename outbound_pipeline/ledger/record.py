"""Record: each outcome of a claimed row, guarded by the claim token (only the process that claimed
a row writes its outcome), and the claims given back unsent. Also the day's status counts."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

import sqlalchemy as sa

from outbound_pipeline.ledger.plan import CampaignPlan, hold_partition
from outbound_pipeline.ledger.tables import send_ledger
from outbound_pipeline.outcomes import Status

D = send_ledger.c


@dataclass(frozen=True)
class Outcome:
    delivery_key: str
    status: str
    reason: str | None
    error_code: str | None = None
    retryable: bool = False
    message_id: str | None = None
    message_text: str | None = None
    sent_at: dt.datetime | None = None
    not_before: dt.datetime | None = None
    extra_attempts: int = 0


_RECORD = (
    sa.update(send_ledger)
    .where(
        D.campaign_key == sa.bindparam("b_campaign"),
        D.partition_date == sa.bindparam("b_partition"),
        D.delivery_key == sa.bindparam("b_key"),
        D.claim_token == sa.bindparam("b_token"),
        D.status == Status.SENDING,
    )
    .values(
        status=sa.bindparam("b_status"),
        reason=sa.bindparam("b_reason"),
        error_code=sa.bindparam("b_code"),
        retryable=sa.bindparam("b_retryable"),
        message_id=sa.bindparam("b_message_id"),
        message_text=sa.bindparam("b_message_text"),
        sent_at=sa.bindparam("b_sent_at"),
        attribution_expires_at=sa.bindparam("b_expires"),
        not_before=sa.bindparam("b_not_before"),
        attempts=D.attempts + sa.bindparam("b_extra", type_=sa.Integer),
        updated_at=sa.bindparam("b_now"),
    )
)


def record_results(
    conn: sa.Connection,
    plan: CampaignPlan,
    token: str,
    outcomes: Sequence[Outcome],
    now: dt.datetime,
    *,
    held: bool = False,
) -> int:
    """Write outcomes of this sender's claims (one executemany). `held`: the transaction holds the
    partition already (`hold_partition`, as `dispatch` takes it before any row)."""
    if not outcomes:
        return 0
    if not held:
        hold_partition(conn, plan)
    params = [
        {
            "b_campaign": plan.campaign_key,
            "b_partition": plan.partition_date,
            "b_key": o.delivery_key,
            "b_token": token,
            "b_status": o.status,
            "b_reason": o.reason,
            "b_code": o.error_code,
            "b_retryable": o.retryable,
            "b_message_id": o.message_id,
            "b_message_text": o.message_text,
            "b_sent_at": o.sent_at,
            "b_expires": (o.sent_at + plan.attribution_window) if o.sent_at else None,
            "b_not_before": o.not_before,
            "b_extra": o.extra_attempts,
            "b_now": now,
        }
        for o in outcomes
    ]
    return conn.execute(_RECORD, params).rowcount


def release_claims(
    conn: sa.Connection,
    plan: CampaignPlan,
    token: str,
    reason: str,
    now: dt.datetime,
    not_before: dt.datetime | None,
) -> int:
    """Claimed rows that were never dispatched go back to `deferred` (no call was made for them).
    A dispatched row left `sending` (its outcome not written) stays so: the next run records it
    `unknown`, since its call may have gone out."""
    hold_partition(conn, plan)
    return conn.execute(
        sa.update(send_ledger)
        .where(
            plan.where(send_ledger),
            D.claim_token == token,
            D.status == Status.SENDING,
            D.dispatched_at.is_(None),
        )
        .values(
            status=Status.DEFERRED,
            reason=reason,
            not_before=not_before,
            attempts=D.attempts - 1,
            updated_at=now,
        )
    ).rowcount


def status_counts(conn: sa.Connection, plan: CampaignPlan) -> dict[str, dict[str, int]]:
    """status -> reason -> rows, for metadata and the report."""
    out: dict[str, dict[str, int]] = {}
    for status, reason, n in conn.execute(
        sa.select(D.status, D.reason, sa.func.count())
        .where(plan.where(send_ledger))
        .group_by(D.status, D.reason)
    ):
        out.setdefault(status, {})[reason or status] = n
    return out
