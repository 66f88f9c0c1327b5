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
from outbound_pipeline.config import ConversationQuerySettings
from outbound_pipeline.iadvize import (
    ConversationMatch,
    IAdvizeClient,
    SentMessage,
    fetch_conversations,
    match_conversations,
)
from outbound_pipeline.ledger import send_ledger
from outbound_pipeline.outcomes import Status
from outbound_pipeline.warehouse import conversations, lock_partition, replace_partition


@dataclass(frozen=True)
class ConversationDay:
    """One campaign day as the read needs it."""

    campaign_key: str
    partition_date: str
    campaign_id: str  # the iAdvize campaign the replies should be attached to
    window: dt.timedelta  # the campaign's attribution window


_COLUMNS = ("campaign_key", "partition_date", "customer_id", "recipient", "message_id")


def _sent_rows(state: sa.Connection, select: sa.Select[Any]) -> list[SentMessage]:
    return [
        SentMessage(
            **{name: getattr(row, name) for name in _COLUMNS},
            sent_at=as_utc(row.sent_at),  # type: ignore[arg-type]
            attribution_expires_at=as_utc(row.attribution_expires_at),
        )
        for row in state.execute(select)
    ]


def _selected(table: sa.Table) -> list[sa.ColumnElement[Any]]:
    return [table.c[name] for name in (*_COLUMNS, "sent_at", "attribution_expires_at")]


def _sent_on(table: sa.Table, campaign_key: str, partition_date: str) -> sa.ColumnElement[bool]:
    c = table.c
    return sa.and_(
        c.campaign_key == campaign_key,
        c.partition_date == partition_date,
        c.status == Status.SENT,
        c.recipient.is_not(None),
        c.sent_at.is_not(None),
    )


def sent_messages(
    state: sa.Connection, campaign_key: str, partition_date: str
) -> list[SentMessage]:
    """The day's `sent` rows of the ledger, in recipient order."""
    select = sa.select(*_selected(send_ledger)).where(
        _sent_on(send_ledger, campaign_key, partition_date)
    )
    return _sent_rows(state, select.order_by(send_ledger.c.recipient))


def later_messages(
    state: sa.Connection,
    campaign_key: str,
    partition_date: str,
    period: tuple[dt.datetime, dt.datetime],
) -> list[SentMessage]:
    """Messages of other days or campaigns sent to the day's recipients after them, within the
    read period: a conversation that starts after one of them answers it, not the day's message."""
    day, other = send_ledger.alias("day"), send_ledger.alias("other")
    o = other.c
    select = (
        sa.select(*_selected(other))
        .join(day, day.c.recipient == o.recipient)
        .where(
            _sent_on(day, campaign_key, partition_date),
            o.status == Status.SENT,
            o.sent_at > day.c.sent_at,
            o.sent_at < period[1],
            sa.or_(o.campaign_key != campaign_key, o.partition_date != partition_date),
        )
        .distinct()
    )
    return _sent_rows(state, select)


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
    later: Sequence[SentMessage] = (),
) -> list[ConversationMatch]:
    """One match per message of the day (`sent`), from the conversations iAdvize has for the read
    period; `later` (later_messages) take the conversations that answer them instead."""
    period = read_period(sent, day.window)
    if period is None:
        return []
    found = await fetch_conversations(client, settings, None, *period)
    matches = match_conversations([*sent, *later], found, day.campaign_id, day.window)
    return matches[: len(sent)]


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
    c = conversations.c
    day = sa.and_(c.campaign_key == campaign_key, c.partition_date == partition_date)
    replace_partition(conn, conversations, day, [rows])


def days_to_refresh(
    today: dt.date, window_hours: float, first: dt.date, last: dt.date | None
) -> list[str]:
    """The days before `today` whose replies may still arrive or have just stopped: a day's
    messages go out on it or, deferred, the next day, and are answered within the window."""
    span = math.ceil(window_hours / 24) + 2
    days = (today - dt.timedelta(days=n) for n in range(span, 0, -1))
    return [d.isoformat() for d in days if d >= first and (last is None or d <= last)]
