"""The send ledger (`outbound_deliveries`): reconcile, claim, record. The database decides who sends.

Protocol, per partition:
1. `reconcile` turns the partition's audience and messages into ledger rows: one per audience row.
   Rows already `sent`, `unknown` or permanently `failed` are final and never touched again (unless
   an operator asks for a resend, which is recorded).
2. `claim_batch` moves a batch of claimable rows to `sending` under this process's claim token, in one
   committed transaction, after the last-moment checks (halts, consent, suppressions, pair rate,
   marketing cap, messaging limit). Only rows it claimed may be sent.
3. `record_results` writes each outcome, guarded by the claim token.
A process that dies leaves `sending` rows behind; `expire_dead_claims` turns them into `unknown`.
"""

from __future__ import annotations

import datetime as dt
import os
import socket
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from outbound_pipeline.clock import as_utc
from outbound_pipeline.warehouse import (
    audience,
    current_consent_states,
    deliveries,
    dialect_insert,
    halts,
    lock_partition,
    messages,
    quota_scopes,
    quota_usage,
    send_runs,
    sender_pace,
)

SENT, FAILED, SKIPPED, DEFERRED, UNKNOWN = "sent", "failed", "skipped", "deferred", "unknown"
PENDING, SENDING = "pending", "sending"
OUTCOMES = (SENT, FAILED, SKIPPED, DEFERRED, UNKNOWN)
# Statuses that count as a contact for limits: the message may have reached the phone.
CONTACTED = (SENDING, SENT, UNKNOWN)
SKIP_PREFIX = "row:"
# A sender whose heartbeat (every few seconds) is older than this is taken for dead.
DEAD_SENDER_SECONDS = 60.0

D = deliveries.c


def _claimable(current_run: str | None = None) -> sa.ColumnElement[bool]:
    """Rows a run may (re)send: never final ones."""
    return sa.or_(
        D.status.in_((PENDING, DEFERRED)),
        sa.and_(D.status == FAILED, D.retryable == sa.true()),
    )


def _mutable() -> sa.ColumnElement[bool]:
    """Rows reconcile may rewrite: not final, not in flight."""
    return sa.or_(_claimable(), D.status == SKIPPED)


@dataclass(frozen=True)
class CampaignPlan:
    """What the ledger needs to know of a campaign and its template for one partition."""

    campaign_key: str
    partition_date: str
    campaign_id: str
    sender: str
    limit_scope: str
    limit_max: int | None
    template_name: str
    language: str
    category: str
    consent_category: str
    consents_table: str
    attribution_window: dt.timedelta
    min_interval: dt.timedelta
    frequency_cap: tuple[int, dt.timedelta] | None = None

    def where(self, table: sa.Table) -> sa.ColumnElement[bool]:
        return sa.and_(
            table.c.campaign_key == self.campaign_key,
            table.c.partition_date == self.partition_date,
        )


# -- reconcile -------------------------------------------------------------------------------


class SnapshotMismatch(RuntimeError):
    """The day's audience and messages do not match: nothing can be reconciled from them."""


def _check_snapshot(conn: sa.Connection, plan: CampaignPlan) -> None:
    """Refuse a day whose messages are not exactly its eligible audience rows.

    audience and messages are delete-then-insert writes: a run stopped while writing them (or one
    writing them right now) leaves part of a day. Reconciling from that would drop the not-yet-sent
    rows the missing part held, and leave their audience rows without an outcome.
    """
    a, m = audience.c, messages.c
    unrendered = conn.execute(
        sa.select(sa.func.count()).where(
            plan.where(audience), a.eligible == sa.true(), ~sa.exists().where(plan.where(messages), m.row_key == a.row_key)
        )
    ).scalar_one()
    orphaned = conn.execute(
        sa.select(sa.func.count()).where(
            plan.where(messages),
            ~sa.exists().where(plan.where(audience), a.row_key == m.row_key, a.eligible == sa.true()),
        )
    ).scalar_one()
    if unrendered or orphaned:
        raise SnapshotMismatch(
            f"campaign {plan.campaign_key} {plan.partition_date}: the day's audience and messages do not match "
            f"({unrendered} eligible audience rows without a message, {orphaned} messages without an eligible "
            "audience row): a run stopped while writing them, or another run is writing them now. Nothing was "
            "sent or changed. Run the day's audience and messages again (the campaign's daily job for this "
            "partition), which re-sends nothing already handled."
        )


@dataclass
class ReconcileResult:
    expired_claims: int = 0
    resent_unknown: int = 0
    resent_failed: int = 0
    skip_rows: int = 0
    stale_removed: int = 0


def _handled(row: sa.Table | sa.Alias) -> sa.ColumnElement[bool]:
    """A send row that went out, may have, is going out, or failed for good: never sent again."""
    return sa.and_(
        row.c.delivery_key.not_like(f"{SKIP_PREFIX}%"),
        row.c.status.not_in((PENDING, DEFERRED, SKIPPED, FAILED))
        | sa.and_(row.c.status == FAILED, sa.or_(row.c.retryable.is_(None), row.c.retryable == sa.false())),
    )


def _final_same_row(row_key: sa.ColumnElement[Any], plan: CampaignPlan) -> sa.Exists:
    other = deliveries.alias("final_row")
    return sa.exists().where(plan.where(other), other.c.row_key == row_key, _handled(other))


def _recipient_handled_elsewhere(plan: CampaignPlan) -> sa.Exists:
    """The message's phone was already handled today under another audience row."""
    m, owner = messages, deliveries.alias("recipient_owner")
    return sa.exists().where(plan.where(owner), owner.c.delivery_key == m.c.recipient, owner.c.row_key != m.c.row_key, _handled(owner))


def _customer_handled_elsewhere(plan: CampaignPlan) -> sa.Exists:
    """The message's customer was already handled today on another phone: the day's first verdict
    on which phone the customer consented with stands, whatever a re-run's query order says."""
    m, owner = messages, deliveries.alias("customer_owner")
    return sa.exists().where(
        plan.where(owner), owner.c.customer_id == m.c.customer_id, owner.c.recipient != m.c.recipient, _handled(owner)
    )


def _skip_select(
    plan: CampaignPlan, source: sa.Table, reason: sa.ColumnElement[Any], where: sa.ColumnElement[bool], run_id: str, now: dt.datetime
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
        sa.literal(SKIPPED).label("status"),
        reason.label("reason"),
        sa.literal(0).label("attempts"),
        sa.literal(run_id).label("run_id"),
        sa.literal(now, sa.DateTime(timezone=True)).label("updated_at"),
    ).where(plan.where(source), where)


_SKIP_COLUMNS = [
    "campaign_key", "partition_date", "delivery_key", "row_key", "customer_id", "recipient", "campaign_id",
    "sender", "template_name", "language", "category", "status", "reason", "attempts", "run_id", "updated_at",
]


def reconcile(
    conn: sa.Connection,
    plan: CampaignPlan,
    run_id: str,
    now: dt.datetime,
    *,
    resend_unknown: bool = False,
    resend_failed_codes: Sequence[str] = (),
) -> ReconcileResult:
    """Bring the ledger of a partition in line with its audience and messages (one transaction)."""
    result = ReconcileResult()
    a, m = audience, messages
    # Two runs of one partition reconcile one after the other (SQLite's BEGIN IMMEDIATE does the same).
    lock_partition(conn, "outbound", plan.campaign_key, plan.partition_date)
    _check_snapshot(conn, plan)
    if resend_unknown:
        result.resent_unknown = conn.execute(
            sa.update(deliveries)
            .where(plan.where(deliveries), D.status == UNKNOWN)
            .values(status=PENDING, reason="operator_resend_unknown", resend_requested_by=run_id, updated_at=now)
        ).rowcount
    if resend_failed_codes:
        result.resent_failed = conn.execute(
            sa.update(deliveries)
            .where(plan.where(deliveries), D.status == FAILED, D.error_code.in_(list(resend_failed_codes)))
            .values(status=PENDING, retryable=True, reason="operator_resend_failed", resend_requested_by=run_id, updated_at=now)
        ).rowcount

    # Rows that are not sent are recomputed every run from the current audience.
    conn.execute(sa.delete(deliveries).where(plan.where(deliveries), D.delivery_key.like(f"{SKIP_PREFIX}%")))
    insert_skips = [
        _skip_select(plan, a, a.c.reason, sa.and_(a.c.eligible == sa.false(), ~_final_same_row(a.c.row_key, plan)), run_id, now),
        _skip_select(plan, m, m.c.reason, sa.and_(m.c.rendered == sa.false(), ~_final_same_row(m.c.row_key, plan)), run_id, now),
    ]
    # A recipient or a customer already handled today under another audience row (the audience
    # changed between runs: a reformatted phone, another query order).
    recipient_handled, customer_handled = _recipient_handled_elsewhere(plan), _customer_handled_elsewhere(plan)
    insert_skips.append(
        _skip_select(
            plan, m, sa.literal("duplicate_recipient:already_handled_today"), sa.and_(m.c.rendered == sa.true(), recipient_handled), run_id, now
        )
    )
    insert_skips.append(
        _skip_select(
            plan,
            m,
            sa.literal("duplicate_customer:already_handled_today"),
            sa.and_(m.c.rendered == sa.true(), ~recipient_handled, customer_handled, ~_final_same_row(m.c.row_key, plan)),
            run_id,
            now,
        )
    )
    for select in insert_skips:
        result.skip_rows += conn.execute(sa.insert(deliveries).from_select(_SKIP_COLUMNS, select)).rowcount

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
        sa.literal(PENDING).label("status"),
        sa.literal(0).label("attempts"),
        sa.literal(now, sa.DateTime(timezone=True)).label("updated_at"),
    ).where(plan.where(m), m.c.rendered == sa.true(), ~customer_handled)
    columns = [
        "campaign_key", "partition_date", "delivery_key", "row_key", "customer_id", "recipient", "campaign_id",
        "sender", "limit_scope", "template_name", "language", "category", "header_params_json",
        "body_params_json", "status", "attempts", "updated_at",
    ]
    upsert = dialect_insert(conn, deliveries).from_select(columns, send_select)
    ex = upsert.excluded
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
            "status": sa.case((D.status == SKIPPED, PENDING), else_=D.status),
            "reason": sa.case((D.status == SKIPPED, None), else_=D.reason),
            "updated_at": ex.updated_at,
        },
        where=_mutable(),
    )
    conn.execute(upsert)

    # A send row whose audience row is no longer eligible: its outcome is now that row's skip row.
    result.stale_removed = conn.execute(
        sa.delete(deliveries).where(
            plan.where(deliveries),
            D.delivery_key.not_like(f"{SKIP_PREFIX}%"),
            _mutable(),
            ~sa.exists().where(
                plan.where(m), m.c.rendered == sa.true(), m.c.recipient == D.delivery_key, ~customer_handled
            ),
        )
    ).rowcount
    return result


def settled_rows(conn: sa.Connection, campaign_key: str, partition_date: str) -> int:
    """The ledger rows of a day with nothing left to send, or 0.

    Settled: the ledger has rows, none is pending, deferred, retryable, in flight or a send skipped
    at claim time, and every audience row of the day has its outcome there. Recomputing such a day's audience and messages
    cannot send anything more; it would only replace the snapshot the sends were made from.
    """
    day = sa.and_(D.campaign_key == campaign_key, D.partition_date == partition_date)
    # A send row skipped at claim time (consent withdrawn) is put back to pending by every reconcile
    # and judged again: the day is not settled while it has one.
    skipped_send = sa.and_(D.status == SKIPPED, D.delivery_key.not_like(f"{SKIP_PREFIX}%"))
    total, still_open = conn.execute(
        sa.select(sa.func.count(), sa.func.count().filter(sa.or_(_claimable(), D.status == SENDING, skipped_send))).where(day)
    ).one()
    if not total or still_open:
        return 0
    a = audience.c
    audience_day = sa.and_(a.campaign_key == campaign_key, a.partition_date == partition_date)
    has_rows = conn.execute(sa.select(sa.exists().where(audience_day))).scalar()
    without_outcome = conn.execute(
        sa.select(
            sa.exists().where(
                audience_day,
                ~sa.exists().where(D.campaign_key == a.campaign_key, D.partition_date == a.partition_date, D.row_key == a.row_key),
            )
        )
    ).scalar()
    return int(total) if has_rows and not without_outcome else 0


# -- liveness of senders ---------------------------------------------------------------------


def new_claim_token(run_id: str) -> str:
    return f"{run_id[:24]}:{uuid.uuid4().hex[:16]}"


def register_sender(conn: sa.Connection, token: str, plan: CampaignPlan, run_id: str, now: dt.datetime) -> None:
    conn.execute(
        sa.insert(send_runs).values(
            claim_token=token,
            run_id=run_id,
            campaign_key=plan.campaign_key,
            partition_date=plan.partition_date,
            host=socket.gethostname(),
            pid=os.getpid(),
            started_at=now,
            heartbeat_at=now,
        )
    )


def heartbeat(conn: sa.Connection, token: str, now: dt.datetime, finished: bool = False) -> None:
    values: dict[str, Any] = {"heartbeat_at": now}
    if finished:
        values["finished_at"] = now
    conn.execute(sa.update(send_runs).where(send_runs.c.claim_token == token).values(**values))


def _process_alive(host: str | None, pid: int | None) -> bool | None:
    """True/False when the process is on this host; None when it cannot be told from here."""
    if host != socket.gethostname() or not pid:
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def expire_dead_claims(
    conn: sa.Connection, plan: CampaignPlan, now: dt.datetime, stale_after: dt.timedelta
) -> int:
    """`sending` rows whose sender died: the call may have gone out, so they become `unknown`."""
    owners = conn.execute(
        sa.select(D.claim_token).where(plan.where(deliveries), D.status == SENDING).distinct()
    ).scalars().all()
    if not owners:
        return 0
    runs = {
        row.claim_token: row
        for row in conn.execute(sa.select(send_runs).where(send_runs.c.claim_token.in_(owners)))
    }
    dead = []
    for token in owners:
        row = runs.get(token)
        if row is None or row.finished_at is not None:
            dead.append(token)
            continue
        alive = _process_alive(row.host, row.pid)
        if alive is False or (alive is None and as_utc(row.heartbeat_at) < now - stale_after):  # type: ignore[operator]
            dead.append(token)
    if not dead:
        return 0
    return conn.execute(
        sa.update(deliveries)
        .where(plan.where(deliveries), D.status == SENDING, D.claim_token.in_(dead))
        .values(status=UNKNOWN, reason="interrupted_outcome_unknown", retryable=False, updated_at=now)
    ).rowcount


# -- halts -----------------------------------------------------------------------------------


def active_halt(conn: sa.Connection, campaign_key: str, now: dt.datetime) -> str | None:
    rows = conn.execute(
        sa.select(halts.c.scope, halts.c.reason, halts.c.until).where(
            halts.c.scope.in_(("all", f"campaign:{campaign_key}"))
        )
    ).all()
    for row in rows:
        until = as_utc(row.until)
        if until is None:
            return f"{row.scope}: {row.reason} (until an operator clears it)"
        if until > now:
            return f"{row.scope}: {row.reason} (until {until:%Y-%m-%d %H:%M:%S} UTC)"
    return None


def set_halt(conn: sa.Connection, scope: str, reason: str, run_id: str, now: dt.datetime, until: dt.datetime | None) -> None:
    """Halt sends of a scope until `until` (None: until an operator clears it).

    A halt never weakens the one in force: one without an end stays, and so does one that ends
    later (a pause after a refused login must not turn the refusal into five minutes).
    """
    stmt = dialect_insert(conn, halts).values(scope=scope, reason=reason, halted_at=now, until=until, run_id=run_id)
    new, current = stmt.excluded, halts.c
    keep = sa.or_(
        current.until.is_(None),
        sa.and_(current.until > now, new.until.is_not(None), current.until >= new.until),
    )
    stmt = stmt.on_conflict_do_update(
        index_elements=["scope"],
        set_={name: sa.case((keep, current[name]), else_=new[name]) for name in ("reason", "halted_at", "until", "run_id")},
    )
    conn.execute(stmt)


def clear_halt(conn: sa.Connection, scope: str) -> int:
    return conn.execute(sa.delete(halts).where(halts.c.scope == scope)).rowcount


# -- claim -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Claimed:
    delivery_key: str
    customer_id: str | None
    recipient: str
    header_params_json: str | None
    body_params_json: str | None


@dataclass
class ClaimResult:
    claimed: list[Claimed] = field(default_factory=list)
    decided: dict[str, int] = field(default_factory=dict)  # reason -> rows skipped/deferred now
    halted: str | None = None
    candidates: int = 0
    # Claimable rows exist but another transaction holds them (PostgreSQL's SKIP LOCKED hid them).
    busy: bool = False
    # The last delivery key read: the next claim's `after`.
    last_key: str | None = None


Decision = tuple[str, str, dt.datetime | None]  # (status, reason, not_before) of a row not sent now


# -- messaging-limit usage -----------------------------------------------------------------

LIMIT_WINDOW = dt.timedelta(hours=24)
# Hourly counts are kept this long past the window: a clock set back (tests, a skewed host) by less
# still finds every hour it counted.
USAGE_KEPT = dt.timedelta(days=30)


def _hour(t: dt.datetime) -> dt.datetime:
    return t.replace(minute=0, second=0, microsecond=0)


def _in_scope(scope: str, window_start: dt.datetime) -> sa.ColumnElement[bool]:
    """Ledger rows that count against a scope's messaging limit: contacted since window_start."""
    return sa.and_(D.limit_scope == scope, D.status.in_(CONTACTED), D.claimed_at > window_start)


def _exact_usage(conn: sa.Connection, scope: str, window_start: dt.datetime) -> int:
    """Distinct recipients contacted in the scope since window_start: reads every such ledger row."""
    return conn.execute(sa.select(sa.func.count(sa.distinct(D.recipient))).where(_in_scope(scope, window_start))).scalar_one()


def usage_bound(conn: sa.Connection, scope: str, now: dt.datetime) -> int | None:
    """At least the scope's distinct recipients contacted in the 24 h before now, from the hourly
    counts; None when they cannot be trusted and the ledger must be counted:
    - no count in the window: a new scope, a day without claims, a ledger older than the counts;
    - a count in a later hour than now: the clock went back, or another host's clock runs ahead;
    - a contact in the ledger after the last claim counted: a run of an older version claimed
      without counting.
    Otherwise every claim of the window added its rows to its hour (`_count_claims`): their sum
    counts every contact once per claim, hence each recipient at least once.
    """
    u = quota_usage.c
    window_start = now - LIMIT_WINDOW
    total, hours, latest_hour, last_counted = conn.execute(
        sa.select(
            sa.func.coalesce(sa.func.sum(u.claims), 0), sa.func.count(), sa.func.max(u.hour_start),
            sa.func.max(u.last_claim_at),
        ).where(u.limit_scope == scope, u.hour_start >= _hour(window_start))
    ).one()
    if not hours or as_utc(latest_hour) > _hour(now):  # type: ignore[operator]
        return None
    # The newest contact, read from the end of the (limit_scope, claimed_at) index.
    latest_contact = as_utc(
        conn.execute(
            sa.select(D.claimed_at).where(_in_scope(scope, window_start)).order_by(D.claimed_at.desc()).limit(1)
        ).scalar()
    )
    if latest_contact is not None and (last_counted is None or latest_contact > as_utc(last_counted)):
        return None
    return int(total)


def _count_claims(conn: sa.Connection, scope: str, now: dt.datetime, claimed: int, *, trusted: bool) -> None:
    """Add rows just claimed (already `sending` in this transaction) to the scope's hourly usage.

    `trusted`: usage_bound answered before this claim. When not, counting starts again from the
    exact usage, which includes this claim's rows.
    """
    u = quota_usage.c
    if not trusted:
        claimed = _exact_usage(conn, scope, now - LIMIT_WINDOW)
    conn.execute(sa.delete(quota_usage).where(u.limit_scope == scope, u.hour_start < _hour(now - LIMIT_WINDOW - USAGE_KEPT)))
    if not claimed:
        return
    insert = dialect_insert(conn, quota_usage).values(limit_scope=scope, hour_start=_hour(now), claims=claimed, last_claim_at=now)
    new = insert.excluded
    conn.execute(
        insert.on_conflict_do_update(
            index_elements=["limit_scope", "hour_start"],
            set_={
                "claims": u.claims + new.claims,
                "last_claim_at": sa.case((u.last_claim_at > new.last_claim_at, u.last_claim_at), else_=new.last_claim_at),
            },
        )
    )


def _messaging_limit(conn: sa.Connection, plan: CampaignPlan, live: Sequence[Any], now: dt.datetime) -> dict[str, Decision]:
    """Rows over the scope's limit of distinct recipients in 24 h, deferred until a place frees up."""
    assert plan.limit_max is not None
    window_start = now - LIMIT_WINDOW
    in_scope = _in_scope(plan.limit_scope, window_start)
    used = _exact_usage(conn, plan.limit_scope, window_start)
    already = set(
        conn.execute(sa.select(D.recipient).where(in_scope, D.recipient.in_([r.recipient for r in live])).distinct()).scalars()
    )
    oldest = as_utc(conn.execute(sa.select(sa.func.min(D.claimed_at)).where(in_scope)).scalar())
    room = plan.limit_max - used
    new_in_batch: set[str] = set()
    decisions: dict[str, Decision] = {}
    for row in live:
        if row.recipient in already or row.recipient in new_in_batch:
            continue
        if room > 0:
            room -= 1
            new_in_batch.add(row.recipient)
        else:
            decisions[row.delivery_key] = (DEFERRED, "messaging_limit", (oldest or now) + LIMIT_WINDOW)
    return decisions


def _lock_scope(conn: sa.Connection, scope: str, now: dt.datetime) -> None:
    conn.execute(
        dialect_insert(conn, quota_scopes).values(limit_scope=scope, updated_at=now).on_conflict_do_nothing()
    )
    lock = sa.select(quota_scopes.c.limit_scope).where(quota_scopes.c.limit_scope == scope)
    if conn.dialect.name == "postgresql":
        lock = lock.with_for_update()
    conn.execute(lock)


# -- sender pace ------------------------------------------------------------------------------


# Reservations reach a fraction of a second ahead, a slow-down from the API minutes: a free time
# further ahead was written by a host whose clock runs ahead, and waiting for it would stop the sender.
PACE_TRUSTED_AHEAD_SECONDS = 900.0


def reserve_send_slots(conn: sa.Connection, sender: str, count: int, rate: float, earliest: float) -> float:
    """Reserve `count` send slots of the sender, 1/rate seconds apart, after every slot already
    reserved by any run and not before `earliest` (Unix time); the first slot's time.

    This is what holds a sender to its messages/s across runs and machines: each process calls only
    in the slots it reserved, and no two reservations overlap. `count=0` only pushes the sender's
    free time to `earliest` (the API said slow down: every run of the sender waits). Times are each
    host's own clock, so hosts must keep their clocks in step (NTP), as for the ledger's timestamps.
    """
    span = count / rate
    p = sender_pace.c
    insert = dialect_insert(conn, sender_pace).values(
        sender=sender, next_free_slot=earliest + span, updated_at=dt.datetime.now(dt.UTC)
    )
    free_from = sa.case(
        (sa.and_(p.next_free_slot > earliest, p.next_free_slot < earliest + PACE_TRUSTED_AHEAD_SECONDS), p.next_free_slot),
        else_=earliest,
    )
    # One statement: the row's lock (PostgreSQL) or the write lock (SQLite) serialises reservations.
    end = conn.execute(
        insert.on_conflict_do_update(
            index_elements=["sender"],
            set_={"next_free_slot": free_from + span, "updated_at": insert.excluded.updated_at},
        ).returning(p.next_free_slot)
    ).scalar_one()
    return end - span


def row_checks(
    conn: sa.Connection,
    plan: CampaignPlan,
    rows: Sequence[Any],
    now: dt.datetime,
    *,
    consent_id_is_int: bool = False,
    extra_checks: Sequence[Any] = (),
) -> dict[str, Decision]:
    """The checks of each row on its own: consent now, a marketing suppression (131050), the
    campaign's own (quiet hours). Claims run them, and the send loop again before a call that
    waited. Rows need delivery_key, customer_id and recipient; those that may go are absent."""
    decisions: dict[str, Decision] = {}
    consent = current_consent_states(
        conn, plan.consents_table, plan.consent_category, (r.customer_id for r in rows), consent_id_is_int
    )
    for row in rows:
        if consent.get(str(row.customer_id)) != "opted_in":
            decisions[row.delivery_key] = (SKIPPED, "consent_withdrawn_before_send", None)

    live = [r for r in rows if r.delivery_key not in decisions]
    recipients = [r.recipient for r in live]
    if recipients and plan.category == "MARKETING":
        suppressed = set(
            conn.execute(
                sa.select(D.recipient).where(
                    D.recipient.in_(recipients), D.status == FAILED, D.error_code == "131050"
                )
            ).scalars()
        )
        for row in live:
            if row.recipient in suppressed:
                decisions[row.delivery_key] = (SKIPPED, "user_stopped_marketing", None)

    for check in extra_checks:
        for key, decision in check(conn, plan, [r for r in rows if r.delivery_key not in decisions], now).items():
            decisions.setdefault(key, decision)
    return decisions


def claim_batch(
    conn: sa.Connection,
    plan: CampaignPlan,
    token: str,
    run_id: str,
    now: dt.datetime,
    size: int,
    *,
    consent_id_is_int: bool = False,
    extra_checks: Sequence[Any] = (),
    after: str | None = None,
    usage_counts: bool = True,
) -> ClaimResult:
    """Claim up to `size` rows for this sender, deciding the others of the batch (one transaction).

    `after` (the previous claim's `last_key`) reads on from there: a day's rows are read once, not
    from the start at every batch. Callers pass None again once a claim after a key finds nothing,
    for rows behind the cursor that became due (released by a stopped run, a deferral ended).

    `usage_counts=False` (dry runs) decides the messaging limit from the exact count and adds no
    hourly count: a dry run's one long transaction must not hold the count row real claims update.
    """
    result = ClaimResult()
    halt = active_halt(conn, plan.campaign_key, now)
    if halt:
        result.halted = halt
        return result
    due = sa.and_(
        plan.where(deliveries),
        _claimable(),
        sa.or_(D.not_before.is_(None), D.not_before <= now),
        # A run never takes back a row it already decided: no ping-pong within one run.
        sa.or_(D.run_id.is_(None), D.run_id != run_id),
    )
    select = (
        sa.select(D.delivery_key, D.customer_id, D.recipient, D.header_params_json, D.body_params_json, D.category)
        .where(due, D.delivery_key > after if after is not None else sa.true())
        .order_by(D.delivery_key)
        .limit(size)
    )
    postgres = conn.dialect.name == "postgresql"
    if postgres:
        select = select.with_for_update(skip_locked=True)
    rows = conn.execute(select).all()
    result.candidates = len(rows)
    result.last_key = rows[-1].delivery_key if rows else None
    if not rows:
        if postgres:
            # Rows held by a concurrent reconcile or claim are not done, only busy for a moment:
            # the caller waits for them rather than ending its run with them still pending.
            result.busy = bool(conn.execute(sa.select(sa.exists().where(due))).scalar())
        return result

    decisions = row_checks(conn, plan, rows, now, consent_id_is_int=consent_id_is_int, extra_checks=extra_checks)

    live = [r for r in rows if r.delivery_key not in decisions]
    recipients = [r.recipient for r in live]
    if recipients and plan.min_interval.total_seconds() > 0:
        recent = dict(
            conn.execute(
                sa.select(D.recipient, sa.func.max(D.claimed_at))
                .where(
                    D.recipient.in_(recipients),
                    D.status.in_(CONTACTED),
                    D.claimed_at > now - plan.min_interval,
                )
                .group_by(D.recipient)
            ).all()
        )
        for row in live:
            last = as_utc(recent.get(row.recipient))
            if last is not None:
                decisions[row.delivery_key] = (DEFERRED, "pair_rate", last + plan.min_interval)

    live = [r for r in rows if r.delivery_key not in decisions]
    if live and plan.frequency_cap and plan.category == "MARKETING":
        cap, window = plan.frequency_cap
        counts = {
            rec: (n, as_utc(first))
            for rec, n, first in conn.execute(
                sa.select(D.recipient, sa.func.count(), sa.func.min(D.claimed_at))
                .where(
                    D.recipient.in_([r.recipient for r in live]),
                    D.category == "MARKETING",
                    D.status.in_(CONTACTED),
                    D.claimed_at > now - window,
                )
                .group_by(D.recipient)
            ).all()
        }
        for row in live:
            n, first = counts.get(row.recipient, (0, None))
            if n >= cap:
                decisions[row.delivery_key] = (DEFERRED, "marketing_frequency_cap", first + window)  # type: ignore[operator]

    live = [r for r in rows if r.delivery_key not in decisions]
    limited = bool(live) and plan.limit_max is not None
    if limited:
        _lock_scope(conn, plan.limit_scope, now)
    # Read once: after the scope's lock, before this claim's own contacts are in the ledger (they
    # come after the last counted claim).
    bound = usage_bound(conn, plan.limit_scope, now) if usage_counts and live else None
    # Far from the limit every row fits, even if all are new recipients: nothing to count.
    if limited and (bound is None or bound + len(live) > plan.limit_max):  # type: ignore[operator]
        decisions.update(_messaging_limit(conn, plan, live, now))

    for key, (status, reason, not_before) in decisions.items():
        conn.execute(
            sa.update(deliveries)
            .where(plan.where(deliveries), D.delivery_key == key, _claimable())
            .values(status=status, reason=reason, not_before=not_before, run_id=run_id, updated_at=now)
        )
        result.decided[reason] = result.decided.get(reason, 0) + 1

    to_claim = [r for r in rows if r.delivery_key not in decisions]
    if to_claim:
        conn.execute(
            sa.update(deliveries)
            .where(plan.where(deliveries), D.delivery_key.in_([r.delivery_key for r in to_claim]), _claimable())
            .values(
                status=SENDING,
                claim_token=token,
                claimed_at=now,
                attempts=D.attempts + 1,
                run_id=run_id,
                reason=None,
                # The scope its contact is counted in (_count_claims): the one it was checked against.
                limit_scope=plan.limit_scope,
                updated_at=now,
            )
        )
        owned = set(
            conn.execute(
                sa.select(D.delivery_key).where(
                    plan.where(deliveries), D.claim_token == token, D.status == SENDING,
                    D.delivery_key.in_([r.delivery_key for r in to_claim]),
                )
            ).scalars()
        )
        result.claimed = [
            Claimed(r.delivery_key, r.customer_id, r.recipient, r.header_params_json, r.body_params_json)
            for r in to_claim
            if r.delivery_key in owned
        ]
        if usage_counts:
            _count_claims(conn, plan.limit_scope, now, len(result.claimed), trusted=bound is not None)
    return result


# -- record ----------------------------------------------------------------------------------


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
    sa.update(deliveries)
    .where(
        D.campaign_key == sa.bindparam("b_campaign"),
        D.partition_date == sa.bindparam("b_partition"),
        D.delivery_key == sa.bindparam("b_key"),
        D.claim_token == sa.bindparam("b_token"),
        D.status == SENDING,
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
    conn: sa.Connection, plan: CampaignPlan, token: str, outcomes: Sequence[Outcome], now: dt.datetime
) -> int:
    """Write outcomes of this sender's claims (one executemany)."""
    if not outcomes:
        return 0
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


def release_claims(conn: sa.Connection, plan: CampaignPlan, token: str, reason: str, now: dt.datetime, not_before: dt.datetime | None) -> int:
    """Claimed rows that were never sent go back to `deferred` (no call was made for them)."""
    return conn.execute(
        sa.update(deliveries)
        .where(plan.where(deliveries), D.claim_token == token, D.status == SENDING)
        .values(status=DEFERRED, reason=reason, not_before=not_before, attempts=D.attempts - 1, updated_at=now)
    ).rowcount


def status_counts(conn: sa.Connection, plan: CampaignPlan) -> dict[str, dict[str, int]]:
    """status -> reason -> rows, for metadata and the report."""
    out: dict[str, dict[str, int]] = {}
    for status, reason, n in conn.execute(
        sa.select(D.status, D.reason, sa.func.count()).where(plan.where(deliveries)).group_by(D.status, D.reason)
    ):
        out.setdefault(status, {})[reason or status] = n
    return out
