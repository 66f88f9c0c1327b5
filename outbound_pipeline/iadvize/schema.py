"""What the client learns of the API's GraphQL schema: the mutation's argument and input type.

The input type's name is not documented, so it is read once per process and endpoint by
introspection, unless the iadvize resource names it (`input_type_name`, IADVIZE_INPUT_TYPE).
"""

from __future__ import annotations

from typing import Any

import httpx

from outbound_pipeline.iadvize.errors import IAdvizeError, failed_on_its_side

MUTATION_FIELD = "whatsAppOutboundMessageSend"
# The argument's name when the resource names the input type (no introspection to read it from).
DEFAULT_ARGUMENT = "whatsAppOutboundMessageSendInput"

INTROSPECTION_OPERATION = "MutationArgument"
INTROSPECTION = """
query MutationArgument {
  __type(name: "Mutation") {
    fields { name args { name type { kind name ofType { kind name } } } }
  }
}
"""

# How to do without introspection, quoted by every error that introspection could not answer.
SKIP_INTROSPECTION = (
    "set IADVIZE_INPUT_TYPE (the iadvize resource's input_type_name) to the mutation's input type "
    "name to skip introspection"
)

# graphql URL -> (argument name, input type name), for every client of the process.
_INPUT_TYPES: dict[str, tuple[str, str]] = {}


def known_input_type(graphql_url: str) -> tuple[str, str] | None:
    """(argument, input type) already learnt for this endpoint, or None."""
    return _INPUT_TYPES.get(graphql_url)


def remember_input_type(graphql_url: str, found: tuple[str, str]) -> None:
    """Keep (argument, input type) for every later client of this endpoint in the process."""
    _INPUT_TYPES[graphql_url] = found


def forget_input_types() -> None:
    _INPUT_TYPES.clear()


def mutation_document(argument: str, type_name: str) -> str:
    """The mutation's text, declared with the input type the API itself names."""
    return (
        f"mutation SendWhatsAppTemplate($input: {type_name}!) {{ "
        f"{MUTATION_FIELD}({argument}: $input) {{ messageText messageId }} }}"
    )


def mutation_argument(body: Any) -> tuple[str, str] | None:
    """(argument name, input type name) of the mutation in an introspection answer, or None.

    Raises TypeError/KeyError/AttributeError on a body of the wrong shape.
    """
    if not isinstance(body, dict):
        raise TypeError("not a JSON object")
    fields = (((body.get("data") or {}).get("__type") or {}).get("fields")) or []
    for item in fields:
        if item["name"] == MUTATION_FIELD and item["args"]:
            arg = item["args"][0]
            type_ = arg["type"]
            name = type_.get("name") or (type_.get("ofType") or {}).get("name")
            if name:
                return str(arg["name"]), str(name)
    return None


def read_introspection(response: httpx.Response) -> tuple[str, str]:
    """(argument, input type) from the answer to INTROSPECTION, or the IAdvizeError that says why
    not and how to do without it."""
    status = response.status_code
    if failed_on_its_side(status):
        raise IAdvizeError(
            f"introspection of {MUTATION_FIELD} answered HTTP {status}", transient=True
        )
    if status != 200:
        raise IAdvizeError(
            f"introspection of {MUTATION_FIELD} answered HTTP {status}; if introspection is "
            f"disabled, {SKIP_INTROSPECTION}"
        )
    try:
        found = mutation_argument(response.json())
    except (ValueError, TypeError, KeyError, AttributeError, IndexError):
        raise IAdvizeError(
            f"introspection of {MUTATION_FIELD} answered HTTP 200 with a body that is not a "
            f"GraphQL schema; {SKIP_INTROSPECTION}"
        ) from None
    if found is None:
        # A server with introspection turned off may answer 200 with an empty schema.
        raise IAdvizeError(
            f"the API schema has no {MUTATION_FIELD} mutation with an input argument; if "
            f"introspection is disabled, {SKIP_INTROSPECTION}"
        )
    return found
