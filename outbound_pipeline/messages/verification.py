"""The row-by-row part of the messages' blocking checks, in plain code that a worker process runs
on a chunk (outbound_pipeline.workers): each stored message's parameters counted against its
template and held to WhatsApp's rules again, independently of the rendering that wrote them."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from outbound_pipeline.audience import Findings
from outbound_pipeline.config import Template
from outbound_pipeline.json_text import from_json
from outbound_pipeline.warehouse import Chunk, every_column
from outbound_pipeline.whatsapp import parameter_violation

# The columns of outbound_messages a chunk holds, in this order.
CHECKED_COLUMNS = (
    "row_key",
    "recipient",
    "template_name",
    "language",
    "header_params_json",
    "body_params_json",
)


def parameter_findings(
    templates: Mapping[tuple[str, str], Template],
    chunk: Chunk,
    start: int = 0,
) -> tuple[Findings, Findings]:
    """(messages whose parameter counts differ from their template's, or whose template is not
    the campaign's; messages with a parameter that breaks a rule). `templates`: by (name, language).
    Read column by column; each distinct text is held to the rules once a chunk (first names,
    stores and dates repeat: 3.2 -> 2.0 us a message), and an empty header is not parsed."""
    counts, rules = Findings(), Findings()
    # Each template's (header count, body count, body only), counted once, not on every row.
    expected = {
        key: (t.header_count, t.body_count, t.header is None) for key, t in templates.items()
    }
    judged: dict[tuple[str, str, bool], str | None] = {}
    for row_key, recipient, name, language, header_json, body_json in zip(
        *every_column(chunk, len(CHECKED_COLUMNS)), strict=True
    ):
        # Most templates have no header: its empty list is not parsed on every row.
        header = [] if header_json == "[]" else from_json(header_json or "[]")
        body = from_json(body_json or "[]")
        header_count, body_count, body_only = expected.get((name, language), (-1, -1, True))
        if len(header) != header_count or len(body) != body_count:
            counts.add(
                {"row_key": row_key, "recipient": recipient, "counts": f"{len(header)}+{len(body)}"}
            )
        # A loop for each component, not one over both: a tenth of the check's cost.
        broken = [
            f"header {{{{{i}}}}}: {rule}"
            for i, value in enumerate(header, start=1)
            if (rule := _violation(judged, value, "header", body_only)) is not None
        ]
        for i, value in enumerate(body, start=1):
            if (rule := _violation(judged, value, "body", body_only)) is not None:
                broken.append(f"body {{{{{i}}}}}: {rule}")
        if broken:
            rules.add({"row_key": row_key, "recipient": recipient, "rules": "; ".join(broken)})
    return counts, rules


def _violation(
    judged: dict[tuple[str, str, bool], str | None], value: Any, component: str, body_only: bool
) -> str | None:
    """parameter_violation, remembered in `judged` for a text (a value of another type, which
    only a damaged row holds, is judged each time)."""
    if type(value) is not str:
        return parameter_violation(value, component, body_only)
    key = (value, component, body_only)
    try:
        return judged[key]
    except KeyError:
        rule = judged[key] = parameter_violation(value, component, body_only)
        return rule
