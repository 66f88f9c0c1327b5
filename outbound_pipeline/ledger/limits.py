"""The messaging limit: at most `limit_max` distinct recipients per rolling 24 h per limit scope.

A claim takes its scope's lock, then reads the scope's usage from the hourly counts
(`usage_bound`, cheap), and counts the ledger's contacts of the window only near the limit or when
the counts cannot be trusted (`messaging_limit_check`). Every claim adds its rows to its hour
(`count_claims`).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

from outbound_pipeline.clock import as_utc
from outbound_pipeline.ledger.plan import CampaignPlan, Decision
from outbound_pipeline.ledger.tables import quota_scopes, quota_usage, send_ledger
from outbound_pipeline.outcomes import CONTACTED, Reason, Status
from outbound_pipeline.warehouse import dialect_insert

LIMIT_WINDOW = dt.timedelta(hours=24)
# Hourly counts are kept this long past the window: a clock set back (tests, a skewed host) by less
# still finds every hour it counted.
USAGE_KEPT = dt.timedelta(days=30)

D = send_ledger.c


def _hour(t: dt.datetime) -> dt.datetime:
    return t.replace(minute=0, second=0, microsecond=0)


def _in_scope(scope: str, window_start: dt.datetime) -> sa.ColumnElement[bool]:
    """Ledger rows that count against a scope's messaging limit: contacted since window_start."""
    return sa.and_(D.limit_scope == scope, D.status.in_(CONTACTED), D.claimed_at > window_start)


def _exact_usage(conn: sa.Connection, scope: str, window_start: dt.datetime) -> int:
    """Distinct recipients contacted in the scope since window_start: reads every such row."""
    return conn.execute(
        sa.select(sa.func.count(sa.distinct(D.recipient))).where(_in_scope(scope, window_start))
    ).scalar_one()


def usage_bound(conn: sa.Connection, scope: str, now: dt.datetime) -> int | None:
    """At least the scope's distinct recipients contacted in the 24 h before now, from the hourly
    counts; None when they cannot be trusted and the ledger must be counted:
    - no count in the window: a new scope, a day without claims, a ledger older than the counts;
    - a count in a later hour than now: the clock went back, or another host's clock runs ahead;
    - a contact in the ledger after the last claim counted: a run of an older version claimed
      without counting.
    Otherwise every claim of the window added its rows to its hour (`count_claims`): their sum
    counts every contact once per claim, hence each recipient at least once.
    """
    u = quota_usage.c
    window_start = now - LIMIT_WINDOW
    total, hours, latest_hour, last_counted = conn.execute(
        sa.select(
            sa.func.coalesce(sa.func.sum(u.claims), 0),
            sa.func.count(),
            sa.func.max(u.hour_start),
            sa.func.max(u.last_claim_at),
        ).where(u.limit_scope == scope, u.hour_start >= _hour(window_start))
    ).one()
    if not hours or as_utc(latest_hour) > _hour(now):  # type: ignore[operator]
        return None
    # The newest contact, read from the end of the (limit_scope, claimed_at) index.
    latest_contact = as_utc(
        conn.execute(
            sa.select(D.claimed_at)
            .where(_in_scope(scope, window_start))
            .order_by(D.claimed_at.desc())
            .limit(1)
        ).scalar()
    )
    if latest_contact is not None and (
        last_counted is None or latest_contact > as_utc(last_counted)
    ):
        return None
    return int(total)


def count_claims(
    conn: sa.Connection, scope: str, now: dt.datetime, claimed: int, *, trusted: bool
) -> None:
    """Add rows just claimed (already `sending` in this transaction) to the scope's hourly usage.

    `trusted`: usage_bound answered before this claim. When not, counting starts again from the
    exact usage, which includes this claim's rows.
    """
    u = quota_usage.c
    if not trusted:
        claimed = _exact_usage(conn, scope, now - LIMIT_WINDOW)
    conn.execute(
        sa.delete(quota_usage).where(
            u.limit_scope == scope, u.hour_start < _hour(now - LIMIT_WINDOW - USAGE_KEPT)
        )
    )
    if not claimed:
        return
    insert = dialect_insert(conn, quota_usage).values(
        limit_scope=scope, hour_start=_hour(now), claims=claimed, last_claim_at=now
    )
    new = insert.excluded
    later_claim = sa.case(
        (u.last_claim_at > new.last_claim_at, u.last_claim_at), else_=new.last_claim_at
    )
    conn.execute(
        insert.on_conflict_do_update(
            index_elements=["limit_scope", "hour_start"],
            set_={"claims": u.claims + new.claims, "last_claim_at": later_claim},
        )
    )


def _lock_scope(conn: sa.Connection, scope: str, now: dt.datetime) -> None:
    conn.execute(
        dialect_insert(conn, quota_scopes)
        .values(limit_scope=scope, updated_at=now)
        .on_conflict_do_nothing()
    )
    lock = sa.select(quota_scopes.c.limit_scope).where(quota_scopes.c.limit_scope == scope)
    if conn.dialect.name == "postgresql":
        lock = lock.with_for_update()
    conn.execute(lock)


def _over_the_limit(
    conn: sa.Connection, plan: CampaignPlan, live: Sequence[Any], now: dt.datetime
) -> dict[str, Decision]:
    """Rows over the scope's limit of distinct recipients in 24 h, deferred until a place frees
    up."""
    assert plan.limit_max is not None
    window_start = now - LIMIT_WINDOW
    in_scope = _in_scope(plan.limit_scope, window_start)
    used = _exact_usage(conn, plan.limit_scope, window_start)
    already = set(
        conn.execute(
            sa.select(D.recipient)
            .where(in_scope, D.recipient.in_([r.recipient for r in live]))
            .distinct()
        ).scalars()
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
            decisions[row.delivery_key] = (
                Status.DEFERRED,
                Reason.MESSAGING_LIMIT,
                (oldest or now) + LIMIT_WINDOW,
            )
    return decisions


def messaging_limit_check(
    conn: sa.Connection,
    plan: CampaignPlan,
    live: Sequence[Any],
    now: dt.datetime,
    *,
    usage_counts: bool,
) -> tuple[dict[str, Decision], bool]:
    """The claim's messaging-limit step for the rows still going: the rows it defers, and whether
    the hourly counts answered (`count_claims(trusted=...)` after the claim)."""
    limited = bool(live) and plan.limit_max is not None
    if limited:
        _lock_scope(conn, plan.limit_scope, now)
    # Read once: after the scope's lock, before this claim's own contacts are in the ledger (they
    # come after the last counted claim).
    bound = usage_bound(conn, plan.limit_scope, now) if usage_counts and live else None
    # Far from the limit every row fits, even if all are new recipients: nothing to count.
    if limited and (bound is None or bound + len(live) > plan.limit_max):  # type: ignore[operator]
        return _over_the_limit(conn, plan, live, now), bound is not None
    return {}, bound is not None
