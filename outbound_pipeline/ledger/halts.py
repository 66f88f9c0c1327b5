"""Halts: an operator or the API stops the sends of one campaign (`campaign:<key>`) or of all
(`all`), until a given time or until an operator clears it. Every claim reads them first."""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa

from outbound_pipeline.clock import as_utc
from outbound_pipeline.ledger.tables import halts
from outbound_pipeline.warehouse import dialect_insert


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


def set_halt(
    conn: sa.Connection,
    scope: str,
    reason: str,
    run_id: str,
    now: dt.datetime,
    until: dt.datetime | None,
) -> None:
    """Halt sends of a scope until `until` (None: until an operator clears it).

    A halt never weakens the one in force: one without an end stays, and so does one that ends
    later (a pause after a refused login must not turn the refusal into five minutes).
    """
    stmt = dialect_insert(conn, halts).values(
        scope=scope, reason=reason, halted_at=now, until=until, run_id=run_id
    )
    new, current = stmt.excluded, halts.c
    keep = sa.or_(
        current.until.is_(None),
        sa.and_(current.until > now, new.until.is_not(None), current.until >= new.until),
    )
    stmt = stmt.on_conflict_do_update(
        index_elements=["scope"],
        set_={
            name: sa.case((keep, current[name]), else_=new[name])
            for name in ("reason", "halted_at", "until", "run_id")
        },
    )
    conn.execute(stmt)


def clear_halt(conn: sa.Connection, scope: str) -> int:
    return conn.execute(sa.delete(halts).where(halts.c.scope == scope)).rowcount
