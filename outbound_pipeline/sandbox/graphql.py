"""The sandbox's GraphQL: the schema, parsing and validation (cached), execution, error shapes.

The pipeline sends one document thousands of times: it is parsed and validated once, and when it
has the pipeline's shape (`fast_plan`) its answer is built without graphql-core's executor, whose
variable coercion is most of a call's cost. Anything else goes through the executor.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from graphql import (
    DocumentNode,
    FieldNode,
    GraphQLError,
    OperationDefinitionNode,
    OperationType,
    VariableNode,
    build_schema,
    execute,
    parse,
    print_ast,
    validate,
)

SCHEMA = build_schema((Path(__file__).parent / "schema.graphql").read_text(encoding="utf-8"))
MUTATION = "whatsAppOutboundMessageSend"
INPUT_ARGUMENT = "whatsAppOutboundMessageSendInput"

_DOCUMENT_CACHE_MAX = (
    1024  # the pipeline sends one query text; a bound keeps stray clients harmless
)
_PAYLOAD_FIELDS = frozenset({"messageText", "messageId", "__typename"})
_REQUIRED_STRINGS = ("senderId", "recipientId", "templateName", "language", "campaignId")
_VARIABLE_LISTS = ("headerVariables", "bodyVariables")

# The mutation's resolver: its input object -> {messageText, messageId}, or a GraphQLError.
Resolver = Callable[[Mapping[str, Any]], dict[str, str]]


def api_error(
    message: str, name: str, retry_policy: str = "NO_RETRY", code: int | None = None
) -> GraphQLError:
    """A field error as iAdvize shapes it: extensions.name, retryPolicy, and WhatsApp's code."""
    extensions: dict[str, Any] = {"name": name, "retryPolicy": retry_policy}
    if code is not None:
        extensions["whatsappCode"] = code
    return GraphQLError(message, extensions=extensions)


def _named(errors: Iterable[GraphQLError], name: str) -> list[dict[str, Any]]:
    """Errors of the document itself (syntax, validation), with a stable extensions.name."""
    out = []
    for error in errors:
        formatted = dict(error.formatted)
        formatted["extensions"] = {"name": name, "retryPolicy": "NO_RETRY"}
        out.append(formatted)
    return out


def _execution_errors(errors: Iterable[GraphQLError]) -> list[dict[str, Any]]:
    """Resolver errors keep their extensions; variable coercion errors get BAD_USER_INPUT and any
    other exception INTERNAL_SERVER_ERROR, so every error has a name like iAdvize's."""
    out = []
    for error in errors:
        formatted = dict(error.formatted)
        if not (error.extensions or {}).get("name"):
            internal = error.original_error is not None and not isinstance(
                error.original_error, GraphQLError
            )
            name = "INTERNAL_SERVER_ERROR" if internal else "BAD_USER_INPUT"
            formatted["extensions"] = {"name": name, "retryPolicy": "NO_RETRY"}
        out.append(formatted)
    return out


@dataclass(frozen=True)
class FastPlan:
    """How to answer a document that is exactly `mutation($v: WhatsAppOutboundMessageSendInput!)
    { whatsAppOutboundMessageSend(whatsAppOutboundMessageSendInput: $v) { <scalar fields> } }`
    without graphql-core's executor, whose variable coercion is most of a call's cost."""

    operation_name: str | None
    variable: str
    response_key: str
    field_node: FieldNode
    fields: tuple[tuple[str, str], ...]  # (response key, field name)


@dataclass(frozen=True)
class Parsed:
    document: DocumentNode | None
    errors: list[dict[str, Any]]  # parse or validation errors, already formatted
    fast: FastPlan | None


def fast_plan(document: DocumentNode) -> FastPlan | None:
    """The plan when the (already validated) document has the pipeline's shape; None otherwise, and
    the call goes through graphql-core's executor."""
    if len(document.definitions) != 1 or not isinstance(
        document.definitions[0], OperationDefinitionNode
    ):
        return None
    operation = document.definitions[0]
    if operation.operation != OperationType.MUTATION or operation.directives:
        return None
    definitions = operation.variable_definitions or ()
    selections = operation.selection_set.selections
    if len(definitions) != 1 or len(selections) != 1 or not isinstance(selections[0], FieldNode):
        return None
    definition, field = definitions[0], selections[0]
    if (
        definition.default_value is not None
        or definition.directives
        or print_ast(definition.type) != "WhatsAppOutboundMessageSendInput!"
        or field.name.value != MUTATION
        or field.directives
        or len(field.arguments) != 1
        or field.arguments[0].name.value != INPUT_ARGUMENT
        or not isinstance(field.arguments[0].value, VariableNode)
        or field.arguments[0].value.name.value != definition.variable.name.value
        or field.selection_set is None
    ):
        return None
    fields = []
    for selection in field.selection_set.selections:
        if (
            not isinstance(selection, FieldNode)
            or selection.name.value not in _PAYLOAD_FIELDS
            or selection.directives
            or selection.arguments
            or selection.selection_set
        ):
            return None
        fields.append(((selection.alias or selection.name).value, selection.name.value))
    return FastPlan(
        operation_name=operation.name.value if operation.name else None,
        variable=definition.variable.name.value,
        response_key=(field.alias or field.name).value,
        field_node=field,
        fields=tuple(fields),
    )


def is_plain_input(value: Any) -> bool:
    """True when graphql-core would coerce `value` to itself: exact types, no extra keys, no
    single-item-to-list or int-to-ID conversion. Anything else takes the executor's path."""
    if type(value) is not dict:
        return False
    for key, item in value.items():
        if key in _REQUIRED_STRINGS:
            if type(item) is not str:
                return False
        elif key in _VARIABLE_LISTS:
            if item is None:
                continue
            if type(item) is not list:
                return False
            for pair in item:
                if (
                    type(pair) is not dict
                    or len(pair) != 2
                    or type(pair.get("key")) is not str
                    or type(pair.get("value")) is not str
                ):
                    return False
        else:
            return False
    return all(key in value for key in _REQUIRED_STRINGS)


class DocumentCache:
    """Parsed and validated documents by query text, safe across threads."""

    def __init__(self) -> None:
        self._documents: dict[str, Parsed] = {}
        self._lock = threading.Lock()

    def parsed(self, query: str) -> Parsed:
        """The parsed and validated document, or its errors; cached by query text because the same
        query arrives thousands of times and validation costs far more than the rest of a call."""
        cached = self._documents.get(query)
        if cached is not None:
            return cached
        try:
            document = parse(query)
        except GraphQLError as exc:
            parsed = Parsed(None, _named([exc], "GRAPHQL_PARSE_FAILED"), None)
        else:
            errors = validate(SCHEMA, document)
            if errors:
                parsed = Parsed(None, _named(errors, "GRAPHQL_VALIDATION_FAILED"), None)
            else:
                parsed = Parsed(document, [], fast_plan(document))
        with self._lock:
            if len(self._documents) >= _DOCUMENT_CACHE_MAX:
                self._documents.clear()
            self._documents[query] = parsed
        return parsed


def _run_fast(plan: FastPlan, resolve: Resolver, data: dict[str, Any]) -> dict[str, Any]:
    """What graphql-core's executor answers for the plan's document, without running it."""
    try:
        payload = resolve(data)
    except GraphQLError as exc:
        located = GraphQLError(
            exc.message,
            nodes=[plan.field_node],
            path=[plan.response_key],
            extensions=exc.extensions,
        )
        return {"data": {plan.response_key: None}, "errors": [located.formatted]}
    values = {**payload, "__typename": "WhatsAppOutboundMessageSendPayload"}
    return {"data": {plan.response_key: {key: values[name] for key, name in plan.fields}}}


def execute_document(
    document: DocumentNode,
    fast: FastPlan | None,
    variables: dict[str, Any] | None,
    operation_name: str | None,
    resolve: Resolver,
    queries: Mapping[str, Callable[..., Any]] | None = None,
) -> dict[str, Any]:
    """The GraphQL answer's body ({data, errors?}) for a valid document, the fast way when the
    document (its `fast` plan) and its variables allow it. `queries` resolve the Query fields
    (`conversations`), each called with (info, **arguments)."""
    if (
        fast is not None
        and operation_name in (None, fast.operation_name)
        and variables is not None
        and is_plain_input(variables.get(fast.variable))
    ):
        return _run_fast(fast, resolve, variables[fast.variable])
    result = execute(
        SCHEMA,
        document,
        root_value={
            MUTATION: lambda _info, **args: resolve(args[INPUT_ARGUMENT]),
            **(queries or {}),
        },
        variable_values=variables,
        operation_name=operation_name,
    )
    body: dict[str, Any] = {"data": result.data}
    if result.errors:
        body["errors"] = _execution_errors(result.errors)
    return body
