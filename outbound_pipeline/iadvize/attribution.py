"""Match the conversations read from iAdvize to the messages the pipeline sent: who replied, when,
in which campaign's conversation, and whether it converted. Pure functions, no I/O.

A conversation belongs to the latest message sent to its visitor's phone before it started. It is
a reply to that message when it started before the message's attribution expiry; a later one is a
late reply, reported but not counted. Phones are compared in E.164: the API may write them without
the '+'.
"""

from __future__ import annotations

import bisect
import datetime as dt
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import cast

from outbound_pipeline.clock import as_utc
from outbound_pipeline.iadvize.conversation_query import ConversationRecord
from outbound_pipeline.whatsapp import normalise


@dataclass(frozen=True)
class SentMessage:
    """A `sent` row of the ledger (outbound_deliveries)."""

    campaign_key: str
    partition_date: str
    customer_id: str | None
    recipient: str  # E.164
    message_id: str | None
    sent_at: dt.datetime
    attribution_expires_at: dt.datetime | None  # None: sent_at + the attribution window


@dataclass(frozen=True)
class ConversationMatch:
    """What came of one sent message; the conversation fields describe the reply, or the late
    reply when there is none in the window, or are None when the recipient never wrote."""

    campaign_key: str
    partition_date: str
    customer_id: str | None
    recipient: str
    message_id: str | None
    replied: bool  # a conversation started in [sent_at, attribution expiry)
    replied_at: dt.datetime | None
    conversation_id: str | None
    attached_campaign_id: str | None  # the campaign iAdvize attached it to, if any
    attached_to_campaign: bool | None  # attached to the expected campaign; None: no conversation
    converted: bool  # the reply's conversation converted (False for a late reply)
    within_window: bool | None  # False: only a late reply; None: no conversation

    @property
    def wrong_campaign(self) -> bool:
        """A reply iAdvize attached to another campaign (the launch checklist's check)."""
        return (
            self.replied and self.attached_campaign_id is not None and not self.attached_to_campaign
        )


def visitor_e164(raw: str | None) -> str | None:
    """The E.164 form of a phone as the API writes it (digits with the country code, with or
    without '+' or '00'); None when it is not a valid number."""
    text = (raw or "").strip()
    if not text:
        return None
    if not text.startswith(("+", "00")):
        text = "+" + text
    return normalise(text, None).e164


# A conversation with its start in UTC, as the matching compares it.
_Dated = tuple[dt.datetime, ConversationRecord]


def _utc(value: dt.datetime) -> dt.datetime:
    return cast(dt.datetime, as_utc(value))


def _attributed(
    sent: Sequence[SentMessage], conversations: Iterable[ConversationRecord]
) -> dict[int, list[_Dated]]:
    """Index of a sent message -> the conversations that started after it and before any later
    message to the same phone."""
    sends: dict[str, list[tuple[dt.datetime, int]]] = defaultdict(list)
    for index, row in enumerate(sent):
        sends[row.recipient].append((_utc(row.sent_at), index))
    for entries in sends.values():
        entries.sort()
    found: dict[int, list[_Dated]] = defaultdict(list)
    for conversation in conversations:
        if conversation.started_at is None:
            continue
        entries = sends.get(visitor_e164(conversation.visitor_phone) or "")
        if not entries:
            continue
        started = _utc(conversation.started_at)
        position = bisect.bisect_right(entries, started, key=lambda entry: entry[0]) - 1
        if position >= 0:
            found[entries[position][1]].append((started, conversation))
    return found


def _match_one(
    row: SentMessage, found: list[_Dated], campaign_id: str, window: dt.timedelta
) -> ConversationMatch:
    expires = _utc(row.attribution_expires_at or row.sent_at + window)
    inside = [item for item in found if item[0] < expires]
    late = [item for item in found if item[0] >= expires]

    def order(item: _Dated) -> tuple[bool, dt.datetime, str]:
        # The expected campaign's conversation first, then the earliest.
        started, c = item
        return (c.campaign_id != campaign_id, started, c.conversation_id or "")

    pick = min(inside, key=order) if inside else min(late, key=order) if late else None
    chosen = pick[1] if pick else None
    replied = bool(inside)
    return ConversationMatch(
        campaign_key=row.campaign_key,
        partition_date=row.partition_date,
        customer_id=row.customer_id,
        recipient=row.recipient,
        message_id=row.message_id,
        replied=replied,
        replied_at=pick[0] if pick else None,
        conversation_id=chosen.conversation_id if chosen else None,
        attached_campaign_id=chosen.campaign_id if chosen else None,
        attached_to_campaign=(chosen.campaign_id == campaign_id) if chosen else None,
        converted=replied and chosen is not None and chosen.converted,
        within_window=replied if chosen else None,
    )


def match_conversations(
    sent_rows: Sequence[SentMessage],
    conversations: Iterable[ConversationRecord],
    campaign_id: str,
    attribution_window: dt.timedelta,
) -> list[ConversationMatch]:
    """One match per sent row, in their order. `campaign_id` is the campaign's iAdvize UUID;
    `attribution_window` stands in for a row's missing attribution_expires_at."""
    found = _attributed(sent_rows, conversations)
    return [
        _match_one(row, found.get(index, []), campaign_id, attribution_window)
        for index, row in enumerate(sent_rows)
    ]


def conversation_counts(matches: Iterable[ConversationMatch]) -> dict[str, int]:
    """The counts the report shows: sent, replied, late replies, replies attached to another
    campaign or to none, conversions."""
    counts = dict.fromkeys(
        ("sent", "replied", "late_replies", "wrong_campaign", "unattached", "converted"), 0
    )
    for match in matches:
        counts["sent"] += 1
        counts["replied"] += match.replied
        counts["late_replies"] += match.within_window is False
        counts["wrong_campaign"] += match.wrong_campaign
        counts["unattached"] += match.replied and match.attached_campaign_id is None
        counts["converted"] += match.converted
    return counts
