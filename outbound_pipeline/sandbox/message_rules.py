"""What the sandbox refuses in a message, as iAdvize and WhatsApp would: an unknown template, a wrong
number of variables, a parameter WhatsApp refuses, a malformed phone or campaign id.

Each refusal is the GraphQL field error the real API answers (WhatsApp's code where it has one); the
message of a refused parameter names the rule, never the value: parameters are customer data.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from outbound_pipeline.config import Template
from outbound_pipeline.sandbox.graphql import api_error
from outbound_pipeline.whatsapp import parameter_violation, params_from_payload, placeholders

_PHONE_DIGITS = re.compile(r"[0-9]{8,15}")  # E.164 without '+': country code included
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


def checked_message(
    templates: Mapping[tuple[str, str], Template], data: Mapping[str, Any]
) -> tuple[Template, list[str], list[str]]:
    """(template, header parameters, body parameters) of a message the API would accept; raises
    the GraphQLError it would answer otherwise."""
    template = _template(templates, data["templateName"], data["language"])
    header, body = _parameters(template, data)
    for field in ("senderId", "recipientId"):
        if not _PHONE_DIGITS.fullmatch(data[field]):
            raise api_error(
                f"{field} must be the phone number's 8 to 15 digits with the country code, no '+'",
                "BAD_USER_INPUT",
            )
    if not _UUID.fullmatch(data["campaignId"]):
        raise api_error("campaignId must be a UUID", "BAD_USER_INPUT")
    return template, header, body


def _template(templates: Mapping[tuple[str, str], Template], name: str, language: str) -> Template:
    template = templates.get((name, language))
    if template is None:
        raise api_error(
            f"(#132001) Template name does not exist in the translation: {name} ({language})",
            "TEMPLATE_NOT_FOUND",
            code=132001,
        )
    return template


def _parameters(template: Template, data: Mapping[str, Any]) -> tuple[list[str], list[str]]:
    """The header and body parameters, as many as the template's placeholders, each one WhatsApp
    accepts."""
    try:
        header = params_from_payload(data.get("headerVariables"))
        body = params_from_payload(data.get("bodyVariables"))
    except ValueError as exc:
        raise api_error(
            f"(#132000) Number of parameters does not match the expected number of params: {exc}",
            "INVALID_TEMPLATE_PARAMETERS",
            code=132000,
        ) from None
    expected_header = len(placeholders(template.header or ""))
    expected_body = len(placeholders(template.body))
    if (len(header), len(body)) != (expected_header, expected_body):
        raise api_error(
            "(#132000) Number of parameters does not match the expected number of params: "
            f"header expects {expected_header}, got {len(header)}; "
            f"body expects {expected_body}, got {len(body)}",
            "INVALID_TEMPLATE_PARAMETERS",
            code=132000,
        )
    body_only = template.header is None
    for component, params in (("header", header), ("body", body)):
        for number, value in enumerate(params, start=1):
            rule = parameter_violation(value, component, body_only)
            if rule is not None:
                # The rule, never the value: parameters are customer data.
                raise api_error(
                    f"(#132018) There was an issue with the parameters in your template: "
                    f"{component} {{{{{number}}}}} {rule}",
                    "INVALID_TEMPLATE_PARAMETERS",
                    code=132018,
                )
    return header, body
