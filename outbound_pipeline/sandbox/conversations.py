"""The sandbox's WhatsApp conversations: the replies it simulates and the query that serves them.

When the sandbox accepts a message it decides, from a seeded generator and configurable shares,
whether the recipient replies, when (some after the attribution window), whether the conversation
converts, and whether iAdvize attaches it to another campaign. Reply times are drawn in "sandbox
minutes" after the message's acceptance; `minute_seconds` says how long one lasts, so a test can
compress hours into seconds. A simulated reply is served at once, stamped with its future time:
a read's period filter decides whether it is seen.

It is served by the `conversations` query of schema.graphql, filtered by channel, campaign and
period, paged with an opaque cursor. `read_faults` makes the next GraphQL reads fail, to test the
client's retries.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import random
import threading
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from graphql import GraphQLError
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from outbound_pipeline.sandbox.faults import HTTP_STATUS

CHANNEL = "WHATSAPP"
QUERY = "conversations"
MAX_PAGE = 100
DEFAULT_PAGE = 50  # schema.graphql's default of `first`
# The campaign a few replies get attached to instead of the one their message named.
OTHER_CAMPAIGN_ID = str(uuid.uuid5(uuid.NAMESPACE_URL, "https://sandbox.invalid/other-campaign"))

# The `conversations` key of POST /_sandbox/config and its sub-keys (state.CONFIG_KEYS lists them).
CONFIG_KEYS: tuple[tuple[str, str, str, str], ...] = (
    (
        "conversations",
        "object or null",
        "the defaults below",
        "how accepted messages get replies, replacing the current settings (keys left out take "
        "their defaults); conversations already simulated stay",
    ),
    ("conversations.reply_share", "number 0..1", "0.3", "share of recipients who reply"),
    (
        "conversations.late_share",
        "number 0..1",
        "0.1",
        "share of replies that come after the attribution window (attached to no campaign)",
    ),
    ("conversations.convert_share", "number 0..1", "0.2", "share of replies that convert"),
    (
        "conversations.other_campaign_share",
        "number 0..1",
        "0.03",
        "share of replies in the window that iAdvize attaches to another campaign",
    ),
    (
        "conversations.attribution_window_minutes",
        "number > 0",
        "4320 (72 h)",
        "the campaigns' attribution period, in sandbox minutes",
    ),
    (
        "conversations.minute_seconds",
        "number > 0",
        "60",
        "real seconds of one sandbox minute (the time scale of reply delays)",
    ),
    ("conversations.seed", "integer or null", "null", "seed of the draws: one seed, one sequence"),
    (
        "conversations.read_faults",
        "list of strings",
        "[]",
        f"HTTP faults ({', '.join(sorted(HTTP_STATUS))}) the next GraphQL reads get, in order",
    ),
)


class ConversationSettings(BaseModel):
    """How accepted messages get replies (see CONFIG_KEYS)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    reply_share: float = Field(default=0.3, ge=0.0, le=1.0)
    late_share: float = Field(default=0.1, ge=0.0, le=1.0)
    convert_share: float = Field(default=0.2, ge=0.0, le=1.0)
    other_campaign_share: float = Field(default=0.03, ge=0.0, le=1.0)
    attribution_window_minutes: float = Field(default=4320.0, gt=0.0)
    minute_seconds: float = Field(default=60.0, gt=0.0)
    seed: int | None = None
    read_faults: list[str] = Field(default_factory=list)

    @field_validator("read_faults")
    @classmethod
    def _http_faults(cls, kinds: list[str]) -> list[str]:
        unknown = sorted(set(kinds) - set(HTTP_STATUS))
        if unknown:
            raise ValueError(f"unknown read faults {unknown}; known: {sorted(HTTP_STATUS)}")
        return kinds


def settings_from(value: Any) -> ConversationSettings:
    """The settings of a /_sandbox/config value (null: the defaults); ValueError says why not."""
    try:
        return ConversationSettings.model_validate(value or {})
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        where = ".".join(str(part) for part in first["loc"])
        raise ValueError(
            f"invalid conversations{'.' + where if where else ''}: {first['msg']}"
        ) from None


@dataclass(frozen=True)
class Conversation:
    conversation_id: str
    message_id: str | None
    visitor_phone: str  # as the mutation received it: digits, no '+'
    campaign_id: str | None
    started_at: dt.datetime
    converted: bool
    channel: str = CHANNEL

    def node(self) -> dict[str, Any]:
        """The GraphQL `Conversation` object."""
        return {
            "id": self.conversation_id,
            "channel": self.channel,
            "visitor": {"phone": self.visitor_phone},
            "campaignId": self.campaign_id,
            "startedAt": self.started_at.isoformat(),
            "converted": self.converted,
        }

    def sort_key(self) -> tuple[dt.datetime, str]:
        return (self.started_at, self.conversation_id)


def _cursor(key: tuple[dt.datetime, str]) -> str:
    return base64.urlsafe_b64encode(json.dumps([key[0].isoformat(), key[1]]).encode()).decode()


def _after(cursor: str) -> tuple[dt.datetime, str]:
    try:
        started, conversation_id = json.loads(base64.urlsafe_b64decode(cursor.encode()))
        return _utc(dt.datetime.fromisoformat(started)), str(conversation_id)
    except (ValueError, TypeError):
        raise _bad_input(f"invalid cursor {cursor[:40]!r}") from None


def _utc(value: dt.datetime) -> dt.datetime:
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


def _bad_input(message: str) -> GraphQLError:
    return GraphQLError(message, extensions={"name": "BAD_USER_INPUT", "retryPolicy": "NO_RETRY"})


def _instant(filters: Mapping[str, Any], key: str) -> dt.datetime | None:
    """A period bound of the filters, in UTC."""
    value = filters.get(key)
    if value is None:
        return None
    try:
        parsed = dt.datetime.fromisoformat(str(value))
    except ValueError:
        raise _bad_input(
            f"filters.{key} is not an ISO-8601 date-time: {str(value)[:40]!r}"
        ) from None
    return _utc(parsed)


class ConversationSimulator:
    """The conversations of one sandbox; safe across threads."""

    def __init__(self, settings: ConversationSettings | None = None) -> None:
        self._lock = threading.Lock()
        self._conversations: list[Conversation] = []
        self.configure(settings or ConversationSettings())

    def configure(self, settings: ConversationSettings) -> None:
        """New shares and time scale; the generator restarts from the seed, the read faults queue
        is replaced; conversations already simulated stay."""
        with self._lock:
            self.settings = settings
            self._random = random.Random(settings.seed)
            self._read_faults = list(settings.read_faults)

    def reset(self) -> None:
        """Forget every conversation; the draws start again from the seed."""
        with self._lock:
            self._conversations.clear()
            self._random = random.Random(self.settings.seed)
            self._read_faults = []

    def take_read_fault(self) -> str | None:
        """The fault of this GraphQL read, if one is queued."""
        with self._lock:
            return self._read_faults.pop(0) if self._read_faults else None

    def add(self, conversation: Conversation) -> None:
        with self._lock:
            self._conversations.append(conversation)

    def message_accepted(
        self, message_id: str, recipient: str, campaign_id: str, accepted_at: dt.datetime
    ) -> None:
        """Decide whether this message gets a reply, and simulate it."""
        s = self.settings
        with self._lock:
            # Five draws a message whatever comes of them: one seed, one sequence.
            replies, late, converts, other, when = (self._random.random() for _ in range(5))
            if replies >= s.reply_share:
                return
            is_late = late < s.late_share
            # Early replies are the most frequent; a late one comes up to a window after expiry.
            fraction = 1.0 + 0.01 + when if is_late else 0.005 + 0.99 * when**3
            delay = dt.timedelta(seconds=fraction * s.attribution_window_minutes * s.minute_seconds)
            attached = (
                None
                if is_late
                else OTHER_CAMPAIGN_ID
                if other < s.other_campaign_share
                else campaign_id
            )
            self._conversations.append(
                Conversation(
                    conversation_id=f"sbx-conv-{len(self._conversations) + 1:07d}",
                    message_id=message_id,
                    visitor_phone=recipient,
                    campaign_id=attached,
                    started_at=_utc(accepted_at) + delay,
                    converted=converts < s.convert_share,
                )
            )

    def records(self) -> list[dict[str, Any]]:
        """Every conversation with the message it answers (GET /_sandbox/conversations)."""
        with self._lock:
            return [{**c.node(), "messageId": c.message_id} for c in self._conversations]

    def search(
        self, filters: Mapping[str, Any], first: int | None, after: str | None
    ) -> dict[str, Any]:
        """The `conversations` query: started in [from, to), on the channel and campaign asked."""
        first = DEFAULT_PAGE if first is None else first
        if not 1 <= first <= MAX_PAGE:
            raise _bad_input(f"first must be between 1 and {MAX_PAGE}, got {first}")
        start, end = _instant(filters, "from"), _instant(filters, "to")
        channel, campaign = filters.get("channel"), filters.get("campaignId")
        after_key = _after(after) if after else None
        with self._lock:
            found = sorted(
                (
                    c
                    for c in self._conversations
                    if (channel is None or c.channel == channel)
                    and (campaign is None or c.campaign_id == campaign)
                    and (start is None or c.started_at >= start)
                    and (end is None or c.started_at < end)
                ),
                key=Conversation.sort_key,
            )
        rest = [c for c in found if after_key is None or c.sort_key() > after_key]
        page = rest[:first]
        return {
            "nodes": [c.node() for c in page],
            "pageInfo": {
                "hasNextPage": len(rest) > len(page),
                "endCursor": _cursor(page[-1].sort_key()) if page else after,
            },
            "totalCount": len(found),
        }
