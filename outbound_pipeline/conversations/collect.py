"""A campaign day's conversations: its sent messages (the state store's ledger), the period to read,
the read from iAdvize, the matching, and the rows of the warehouse's `outbound_conversations`.

The read takes every WhatsApp conversation of the period, whatever campaign iAdvize attached it to:
a reply attached to another campaign (or to none) is what the wrong-campaign count is about, and a
read filtered by the campaign would never see it.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from outbound_pipeline.clock import as_utc
from outbound_pipeline.iadvize import (
    ConversationMatch,
    ConversationQuerySettings,
    IAdvizeClient,
    SentMessage,
    fetch_conversations,
    match_conversations,
)
from outbound_pipeline.ledger import send_ledger
from outbound_pipeline.outcomes import Status
from outbound_pipeline.warehouse import conversations, lock_partition


@dataclass(frozen=True)
class ConversationDay:
    """One campaign day as the read needs it."""

    campaign_key: str
    partition_date: str
    campaign_id: str  # the iAdvize campaign the replies should be attached to
    window: dt.timedelta  # the campaign's attribution window


def sent_messages(
    state: sa.Connection, campaign_key: str, partition_date: str
) -> list[SentMessage]:
    """The day's `sent` rows of the ledger, in recipient order."""
    d = send_ledger.c
    select = (
        sa.select(d.customer_id, d.recipient, d.message_id, d.sent_at, d.attribution_expires_at)
        .where(
            d.campaign_key == campaign_key,
            d.partition_date == partition_date,
            d.status == Status.SENT,
            d.recipient.is_not(None),
            d.sent_at.is_not(None),
        )
        .order_by(d.recipient)
    )
    return [
        SentMessage(
            campaign_key=campaign_key,
            partition_date=partition_date,
            customer_id=row.customer_id,
            recipient=row.recipient,
            message_id=row.message_id,
            sent_at=as_utc(row.sent_at),  # type: ignore[arg-type]
            attribution_expires_at=as_utc(row.attribution_expires_at),
        )
        for row in state.execute(select)
    ]


def _expiry(row: SentMessage, window: dt.timedelta) -> dt.datetime:
    return as_utc(row.attribution_expires_at or row.sent_at + window)  # type: ignore[return-value]


def read_period(
    sent: Sequence[SentMessage], window: dt.timedelta
) -> tuple[dt.datetime, dt.datetime] | None:
    """From the first message to one window after the last expiry: replies, and late replies up
    to a window after it (reported, not counted). None when nothing was sent."""
    if not sent:
        return None
    start = min(as_utc(row.sent_at) for row in sent)  # type: ignore[type-var]
    return start, max(_expiry(row, window) for row in sent) + window  # type: ignore[return-value]


def window_closed(sent: Sequence[SentMessage], window: dt.timedelta, now: dt.datetime) -> bool:
    """True when every message's attribution window is over: the day's figures are final."""
    return all(_expiry(row, window) <= now for row in sent)


async def collect_conversations(
    client: IAdvizeClient,
    settings: ConversationQuerySettings,
    day: ConversationDay,
    sent: Sequence[SentMessage],
) -> list[ConversationMatch]:
    """One match per sent message, from the conversations iAdvize has for the read period."""
    period = read_period(sent, day.window)
    if period is None:
        return []
    found = await fetch_conversations(client, settings, None, *period)
    return match_conversations(sent, found, day.campaign_id, day.window)


def table_rows(
    matches: Iterable[ConversationMatch], collected_at: dt.datetime, run_id: str | None
) -> list[dict[str, Any]]:
    """The rows of outbound_conversations for matches read at `collected_at` by `run_id`."""
    names = {column.name for column in conversations.columns}
    return [
        {
            **{k: v for k, v in dataclasses.asdict(match).items() if k in names},
            "collected_at": collected_at,
            "run_id": run_id,
        }
        for match in matches
    ]


def write_conversations(
    conn: sa.Connection, campaign_key: str, partition_date: str, rows: list[dict[str, Any]]
) -> None:
    """Replace the day's rows (idempotent per partition; two runs of one day write in turn)."""
    lock_partition(conn, "outbound-conversations", campaign_key, partition_date)
    table = conversations
    conn.execute(
        sa.delete(table).where(
            table.c.campaign_key == campaign_key, table.c.partition_date == partition_date
        )
    )
    if rows:
        conn.execute(sa.insert(table), rows)


def days_to_refresh(
    today: dt.date, window_hours: float, first: dt.date, last: dt.date | None
) -> list[str]:
    """The days before `today` whose replies may still arrive or have just stopped: a day's
    messages go out on it or, deferred, the next day, and are answered within the window."""
    span = math.ceil(window_hours / 24) + 2
    days = (today - dt.timedelta(days=n) for n in range(span, 0, -1))
    return [d.isoformat() for d in days if d >= first and (last is None or d <= last)]
