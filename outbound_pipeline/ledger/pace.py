"""Sender pace: the send slots that hold a sender to its messages/s across runs and machines."""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa

from outbound_pipeline.ledger.tables import sender_pace
from outbound_pipeline.warehouse import dialect_insert

# Reservations reach a fraction of a second ahead, a slow-down from the API minutes: a free time
# further ahead was written by a host whose clock runs ahead, and waiting for it would stop the
# sender.
PACE_TRUSTED_AHEAD_SECONDS = 900.0


def reserve_send_slots(
    conn: sa.Connection, sender: str, count: int, rate: float, earliest: float
) -> float:
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
    trusted = sa.and_(
        p.next_free_slot > earliest, p.next_free_slot < earliest + PACE_TRUSTED_AHEAD_SECONDS
    )
    free_from = sa.case((trusted, p.next_free_slot), else_=earliest)
    # One statement: the row's lock (PostgreSQL) or the write lock (SQLite) serialises reservations.
    end = conn.execute(
        insert.on_conflict_do_update(
            index_elements=["sender"],
            set_={"next_free_slot": free_from + span, "updated_at": insert.excluded.updated_at},
        ).returning(p.next_free_slot)
    ).scalar_one()
    return end - span
