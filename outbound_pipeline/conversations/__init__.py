"""After the send: a campaign day's WhatsApp conversations read back from iAdvize, matched to the
messages sent, and written per recipient to the warehouse's `outbound_conversations` (replied,
conversation, attached to the expected campaign or not, converted). The API side (query, read,
introspection, matching rules) is in outbound_pipeline.iadvize; docs/conversations.md explains it."""

from __future__ import annotations

from outbound_pipeline.conversations.collect import (
    ConversationDay,
    collect_conversations,
    days_to_refresh,
    later_messages,
    read_period,
    sent_messages,
    table_rows,
    window_closed,
    write_conversations,
)

__all__ = [
    "ConversationDay",
    "collect_conversations",
    "days_to_refresh",
    "later_messages",
    "read_period",
    "sent_messages",
    "table_rows",
    "window_closed",
    "write_conversations",
]
