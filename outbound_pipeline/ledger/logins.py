"""Login slots: one iAdvize user's login budget, shared through the state store by every process.

iAdvize allows 10 logins a minute per user (and blocks logins for a while beyond). Tokens are cached
per process, so parallel runs (a backfill's partitions, each its own process) would each log in at
once. Before logging in, a process takes a slot here: a row in `outbound_login_slots`, counted over
the last `window` seconds under a lock (PostgreSQL: a transaction-scoped advisory lock per user;
SQLite: its single writer, `BEGIN IMMEDIATE`). When the budget is spent it is told how long until
the oldest slot of the window frees, and waits. Only the slot is shared: the token never leaves
the process that logged in.
"""

from __future__ import annotations

import datetime as dt
import os
import socket
import uuid

import sqlalchemy as sa

from outbound_pipeline.clock import as_utc
from outbound_pipeline.ledger.tables import login_slots

LOGIN_WINDOW_SECONDS = 60.0
# Slots older than this are deleted when a new one is taken: an operator can still read a day's
# logins, and the table stays a few hundred rows.
KEEP_SLOTS_SECONDS = 24 * 3600.0


def _lock_user(conn: sa.Connection, user_key: str) -> None:
    """Serialise the user's slot decisions until the transaction ends (SQLite: BEGIN IMMEDIATE,
    which the state store's engine issues, already does)."""
    if conn.dialect.name == "postgresql":
        name = f"outbound-login:{user_key}"
        conn.execute(sa.select(sa.func.pg_advisory_xact_lock(sa.func.hashtext(name))))


def take_login_slot(
    conn: sa.Connection,
    user_key: str,
    now: dt.datetime,
    budget: int,
    window: float = LOGIN_WINDOW_SECONDS,
) -> float | None:
    """Take a login slot of the user now (None) or, when `budget` slots were taken in the last
    `window` seconds, take none and return the seconds until the next one frees."""
    _lock_user(conn, user_key)
    s = login_slots.c
    recent = conn.execute(
        sa.select(s.taken_at)
        .where(s.user_key == user_key, s.taken_at > now - dt.timedelta(seconds=window))
        .order_by(s.taken_at.desc())
        .limit(budget)
    ).all()
    if len(recent) >= budget:
        frees_at = as_utc(recent[-1].taken_at) + dt.timedelta(seconds=window)  # type: ignore[operator]
        # A slot stamped ahead by a host whose clock runs fast never makes anyone wait past a window.
        return min(window, max(0.05, (frees_at - now).total_seconds()))
    conn.execute(
        sa.insert(login_slots).values(
            slot_id=uuid.uuid4().hex,
            user_key=user_key,
            taken_at=now,
            host=socket.gethostname()[:255],
            pid=os.getpid(),
        )
    )
    conn.execute(
        sa.delete(login_slots).where(
            s.user_key == user_key,
            s.taken_at < now - dt.timedelta(seconds=KEEP_SLOTS_SECONDS),
        )
    )
    return None


def logins_taken(conn: sa.Connection, user_key: str | None = None) -> list[dt.datetime]:
    """When each slot kept was taken (all users, or one), oldest first: for operators and tests."""
    query = sa.select(login_slots.c.taken_at).order_by(login_slots.c.taken_at)
    if user_key is not None:
        query = query.where(login_slots.c.user_key == user_key)
    return [as_utc(row.taken_at) for row in conn.execute(query)]  # type: ignore[misc]


class StoreLoginSlots:
    """The login slots of the state store `engine`: what a TokenKeeper asks before each login
    (iadvize.LoginSlots). `budget`: logins a window for one user, every process together (the
    iadvize resource's `logins_per_minute`, 8 by default: iAdvize allows 10)."""

    def __init__(
        self, engine: sa.Engine, budget: int, window: float = LOGIN_WINDOW_SECONDS
    ) -> None:
        if budget < 1:
            raise ValueError("the login budget must allow at least one login a window")
        self.engine = engine
        self.budget = budget
        self.window = window

    def try_take(self, user_key: str) -> float | None:
        """A slot taken now (None), or the seconds to wait before asking again."""
        with self.engine.begin() as conn:
            return take_login_slot(
                conn, user_key, dt.datetime.now(dt.UTC), self.budget, self.window
            )
