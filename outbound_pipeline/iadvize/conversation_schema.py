"""Check the conversation query's configured names against the live schema, by introspection.

The launch checklist calls `check_conversation_schema` before any run reads conversations: each
configured name missing from the API's schema gives one problem that names it, the setting that
holds it and what the schema has instead. Introspection is a read: retried on transient failures,
and a failure to read the schema is reported as a problem too, never raised, never a halt.
"""

from __future__ import annotations

from typing import Any

from outbound_pipeline.config import (
    ARGUMENTS,
    FILTER_KEYS,
    NODE_FIELDS,
    ConversationQuerySettings,
)
from outbound_pipeline.iadvize.conversations import read_policy
from outbound_pipeline.iadvize.errors import IAdvizeError
from outbound_pipeline.iadvize.graphql_reads import GraphQLClient, ReadPolicy, read_graphql

_REF = (
    "kind name ofType { kind name ofType { kind name ofType { kind name ofType { kind name } } } }"
)
QUERY_FIELDS = (
    "query ConversationQueryFields { __schema { queryType { name fields { name "
    f"args {{ name defaultValue type {{ {_REF} }} }} type {{ {_REF} }} }} }} }} }}"
)
TYPE_FIELDS = (
    "query ConversationTypeFields($name: String!) { __type(name: $name) { name kind "
    f"fields {{ name type {{ {_REF} }} }} inputFields {{ name type {{ {_REF} }} }} }} }}"
)
_LEAF_KINDS = ("SCALAR", "ENUM")
_LISTED = 30  # names quoted in a problem; a big schema must not flood the preflight's page


def type_string(ref: dict[str, Any] | None) -> str:
    """'[Conversation!]!' from an introspected type reference."""
    if not ref:
        return "?"
    if ref.get("kind") == "NON_NULL":
        return type_string(ref.get("ofType")) + "!"
    if ref.get("kind") == "LIST":
        return "[" + type_string(ref.get("ofType")) + "]"
    return str(ref.get("name"))


def named_type(ref: dict[str, Any] | None) -> tuple[str | None, str | None]:
    """(kind, name) of the named type inside lists and non-nulls."""
    while ref and ref.get("kind") in ("NON_NULL", "LIST"):
        ref = ref.get("ofType")
    return (ref.get("kind"), ref.get("name")) if ref else (None, None)


def accepts(schema_type: str, configured: str) -> bool:
    """True when a variable declared `configured` may be passed where the schema wants
    `schema_type`: the same type, and non-null where the schema requires it."""
    configured = configured.replace(" ", "")
    return (
        configured == schema_type
        or configured.rstrip("!") == schema_type.rstrip("!")
        and (configured.endswith("!") or not schema_type.endswith("!"))
    )


def _names(items: list[str], prefer: str = "") -> str:
    """The schema's names, those containing `prefer` first, at most _LISTED of them."""
    ordered = sorted(items, key=lambda n: (prefer.lower() not in n.lower(), n))
    more = f", ... ({len(ordered) - _LISTED} more)" if len(ordered) > _LISTED else ""
    return (", ".join(ordered[:_LISTED]) or "nothing") + more


class _Schema:
    """The types read so far, each introspected once."""

    def __init__(self, client: GraphQLClient, policy: ReadPolicy, where: str) -> None:
        self.client, self.policy, self.where = client, policy, where
        self.types: dict[str, dict[str, Any] | None] = {}

    async def query_fields(self) -> dict[str, dict[str, Any]]:
        data = await read_graphql(
            self.client,
            {"query": QUERY_FIELDS, "operationName": "ConversationQueryFields"},
            f"introspection of the query type at {self.client.graphql_url}",
            self.policy,
        )
        query_type = (data.get("__schema") or {}).get("queryType") or {}
        return {f["name"]: f for f in query_type.get("fields") or []}

    async def type(self, name: str) -> dict[str, Any] | None:
        if name not in self.types:
            data = await read_graphql(
                self.client,
                {
                    "query": TYPE_FIELDS,
                    "variables": {"name": name},
                    "operationName": "ConversationTypeFields",
                },
                f"introspection of type {name} at {self.client.graphql_url}",
                self.policy,
            )
            self.types[name] = data.get("__type")
        return self.types[name]

    async def walk(self, type_name: str | None, path: str, setting: str) -> tuple[Any, str | None]:
        """The field reference at the end of `path` from `type_name`, or (None, the problem)."""
        where, walked, ref = f"{self.where}: {setting}", [], None
        for part in path.split("."):
            if ref is not None:
                kind, type_name = named_type(ref)
                if kind not in ("OBJECT", "INTERFACE"):
                    return None, (
                        f"'{'.'.join(walked)}' is {kind} {type_name}, which has no field "
                        f"'{part}' (path '{path}', {where})"
                    )
            described = await self.type(str(type_name))
            fields = {f["name"]: f for f in (described or {}).get("fields") or []}
            if part not in fields:
                return None, (
                    f"field '{part}' of path '{path}' ({where}) is not in type {type_name}; it "
                    f"has: {_names(list(fields))}"
                )
            walked.append(part)
            ref = fields[part]["type"]
        return ref, None

    async def leaf(self, type_name: str | None, path: str, setting: str) -> str | None:
        """The problem when `path` does not end on a scalar or an enum."""
        ref, problem = await self.walk(type_name, path, setting)
        if problem is not None:
            return problem
        kind, name = named_type(ref)
        if kind in _LEAF_KINDS:
            return None
        sub = [f["name"] for f in ((await self.type(str(name))) or {}).get("fields") or []]
        return (
            f"'{path}' ({self.where}: {setting}) ends on {kind} {name}, not on a value; name one "
            f"of its fields: {_names(sub)}"
        )


def _argument_problems(
    settings: ConversationQuerySettings, field: dict[str, Any], where: str
) -> list[str]:
    args = {a["name"]: a for a in field.get("args") or []}
    problems = []
    for arg_setting, type_setting in ARGUMENTS:
        name, configured = getattr(settings, arg_setting), getattr(settings, type_setting)
        if name not in args:
            problems.append(
                f"argument '{name}' ({where}: {arg_setting}) is not an argument of query "
                f"'{settings.query}'; it has: {_names(list(args))}"
            )
        elif not accepts(type_string(args[name]["type"]), configured):
            problems.append(
                f"argument '{name}' of query '{settings.query}' has type "
                f"'{type_string(args[name]['type'])}' in the schema, not '{configured}' "
                f"({where}: {type_setting})"
            )
    given = {getattr(settings, arg) for arg, _ in ARGUMENTS}
    for name, arg in args.items():
        if (
            name not in given
            and arg["type"].get("kind") == "NON_NULL"
            and arg.get("defaultValue") is None
        ):
            problems.append(
                f"query '{settings.query}' requires argument '{name}', which no setting gives"
            )
    return problems


async def _filter_problems(
    schema: _Schema, settings: ConversationQuerySettings, field: dict[str, Any]
) -> list[str]:
    arg = next((a for a in field.get("args") or [] if a["name"] == settings.filter_argument), None)
    if arg is None:
        return []  # already reported
    _, type_name = named_type(arg["type"])
    described = await schema.type(str(type_name))
    keys = [f["name"] for f in (described or {}).get("inputFields") or []]
    return [
        f"filter key '{getattr(settings, key)}' ({schema.where}: {key}) is not a field of input "
        f"{type_name}; it has: {_names(keys)}"
        for key in FILTER_KEYS
        if getattr(settings, key) not in keys
    ]


async def _selection_problems(
    schema: _Schema, settings: ConversationQuerySettings, field: dict[str, Any]
) -> list[str]:
    _, connection = named_type(field.get("type"))
    problems = []
    for setting in ("has_next_page_path", "end_cursor_path"):
        problem = await schema.leaf(connection, getattr(settings, setting), setting)
        problems += [problem] if problem else []
    ref, problem = await schema.walk(connection, settings.nodes_path, "nodes_path")
    if problem is not None:
        return [*problems, problem]
    kind, node_type = named_type(ref)
    if kind not in ("OBJECT", "INTERFACE"):
        return [
            *problems,
            f"'{settings.nodes_path}' ({schema.where}: nodes_path) is {kind} {node_type}, not the conversations",
        ]
    for setting in NODE_FIELDS:
        problem = await schema.leaf(node_type, getattr(settings, setting), setting)
        problems += [problem] if problem else []
    return problems


async def check_conversation_schema(
    client: GraphQLClient,
    settings: ConversationQuerySettings,
    where: str = "conversation settings",
) -> list[str]:
    """Every configured name of the conversation query that the live schema lacks, one clear
    problem each (`where` says where the settings are configured); [] when all are there."""
    schema = _Schema(client, read_policy(settings), where)
    try:
        fields = await schema.query_fields()
        field = fields.get(settings.query)
        if field is None:
            return [
                f"query '{settings.query}' ({where}: query) is not in the schema; it has: "
                f"{_names(list(fields), 'conversation')}"
            ]
        problems = _argument_problems(settings, field, where)
        problems += await _filter_problems(schema, settings, field)
        return problems + await _selection_problems(schema, settings, field)
    except IAdvizeError as exc:
        return [f"could not read the API's schema to check the conversation query: {exc}"]
