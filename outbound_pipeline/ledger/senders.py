"""The processes that send: each registers under a claim token and beats while it runs.

A process that dies leaves `sending` rows behind; `expire_dead_claims` turns those whose dispatch
mark was committed into `unknown` (the call may have gone out) and gives the others back to the
queue (no call of theirs left).
"""

from __future__ import annotations

import datetime as dt
import os
import socket
import uuid
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from outbound_pipeline.clock import as_utc
from outbound_pipeline.ledger.plan import CampaignPlan, own_partition
from outbound_pipeline.ledger.tables import send_ledger, send_runs
from outbound_pipeline.outcomes import Reason, Status

# A sender whose heartbeat (every few seconds) is older than this is taken for dead.
DEAD_SENDER_SECONDS = 60.0

D = send_ledger.c


def new_claim_token(run_id: str) -> str:
    return f"{run_id[:24]}:{uuid.uuid4().hex[:16]}"


def register_sender(
    conn: sa.Connection, token: str, plan: CampaignPlan, run_id: str, now: dt.datetime
) -> None:
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


def _dead_tokens(
    conn: sa.Connection, owners: list[str], now: dt.datetime, stale_after: dt.timedelta
) -> list[str]:
    """The claim tokens among `owners` whose sender finished, died or went silent."""
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
        if alive is None:  # on another host: its heartbeat tells
            alive = as_utc(row.heartbeat_at) >= now - stale_after  # type: ignore[operator]
        if not alive:
            dead.append(token)
    return dead


@dataclass(frozen=True)
class ExpiredClaims:
    """A dead sender's claims: those that may have been called, and those given back."""

    unknown: int = 0
    requeued: int = 0


def expire_dead_claims(
    conn: sa.Connection, plan: CampaignPlan, now: dt.datetime, stale_after: dt.timedelta
) -> ExpiredClaims:
    """`sending` rows whose sender died: `unknown` when their dispatch mark was committed (the
    call may have gone out), else `pending` again (never called: the next claim sends them)."""
    # Rows of other runs: locked before the reconcile that follows in the same transaction, they
    # could close a cycle with another run's reconcile, which rewrites rows of the whole day.
    own_partition(conn, plan)
    in_flight = sa.and_(plan.where(send_ledger), D.status == Status.SENDING)
    owners = list(conn.execute(sa.select(D.claim_token).where(in_flight).distinct()).scalars())
    if not owners:
        return ExpiredClaims()
    dead = _dead_tokens(conn, owners, now, stale_after)
    if not dead:
        return ExpiredClaims()
    of_dead = sa.and_(in_flight, D.claim_token.in_(dead))
    unknown = conn.execute(
        sa.update(send_ledger)
        .where(of_dead, D.dispatched_at.is_not(None))
        .values(
            status=Status.UNKNOWN,
            reason=Reason.INTERRUPTED_OUTCOME_UNKNOWN,
            retryable=False,
            updated_at=now,
        )
    ).rowcount
    requeued = conn.execute(
        sa.update(send_ledger)
        .where(of_dead, D.dispatched_at.is_(None))
        .values(
            status=Status.PENDING,
            reason=None,
            claim_token=None,
            run_id=None,  # any run may claim it again, a retry of the dead one's step included
            # The claim counted an attempt that never called.
            attempts=D.attempts - 1,
            updated_at=now,
        )
    ).rowcount
    return ExpiredClaims(unknown, requeued)
