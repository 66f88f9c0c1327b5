"""What the pipeline reads of iAdvize's WhatsApp conversations, and under which names.

iAdvize's schema has a `Conversation` type, but the query that searches conversations, its
arguments and its fields are not documented publicly. Every name is therefore a setting here, with
defaults that match the bundled sandbox; `check_conversation_schema` (conversation_schema.py)
confirms them against the live schema by introspection. Names are written into the query text, so
each is validated as a GraphQL name; values only ever travel as GraphQL variables.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

_NAME = r"[_A-Za-z][_0-9A-Za-z]*"
_NAME_RE = re.compile(_NAME)
_PATH_RE = re.compile(rf"{_NAME}(?:\.{_NAME})*")
_TYPE_RE = re.compile(rf"(?:\[\s*)*{_NAME}!?(?:\s*\]!?)*")

OPERATION = "OutboundConversations"


def _name(value: str) -> str:
    if not _NAME_RE.fullmatch(value):
        raise ValueError(
            f"{value!r} is not a GraphQL name (letters, digits, '_'; not a digit first)"
        )
    return value


def _path(value: str) -> str:
    if not _PATH_RE.fullmatch(value):
        raise ValueError(
            f"{value!r} is not a field path: GraphQL names joined by dots, e.g. 'visitor.phone'"
        )
    return value


def _type_ref(value: str) -> str:
    if not _TYPE_RE.fullmatch(value) or value.count("[") != value.count("]"):
        raise ValueError(f"{value!r} is not a GraphQL type, e.g. 'ConversationFilter!' or 'Int'")
    return value


GraphQLName = Annotated[str, AfterValidator(_name)]
FieldPath = Annotated[str, AfterValidator(_path)]
TypeRef = Annotated[str, AfterValidator(_type_ref)]

# The settings that name a field of one conversation, and what the pipeline reads from each.
NODE_FIELDS: tuple[str, ...] = (
    "id_field",
    "channel_field",
    "phone_field",
    "campaign_field",
    "started_at_field",
    "converted_field",
)
ARGUMENTS: tuple[tuple[str, str], ...] = (
    ("filter_argument", "filter_type"),
    ("first_argument", "first_type"),
    ("after_argument", "after_type"),
)
FILTER_KEYS: tuple[str, ...] = ("channel_key", "campaign_key", "from_key", "to_key")


class ConversationQuerySettings(BaseModel):
    """The conversation search query's names (defaults: the bundled sandbox's), its page size and
    the bounds of one read. Discover the live API's names by introspection (docs/conversations.md)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    query: GraphQLName = Field("conversations", description="Query field that searches them.")
    filter_argument: GraphQLName = Field("filters", description="Argument holding the filters.")
    filter_type: TypeRef = Field("ConversationFilter!", description="The filter argument's type.")
    channel_key: GraphQLName = Field("channel", description="Filter key of the channel.")
    channel_value: str = Field("WHATSAPP", min_length=1, description="The WhatsApp channel.")
    campaign_key: GraphQLName = Field("campaignId", description="Filter key of the campaign.")
    from_key: GraphQLName = Field("from", description="Filter key of the period's start.")
    to_key: GraphQLName = Field("to", description="Filter key of the period's end (excluded).")
    first_argument: GraphQLName = Field("first", description="Argument of the page size.")
    first_type: TypeRef = "Int"
    after_argument: GraphQLName = Field("after", description="Argument of the page cursor.")
    after_type: TypeRef = "String"
    nodes_path: FieldPath = Field("nodes", description="Path to the page's conversations.")
    has_next_page_path: FieldPath = "pageInfo.hasNextPage"
    end_cursor_path: FieldPath = "pageInfo.endCursor"
    id_field: FieldPath = "id"
    channel_field: FieldPath = "channel"
    phone_field: FieldPath = Field("visitor.phone", description="The visitor's phone number.")
    campaign_field: FieldPath = Field("campaignId", description="Campaign it is attached to.")
    started_at_field: FieldPath = "startedAt"
    converted_field: FieldPath = Field("converted", description="iAdvize's conversion flag.")
    page_size: int = Field(100, ge=1, le=1000)
    max_pages: int = Field(1000, ge=1, description="More pages than this fail the read.")
    timeout_seconds: float = Field(30.0, gt=0, description="One request's bound.")
    max_attempts: int = Field(4, ge=1, le=10, description="Tries of one request.")
    backoff_seconds: float = Field(0.5, ge=0, description="First wait before a retry.")
    max_backoff_seconds: float = Field(30.0, ge=0, description="Longest wait before a retry.")
    deadline_seconds: float = Field(600.0, gt=0, description="Bound of a whole read.")

    @model_validator(mode="after")
    def _distinct(self) -> ConversationQuerySettings:
        for group in (FILTER_KEYS, tuple(arg for arg, _ in ARGUMENTS)):
            names = [getattr(self, key) for key in group]
            if len(set(names)) != len(names):
                raise ValueError(f"{', '.join(group)} must name different keys, got {names}")
        selection_tree(self)  # raises when a path is both a leaf and a parent
        return self

    def variable_declarations(self) -> str:
        return ", ".join(
            f"${getattr(self, arg)}: {getattr(self, type_)}" for arg, type_ in ARGUMENTS
        )


def _insert(tree: dict[str, Any], path: str) -> None:
    *parents, leaf = path.split(".")
    node = tree
    for part in parents:
        child = node.setdefault(part, {})
        if child is None:
            raise ValueError(f"'{part}' is both a field read and a parent in '{path}'")
        node = child
    if node.get(leaf):
        raise ValueError(f"'{path}' is a parent of another configured path, not a field to read")
    node[leaf] = None


def selection_tree(settings: ConversationQuerySettings) -> dict[str, Any]:
    """The connection's selection as nested dicts (None for a field read), from the paths."""
    tree: dict[str, Any] = {}
    for path in (settings.has_next_page_path, settings.end_cursor_path):
        _insert(tree, path)
    for key in NODE_FIELDS:
        _insert(tree, f"{settings.nodes_path}.{getattr(settings, key)}")
    return tree


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
