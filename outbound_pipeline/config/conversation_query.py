"""The names of iAdvize's conversation search query, as the campaigns file sets them (`iadvize:
conversations:`), with the page size and the bounds of one read.

iAdvize's schema has a `Conversation` type, but the query that searches conversations, its
arguments and its fields are not documented publicly. Every name is therefore a setting, with
defaults that match the bundled sandbox; the preflight confirms them against the live schema by
introspection (iadvize.check_conversation_schema). Names are written into the query text, so each
is validated here as a GraphQL name; values only ever travel as GraphQL variables.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

_NAME = r"[_A-Za-z][_0-9A-Za-z]*"
_NAME_RE = re.compile(_NAME)
_PATH_RE = re.compile(rf"{_NAME}(?:\.{_NAME})*")
_TYPE_RE = re.compile(rf"(?:\[\s*)*{_NAME}!?(?:\s*\]!?)*")


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
