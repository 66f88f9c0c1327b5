"""The conversation search query: its text, its variables and the records it reads, under the names
the campaigns file sets (config.ConversationQuerySettings).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from outbound_pipeline.config import ARGUMENTS, ConversationQuerySettings, selection_tree

OPERATION = "OutboundConversations"


def _render(tree: dict[str, Any]) -> str:
    parts = [name if sub is None else f"{name} {_render(sub)}" for name, sub in tree.items()]
    return "{ " + " ".join(parts) + " }"


def query_document(settings: ConversationQuerySettings) -> str:
    """The page query's text; every value is a variable, named after its argument."""
    args = ", ".join(f"{getattr(settings, arg)}: ${getattr(settings, arg)}" for arg, _ in ARGUMENTS)
    return (
        f"query {OPERATION}({settings.variable_declarations()}) {{ "
        f"{settings.query}({args}) {_render(selection_tree(settings))} }}"
    )


def query_variables(
    settings: ConversationQuerySettings,
    campaign_id: str | None,
    start: dt.datetime,
    end: dt.datetime,
    after: str | None,
) -> dict[str, Any]:
    """The variables of one page: WhatsApp, the campaign (all campaigns when None), [start, end)."""
    filters: dict[str, Any] = {
        settings.channel_key: settings.channel_value,
        settings.from_key: start.astimezone(dt.UTC).isoformat(),
        settings.to_key: end.astimezone(dt.UTC).isoformat(),
    }
    if campaign_id is not None:
        filters[settings.campaign_key] = campaign_id
    return {
        settings.filter_argument: filters,
        settings.first_argument: settings.page_size,
        settings.after_argument: after,
    }


def dig(value: Any, path: str) -> Any:
    """The value at a dotted path of nested JSON objects; None where a step is missing or null."""
    for part in path.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


@dataclass(frozen=True)
class ConversationRecord:
    """One conversation as the API gave it: the visitor's phone as written there (maybe without
    '+'), started_at in UTC; fields the API left null are None."""

    conversation_id: str | None
    channel: str | None
    visitor_phone: str | None
    campaign_id: str | None
    started_at: dt.datetime | None
    converted: bool


def parse_timestamp(value: Any) -> dt.datetime | None:
    """An ISO-8601 string (a 'Z' suffix included) or epoch seconds, as an aware UTC datetime."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        seconds = value / 1000 if value > 1e11 else value  # epoch milliseconds
        return dt.datetime.fromtimestamp(seconds, dt.UTC)
    if not isinstance(value, str):
        return None
    try:
        parsed = dt.datetime.fromisoformat(value.strip())
    except ValueError:
        return None
    return parsed.replace(tzinfo=dt.UTC) if parsed.tzinfo is None else parsed.astimezone(dt.UTC)


def _text(value: Any) -> str | None:
    return None if value is None or isinstance(value, dict | list) else str(value)


def read_record(settings: ConversationQuerySettings, node: Any) -> ConversationRecord:
    """A conversation node of a page, by the configured field paths."""
    return ConversationRecord(
        conversation_id=_text(dig(node, settings.id_field)),
        channel=_text(dig(node, settings.channel_field)),
        visitor_phone=_text(dig(node, settings.phone_field)),
        campaign_id=_text(dig(node, settings.campaign_field)),
        started_at=parse_timestamp(dig(node, settings.started_at_field)),
        converted=dig(node, settings.converted_field) is True,
    )
