"""A message's parameters: each template variable's value from its audience row (a column, a
literal, the recipient's unsubscribe link), formatted as its source says, held to WhatsApp's
parameter rules, cleaned or the row skipped (the campaign's `parameter_policy`), and the preview
the recipient reads. `render_row` for one row; the messages stage (`rendering`) works out each
arm's parameters once (`parameter_slots`) and renders its rows with `render_parameters`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from outbound_pipeline.config import Campaign, Template, Variables, VariableSource
from outbound_pipeline.outcomes import Reason, with_detail
from outbound_pipeline.whatsapp import (
    clean_parameter,
    format_value,
    is_blank,
    parameter_violation,
    preview_text,
)

# WhatsApp's rules held to a short text once in a while, not on every row: a day's first names,
# stores and dates repeat. Bounded (at most 65,536 texts of 64 characters or fewer: a few tens of
# MB held at worst); a day of unique values costs a lookup a value more.
_CACHED_TEXT_MAX = 64
_short_violation = functools.lru_cache(maxsize=65536)(parameter_violation)
# (recipient in E.164, "link" or "token") -> the recipient's signed unsubscribe link or token.
LinkMaker = Callable[[str, str], str]


class UnsubscribeLinksUnavailable(RuntimeError):
    """A variable is the unsubscribe link and no signing secret or base URL was given."""


class RenderSkip(Exception):
    """This row cannot be rendered; the message is the reason recorded (`code: detail`)."""

    def __init__(self, reason: Reason, detail: str) -> None:
        # Stored as `empty_value: body {{1}} (first_name) is empty`: a space after the colon.
        super().__init__(with_detail(reason, f" {detail}"))
        self.reason = reason


def _label(component: str, number: int, source: VariableSource) -> str:
    return f"{component} {{{{{number}}}}}" + (f" ({source.column})" if source.column else "")


@dataclass(frozen=True)
class Slot:
    """One template parameter as rendering reads it: its component ("header" or "body", and
    whether that is the header, told once), its number and where its value comes from."""

    component: str
    number: int
    source: VariableSource
    in_header: bool


def parameter_slots(variables: Variables) -> tuple[Slot, ...]:
    """The parameters of `variables` in the order they are sent: the header's, then the body's,
    each by number (worked out once an arm, not once a row)."""
    return tuple(
        Slot(component, number, mapping[number], component == "header")
        for component, mapping in (("header", variables.header), ("body", variables.body))
        for number in sorted(mapping)
    )


def render_row(
    campaign: Campaign,
    template: Template,
    fields: Mapping[str, Any],
    *,
    variables: Variables | None = None,
    recipient: str | None = None,
    links: LinkMaker | None = None,
) -> tuple[list[str], list[str], str, int]:
    """(header params, body params, preview, values cleaned); raises RenderSkip.

    Exact for valid input: a value within WhatsApp's rules is sent as the audience query returned it
    (or as formatted), and the preview is the template with exactly those values substituted.
    `variables`: a variant's (default: the campaign's); `links` makes the recipient's unsubscribe
    link or token for a variable whose source is `unsubscribe`.
    """
    slots = parameter_slots(variables or campaign.variables)
    return render_parameters(campaign, template, slots, fields, recipient, links)


def render_parameters(
    campaign: Campaign,
    template: Template,
    slots: Sequence[Slot],
    fields: Mapping[str, Any],
    recipient: str | None,
    links: LinkMaker | None,
) -> tuple[list[str], list[str], str, int]:
    """render_row with the arm's parameters worked out (`parameter_slots`)."""
    cleaned = 0
    header: list[str] = []
    body: list[str] = []
    for slot in slots:
        source = slot.source
        if source.column is not None:
            raw = fields.get(source.column)
        else:
            raw = _raw_value(source, recipient, links)
        value, was_cleaned = _parameter(campaign, template, slot, raw)
        cleaned += was_cleaned
        (header if slot.in_header else body).append(value)
    return header, body, preview_text(template.header, template.body, header, body), cleaned


def _raw_value(source: VariableSource, recipient: str | None, links: LinkMaker | None) -> Any:
    """The value of a parameter that is not an audience column's: a literal, or the recipient's
    unsubscribe link or token."""
    if source.unsubscribe is not None:
        if links is None or recipient is None:
            raise UnsubscribeLinksUnavailable(
                "a template variable is the unsubscribe link, and no signing secret was given "
                "(set OUTBOUND_UNSUBSCRIBE_SECRET and OUTBOUND_UNSUBSCRIBE_BASE_URL)"
            )
        return links(recipient, source.unsubscribe)
    return source.literal


def _parameter(campaign: Campaign, template: Template, slot: Slot, raw: Any) -> tuple[str, bool]:
    """One parameter's text and whether it was cleaned; raises RenderSkip."""
    source, component = slot.source, slot.component
    body_only = template.header is None
    if type(raw) is str and raw[:1].isalnum() and source.format is None:
        # Most values: text sent as it is, that begins with a letter or a digit (never blank).
        value = raw
    else:
        value = _formatted(template, component, slot.number, source, raw)
    rule = _violation(source, value, component, body_only)
    if rule is None:
        return value, False
    label = _label(component, slot.number, source)
    # Cutting a formatted date or amount would send a wrong one: those always skip.
    if campaign.parameter_policy == "skip" or source.format is not None:
        raise RenderSkip(Reason.PARAMETER_RULE, f"{label} {rule}")
    value = clean_parameter(value, component, body_only)
    if parameter_violation(value, component, body_only) is not None:
        raise RenderSkip(Reason.PARAMETER_RULE, f"{label} {rule} (cannot be cleaned)")
    return value, True


def _violation(source: VariableSource, value: str, component: str, body_only: bool) -> str | None:
    """parameter_violation, through the cache for a short text of the brand's (never for an
    unsubscribe link or token: each recipient's own, and it carries the phone number)."""
    if len(value) > _CACHED_TEXT_MAX or source.unsubscribe is not None:
        return parameter_violation(value, component, body_only)
    return _short_violation(value, component, body_only)


def _formatted(
    template: Template, component: str, number: int, source: VariableSource, raw: Any
) -> str:
    """A parameter's value as text, formatted as its source says; raises RenderSkip."""
    # Null, whitespace-only or invisible-only (zero-width, RTL marks) values skip the row
    # whatever the policy: cleaning cannot invent a first name.
    if raw is None or is_blank(str(raw)):
        raise RenderSkip(Reason.EMPTY_VALUE, f"{_label(component, number, source)} is empty")
    try:
        return format_value(raw, source, template.language)
    except (ValueError, ArithmeticError, TypeError):
        label = _label(component, number, source)
        raise RenderSkip(Reason.UNFORMATTABLE_VALUE, f"{label} is not a {source.format}") from None
