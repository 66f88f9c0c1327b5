"""Claim: the database decides who sends.

`claim_batch` moves a batch of claimable rows to `sending` under this process's claim token, in one
committed transaction of the state store, after the last-moment checks (halts, consent, suppressions,
pair rate, marketing cap, messaging limit); consent is read from the warehouse meanwhile, through
the `ConsentSource` the caller passes. Only rows it claimed may be sent. The others of the batch are
decided now (skipped or deferred, with their reason). `ClaimCursor` walks a day's rows from one
claim to the next.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from outbound_pipeline.ledger.checks import frequency_cap_check, pair_rate_check, row_checks
from outbound_pipeline.ledger.halts import active_halt
from outbound_pipeline.ledger.limits import count_claims, messaging_limit_check
from outbound_pipeline.ledger.plan import CampaignPlan, Decision, ExtraCheck, claimable
from outbound_pipeline.ledger.tables import send_ledger
from outbound_pipeline.outcomes import Status
from outbound_pipeline.warehouse import ConsentSource

D = send_ledger.c


@dataclass(frozen=True)
class Claimed:
    delivery_key: str
    customer_id: str | None
    recipient: str
    header_params_json: str | None
    body_params_json: str | None
    # The row's own template (a variant's); None: the plan's.
    template_name: str | None = None
    language: str | None = None


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


@dataclass
class ClaimCursor:
    """Where a run's next claim reads on from (`claim_batch(after=cursor.after)`).

    Each claim reads after the last key the previous one read: a day's rows are read once, not from
    the start at every batch. When a claim after a key finds nothing, the cursor goes back to the
    start once: rows behind it may be due now (released by a stopped run, a deferral ended).

        cursor = ClaimCursor()
        while True:
            result = claim_batch(..., after=cursor.after)
            ...  # handle result.halted, send result.claimed
            if not cursor.advance(result):
                break  # nothing claimable now; or wait while result.busy, then claim again
    """

    after: str | None = None

    def advance(self, result: ClaimResult) -> bool:
        """Move past a claim's rows; True when the run should claim again now.

        False when the claim was halted, or found nothing though it read from the start: nothing
        is claimable now (the cursor stays at the start for a claim after a wait)."""
        if result.halted:
            return False
        if result.candidates:
            self.after = result.last_key
            return True
        if self.after is not None:
            self.after = None  # once more from the start: rows behind the cursor may be due now
            return True
        return False


def claim_batch(
    conn: sa.Connection,
    plan: CampaignPlan,
    token: str,
    run_id: str,
    now: dt.datetime,
    size: int,
    *,
    consent: ConsentSource,
    extra_checks: Sequence[ExtraCheck] = (),
    after: str | None = None,
    usage_counts: bool = True,
) -> ClaimResult:
    """Claim up to `size` rows for this sender, deciding the others of the batch (one transaction).

    `after` (the previous claim's `last_key`) reads on from there: a day's rows are read once, not
    from the start at every batch. Callers pass None again once a claim after a key finds nothing,
    for rows behind the cursor that became due (released by a stopped run, a deferral ended):
    `ClaimCursor` does both.

    `usage_counts=False` (dry runs) decides the messaging limit from the exact count and adds no
    hourly count: a dry run's one long transaction must not hold the count row real claims update.
    """
    result = ClaimResult()
    halt = active_halt(conn, plan.campaign_key, now)
    if halt:
        result.halted = halt
        return result
    due = _due(plan, run_id, now)
    rows = _read_due_rows(conn, due, after, size)
    result.candidates = len(rows)
    result.last_key = rows[-1].delivery_key if rows else None
    if not rows:
        result.busy = _held_by_others(conn, due)
        return result

    decisions, trusted = _decide(
        conn,
        plan,
        rows,
        now,
        consent=consent,
        extra_checks=extra_checks,
        usage_counts=usage_counts,
    )
    _write_decisions(conn, plan, run_id, now, decisions)
    for _, reason, _ in decisions.values():
        result.decided[reason] = result.decided.get(reason, 0) + 1

    to_claim = _undecided(rows, decisions)
    if to_claim:
        result.claimed = _claim_rows(conn, plan, token, run_id, now, to_claim)
        if usage_counts:
            count_claims(conn, plan.limit_scope, now, len(result.claimed), trusted=trusted)
    return result


def _due(plan: CampaignPlan, run_id: str, now: dt.datetime) -> sa.ColumnElement[bool]:
    """The day's rows this run may claim now."""
    return sa.and_(
        plan.where(send_ledger),
        claimable(),
        sa.or_(D.not_before.is_(None), D.not_before <= now),
        # A run never takes back a row it already decided: no ping-pong within one run.
        sa.or_(D.run_id.is_(None), D.run_id != run_id),
    )


def _read_due_rows(
    conn: sa.Connection, due: sa.ColumnElement[bool], after: str | None, size: int
) -> Sequence[sa.Row[Any]]:
    """The next `size` due rows after the cursor, locked (PostgreSQL skips rows others hold)."""
    select = (
        sa.select(
            D.delivery_key,
            D.customer_id,
            D.recipient,
            D.header_params_json,
            D.body_params_json,
            D.category,
            D.template_name,
            D.language,
        )
        .where(due, D.delivery_key > after if after is not None else sa.true())
        .order_by(D.delivery_key)
        .limit(size)
    )
    if conn.dialect.name == "postgresql":
        select = select.with_for_update(skip_locked=True)
    return conn.execute(select).all()


def _held_by_others(conn: sa.Connection, due: sa.ColumnElement[bool]) -> bool:
    """Rows held by a concurrent reconcile or claim are not done, only busy for a moment: the
    caller waits for them rather than ending its run with them still pending."""
    if conn.dialect.name != "postgresql":
        return False
    return bool(conn.execute(sa.select(sa.exists().where(due))).scalar())


def _undecided(rows: Sequence[Any], decisions: Mapping[str, Decision]) -> list[Any]:
    return [r for r in rows if r.delivery_key not in decisions]


def _decide(
    conn: sa.Connection,
    plan: CampaignPlan,
    rows: Sequence[Any],
    now: dt.datetime,
    *,
    consent: ConsentSource,
    extra_checks: Sequence[ExtraCheck],
    usage_counts: bool,
) -> tuple[dict[str, Decision], bool]:
    """The batch's rows that may not go now, each check seeing the rows still going; and whether
    the messaging limit's hourly counts answered (`count_claims(trusted=...)`)."""
    decisions = row_checks(conn, plan, rows, now, consent=consent, extra_checks=extra_checks)
    for check in (pair_rate_check, frequency_cap_check):
        decisions.update(check(conn, plan, _undecided(rows, decisions), now))
    over_limit, trusted = messaging_limit_check(
        conn, plan, _undecided(rows, decisions), now, usage_counts=usage_counts
    )
    decisions.update(over_limit)
    return decisions, trusted


def _write_decisions(
    conn: sa.Connection,
    plan: CampaignPlan,
    run_id: str,
    now: dt.datetime,
    decisions: Mapping[str, Decision],
) -> None:
    for key, (status, reason, not_before) in decisions.items():
        conn.execute(
            sa.update(send_ledger)
            .where(plan.where(send_ledger), D.delivery_key == key, claimable())
            .values(
                status=status, reason=reason, not_before=not_before, run_id=run_id, updated_at=now
            )
        )


def _claim_rows(
    conn: sa.Connection,
    plan: CampaignPlan,
    token: str,
    run_id: str,
    now: dt.datetime,
    rows: Sequence[Any],
) -> list[Claimed]:
    """Move the rows to `sending` under this token; those it now owns."""
    keys = [r.delivery_key for r in rows]
    conn.execute(
        sa.update(send_ledger)
        .where(plan.where(send_ledger), D.delivery_key.in_(keys), claimable())
        .values(
            status=Status.SENDING,
            claim_token=token,
            claimed_at=now,
            attempts=D.attempts + 1,
            run_id=run_id,
            reason=None,
            # Provenance: the last-moment checks (consent, suppression list) passed now.
            consent_checked_at=now,
            dispatched_at=None,  # set again before this claim's call leaves (ledger.dispatch)
            # The scope its contact is counted in (count_claims): the one it was checked against.
            limit_scope=plan.limit_scope,
            updated_at=now,
        )
    )
    owned = set(
        conn.execute(
            sa.select(D.delivery_key).where(
                plan.where(send_ledger),
                D.claim_token == token,
                D.status == Status.SENDING,
                D.delivery_key.in_(keys),
            )
        ).scalars()
    )
    return [
        Claimed(
            r.delivery_key,
            r.customer_id,
            r.recipient,
            r.header_params_json,
            r.body_params_json,
            r.template_name,
            r.language,
        )
        for r in rows
        if r.delivery_key in owned
    ]
