"""Dispatch marks: a claimed row's call leaves only once its mark is committed.

`dispatch` marks a group of this sender's claimed rows (`dispatched_at`) in one transaction, with
the outcomes the sender learnt since: the send loop asks it for the rows its workers are about to
call, so one commit serves a group of calls and the rate holds. The marking statement itself
refuses the rows whose recipient is on the pipeline's suppression list: a suppression committed
before the mark's commit means no call (SQLite's single writer makes that exact; on PostgreSQL the
mark reads the list under a lock a suppression's writer takes exclusively: `lock_the_list`).

After a crash, a dead sender's `sending` rows are told apart by the mark
(`senders.expire_dead_claims`): marked ones may have been called and become `unknown`, the others
were never called and go back to the queue.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

import sqlalchemy as sa

from outbound_pipeline.ledger.plan import CampaignPlan, hold_partition
from outbound_pipeline.ledger.record import Outcome, record_results
from outbound_pipeline.ledger.tables import send_ledger
from outbound_pipeline.outcomes import Status
from outbound_pipeline.unsubscribe import lock_the_list, suppressions

D = send_ledger.c


@dataclass(frozen=True)
class Dispatch:
    """What a group's marks decided. A key in neither set is no longer this sender's: no call."""

    marked: frozenset[str]  # committed: the call may leave
    unsubscribed: frozenset[str]  # refused: the recipient is on the suppression list


def dispatch(
    conn: sa.Connection,
    plan: CampaignPlan,
    token: str,
    keys: Sequence[str],
    now: dt.datetime,
    outcomes: Sequence[Outcome] = (),
    released: Sequence[str] = (),
) -> Dispatch:
    """Write `outcomes`, lift the marks of `released` (calls refused before acceptance, waiting to
    be retried), then mark `keys` dispatched unless their recipient unsubscribed (one transaction:
    the caller's)."""
    hold_partition(conn, plan)  # before any row: see hold_partition
    record_results(conn, plan, token, outcomes, now, held=True)
    if released:
        conn.execute(
            sa.update(send_ledger)
            .where(_mine(plan, token, released), D.dispatched_at.is_not(None))
            .values(dispatched_at=None)
        )
    if not keys:
        return Dispatch(frozenset(), frozenset())
    mine = _mine(plan, token, keys)
    lock_the_list(conn, to_write=False)
    on_the_list = sa.exists().where(suppressions.c.phone == D.recipient)
    marked = frozenset(
        conn.execute(
            sa.update(send_ledger)
            .where(mine, ~on_the_list)
            .values(dispatched_at=now)
            .returning(D.delivery_key)
        ).scalars()
    )
    if len(marked) == len(keys):
        return Dispatch(marked, frozenset())
    # Read after the mark: a suppression the mark saw, it sees too (never deleted).
    refused = conn.execute(
        sa.select(D.delivery_key).where(mine, D.delivery_key.not_in(marked), on_the_list)
    ).scalars()
    return Dispatch(marked, frozenset(refused))


def _mine(plan: CampaignPlan, token: str, keys: Sequence[str]) -> sa.ColumnElement[bool]:
    """The rows among `keys` this sender holds in flight."""
    return sa.and_(
        plan.where(send_ledger),
        D.delivery_key.in_(list(keys)),
        D.claim_token == token,
        D.status == Status.SENDING,
    )
