"""Reconcile: turn a day's audience and messages into ledger rows, one per audience row.

The day's audience and messages, read from the warehouse before the state store's transaction opens
(snapshot.py), are first copied into the state store's `outbound_plan` in that transaction:
reconcile's SQL reads that copy and the ledger, both in the state store. Rows already `sent`, `unknown` or permanently `failed` are final and
never touched again (unless an operator asks for a resend, which is recorded). Also `settled_rows`:
whether a day has nothing left to send.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from outbound_pipeline.ledger.plan import (
    SKIP_PREFIX,
    CampaignPlan,
    LedgerHistoryMissing,
    claimable,
    mutable,
    own_partition,
)
from outbound_pipeline.ledger.snapshot import PROVENANCE, DaySnapshot, copy_plan
from outbound_pipeline.ledger.tables import plan_rows, send_ledger
from outbound_pipeline.outcomes import Reason, Status, with_detail
from outbound_pipeline.warehouse import audience, dialect_insert

D = send_ledger.c
P = plan_rows.c
CARRIED = (*PROVENANCE, "variant")


@dataclass
class ReconcileResult:
    expired_claims: int = 0
    resent_unknown: int = 0
    resent_failed: int = 0
    skip_rows: int = 0
    stale_removed: int = 0
    planned_rows: int = 0


def _handled(row: sa.Table | sa.Alias) -> sa.ColumnElement[bool]:
    """A send row that went out, may have, is going out, or failed for good: never sent again."""
    return sa.and_(
        row.c.delivery_key.not_like(f"{SKIP_PREFIX}%"),
        row.c.status.not_in((Status.PENDING, Status.DEFERRED, Status.SKIPPED, Status.FAILED))
        | sa.and_(
            row.c.status == Status.FAILED,
            sa.or_(row.c.retryable.is_(None), row.c.retryable == sa.false()),
        ),
    )


def _final_same_row(row_key: sa.ColumnElement[Any], plan: CampaignPlan) -> sa.Exists:
    other = send_ledger.alias("final_row")
    return sa.exists().where(plan.where(other), other.c.row_key == row_key, _handled(other))


def _recipient_handled_elsewhere(plan: CampaignPlan) -> sa.Exists:
    """The message's phone was already handled today under another audience row."""
    m, owner = plan_rows, send_ledger.alias("recipient_owner")
    return sa.exists().where(
        plan.where(owner),
        owner.c.delivery_key == m.c.recipient,
        owner.c.row_key != m.c.row_key,
        _handled(owner),
    )


def _customer_handled_elsewhere(plan: CampaignPlan) -> sa.Exists:
    """The message's customer was already handled today on another phone: the day's first verdict
    on which phone the customer consented with stands, whatever a re-run's query order says."""
    m, owner = plan_rows, send_ledger.alias("customer_owner")
    return sa.exists().where(
        plan.where(owner),
        owner.c.customer_id == m.c.customer_id,
        owner.c.recipient != m.c.recipient,
        _handled(owner),
    )


def _skip_select(
    plan: CampaignPlan,
    source: sa.Table,
    reason: sa.ColumnElement[Any],
    where: sa.ColumnElement[bool],
    run_id: str,
    now: dt.datetime,
) -> sa.Select[Any]:
    return sa.select(
        source.c.campaign_key,
        source.c.partition_date,
        (sa.literal(SKIP_PREFIX) + source.c.row_key).label("delivery_key"),
        source.c.row_key,
        source.c.customer_id,
        source.c.recipient,
        sa.literal(plan.campaign_id).label("campaign_id"),
        sa.literal(plan.sender).label("sender"),
        sa.literal(plan.template_name).label("template_name"),
        sa.literal(plan.language).label("language"),
        sa.literal(plan.category).label("category"),
        *_carried(source),
        sa.literal(Status.SKIPPED.value).label("status"),
        reason.label("reason"),
        sa.literal(0).label("attempts"),
        sa.literal(run_id).label("run_id"),
        sa.literal(now, sa.DateTime(timezone=True)).label("updated_at"),
    ).where(plan.where(source), where)


def _carried(source: sa.Table) -> list[sa.ColumnElement[Any]]:
    """What the plan row carries to its ledger row unchanged: the consent record that allowed it
    (provenance) and the variant."""
    return [source.c[name] for name in CARRIED]


def _columns(select: sa.Select[Any]) -> list[str]:
    """The ledger columns a select writes: its labels name them."""
    return list(select.selected_columns.keys())


def reconcile(
    conn: sa.Connection,
    snapshot: DaySnapshot,
    run_id: str,
    now: dt.datetime,
    *,
    resend_unknown: bool = False,
    resend_failed_codes: Sequence[str] = (),
) -> ReconcileResult:
    """Bring the ledger of a partition in line with its audience and messages as `snapshot` read
    them from the warehouse, copied into the plan table first (`conn`: one state-store transaction).
    Raises LedgerHistoryMissing, and nothing is changed."""
    plan = snapshot.plan
    result = ReconcileResult()
    # Two runs of one partition reconcile one after the other, and never while another run writes
    # its claims' marks or outcomes (`hold_partition`; SQLite's BEGIN IMMEDIATE does the same).
    own_partition(conn, plan)
    _check_history(conn, snapshot)
    result.planned_rows = copy_plan(conn, snapshot)
    if resend_unknown:
        result.resent_unknown = _resend_unknown(conn, plan, run_id, now)
    if resend_failed_codes:
        result.resent_failed = _resend_failed(conn, plan, run_id, now, resend_failed_codes)
    result.skip_rows = _rewrite_skip_rows(conn, plan, run_id, now)
    _upsert_send_rows(conn, plan, now)
    result.stale_removed = _remove_stale_send_rows(conn, plan)
    return result


def _check_history(conn: sa.Connection, snapshot: DaySnapshot) -> None:
    """A day the warehouse shows as published but the ledger has no row of was sent from another
    state store (OUTBOUND_STATE_URL changed, the store replaced or emptied): planning it here would
    send every message again."""
    plan = snapshot.plan
    if not snapshot.published:
        return
    if conn.execute(sa.select(sa.exists().where(plan.where(send_ledger)))).scalar():
        return
    raise LedgerHistoryMissing(plan.campaign_key, plan.partition_date, snapshot.published)


def _resend_unknown(conn: sa.Connection, plan: CampaignPlan, run_id: str, now: dt.datetime) -> int:
    """An operator's resend of the day's `unknown` rows: they become pending again."""
    return conn.execute(
        sa.update(send_ledger)
        .where(plan.where(send_ledger), D.status == Status.UNKNOWN)
        .values(
            status=Status.PENDING,
            reason=Reason.OPERATOR_RESEND_UNKNOWN,
            resend_requested_by=run_id,
            updated_at=now,
        )
    ).rowcount


def _resend_failed(
    conn: sa.Connection, plan: CampaignPlan, run_id: str, now: dt.datetime, codes: Sequence[str]
) -> int:
    """An operator's resend of the day's rows failed with one of `codes`."""
    return conn.execute(
        sa.update(send_ledger)
        .where(plan.where(send_ledger), D.status == Status.FAILED, D.error_code.in_(list(codes)))
        .values(
            status=Status.PENDING,
            retryable=True,
            reason=Reason.OPERATOR_RESEND_FAILED,
            resend_requested_by=run_id,
            updated_at=now,
        )
    ).rowcount


def _rewrite_skip_rows(
    conn: sa.Connection, plan: CampaignPlan, run_id: str, now: dt.datetime
) -> int:
    """The day's skip rows, written again from the current audience and messages (the plan)."""
    m = plan_rows
    # Rows that are not sent are recomputed every run from the current audience.
    conn.execute(
        sa.delete(send_ledger).where(
            plan.where(send_ledger), D.delivery_key.like(f"{SKIP_PREFIX}%")
        )
    )
    not_eligible = sa.and_(m.c.eligible == sa.false(), ~_final_same_row(m.c.row_key, plan))
    not_rendered = sa.and_(m.c.rendered == sa.false(), ~_final_same_row(m.c.row_key, plan))
    # A recipient or a customer already handled today under another audience row (the audience
    # changed between runs: a reformatted phone, another query order).
    recipient_handled = _recipient_handled_elsewhere(plan)
    customer_handled = sa.and_(
        ~recipient_handled,
        _customer_handled_elsewhere(plan),
        ~_final_same_row(m.c.row_key, plan),
    )
    selects = [
        _skip_select(plan, m, m.c.audience_reason, not_eligible, run_id, now),
        _skip_select(plan, m, m.c.message_reason, not_rendered, run_id, now),
        _skip_select(
            plan,
            m,
            _already_handled(Reason.DUPLICATE_RECIPIENT),
            sa.and_(m.c.rendered == sa.true(), recipient_handled),
            run_id,
            now,
        ),
        _skip_select(
            plan,
            m,
            _already_handled(Reason.DUPLICATE_CUSTOMER),
            sa.and_(m.c.rendered == sa.true(), customer_handled),
            run_id,
            now,
        ),
    ]
    return sum(
        conn.execute(sa.insert(send_ledger).from_select(_columns(select), select)).rowcount
        for select in selects
    )


def _already_handled(duplicate: Reason) -> sa.ColumnElement[str]:
    return sa.literal(with_detail(duplicate, Reason.ALREADY_HANDLED_TODAY))


def _upsert_send_rows(conn: sa.Connection, plan: CampaignPlan, now: dt.datetime) -> None:
    """A pending send row per rendered message; one not final takes the message's current form."""
    m = plan_rows
    send_select = sa.select(
        m.c.campaign_key,
        m.c.partition_date,
        m.c.recipient.label("delivery_key"),
        m.c.row_key,
        m.c.customer_id,
        m.c.recipient,
        sa.literal(plan.campaign_id).label("campaign_id"),
        sa.literal(plan.sender).label("sender"),
        sa.literal(plan.limit_scope).label("limit_scope"),
        m.c.template_name,
        m.c.language,
        m.c.category,
        m.c.header_params_json,
        m.c.body_params_json,
        *_carried(m),
        sa.literal(Status.PENDING.value).label("status"),
        sa.literal(0).label("attempts"),
        sa.literal(now, sa.DateTime(timezone=True)).label("updated_at"),
    ).where(plan.where(m), m.c.rendered == sa.true(), ~_customer_handled_elsewhere(plan))
    upsert = dialect_insert(conn, send_ledger).from_select(_columns(send_select), send_select)
    ex = upsert.excluded
    was_skipped = D.status == Status.SKIPPED
    upsert = upsert.on_conflict_do_update(
        index_elements=["campaign_key", "partition_date", "delivery_key"],
        set_={
            "row_key": ex.row_key,
            "customer_id": ex.customer_id,
            "campaign_id": ex.campaign_id,
            "sender": ex.sender,
            "limit_scope": ex.limit_scope,
            "template_name": ex.template_name,
            "language": ex.language,
            "category": ex.category,
            "header_params_json": ex.header_params_json,
            "body_params_json": ex.body_params_json,
            **{name: ex[name] for name in CARRIED},
            "status": sa.case((was_skipped, Status.PENDING.value), else_=D.status),
            "reason": sa.case((was_skipped, None), else_=D.reason),
            "updated_at": ex.updated_at,
        },
        where=mutable(),
    )
    conn.execute(upsert)


def _remove_stale_send_rows(conn: sa.Connection, plan: CampaignPlan) -> int:
    """A send row whose audience row is no longer eligible: its outcome is now that row's skip
    row."""
    m = plan_rows
    return conn.execute(
        sa.delete(send_ledger).where(
            plan.where(send_ledger),
            D.delivery_key.not_like(f"{SKIP_PREFIX}%"),
            mutable(),
            ~sa.exists().where(
                plan.where(m),
                m.c.rendered == sa.true(),
                m.c.recipient == D.delivery_key,
                ~_customer_handled_elsewhere(plan),
            ),
        )
    ).rowcount


def settled_rows(
    state: sa.Connection, warehouse: sa.Connection, campaign_key: str, partition_date: str
) -> int:
    """The ledger rows of a day with nothing left to send, or 0.

    Settled: the ledger has rows, none is pending, deferred, retryable, in flight or a send skipped
    at claim time, and every audience row of the day has its outcome there. Recomputing such a
    day's audience and messages cannot send anything more; it would only replace the snapshot the
    sends were made from. The ledger is read on `state`, the audience on `warehouse`: each store
    answers its own queries, and the two answers are compared here.
    """
    day = sa.and_(D.campaign_key == campaign_key, D.partition_date == partition_date)
    # A send row skipped at claim time (consent withdrawn) is put back to pending by every reconcile
    # and judged again: the day is not settled while it has one.
    skipped_send = sa.and_(D.status == Status.SKIPPED, D.delivery_key.not_like(f"{SKIP_PREFIX}%"))
    open_rows = sa.or_(claimable(), D.status == Status.SENDING, skipped_send)
    total, still_open = state.execute(
        sa.select(sa.func.count(), sa.func.count().filter(open_rows)).where(day)
    ).one()
    if not total or still_open:
        return 0
    with_outcome = set(state.execute(sa.select(D.row_key).where(day)).scalars())
    a = audience.c
    audience_rows = warehouse.execute(
        sa.select(a.row_key).where(
            a.campaign_key == campaign_key, a.partition_date == partition_date
        ),
        execution_options={"stream_results": True, "yield_per": 10_000},
    ).scalars()
    has_rows = False
    for row_key in audience_rows:
        has_rows = True
        if row_key not in with_outcome:
            audience_rows.close()
            return 0
    return int(total) if has_rows else 0
