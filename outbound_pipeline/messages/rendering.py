"""Messages: each eligible audience row rendered into the template's parameters and preview.

A value that breaks WhatsApp's parameter rules is cleaned or skips the row (the campaign's
`parameter_policy`); an empty value always skips it. The reason names the variable, column and rule.
"""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import sqlalchemy as sa

from outbound_pipeline.config import (
    Arm,
    Campaign,
    OutboundConfig,
    Template,
    Variables,
    VariableSource,
)
from outbound_pipeline.json_text import from_json, to_json
from outbound_pipeline.outcomes import Reason, code_of, with_detail
from outbound_pipeline.warehouse import (
    Chunk,
    StageWrites,
    audience,
    every_column,
    messages,
    query_chunks,
    refresh_statistics,
    replace_partition,
)
from outbound_pipeline.whatsapp import (
    clean_parameter,
    format_value,
    is_blank,
    parameter_violation,
    preview_text,
)
from outbound_pipeline.workers import PARALLEL_FROM_ROWS, in_order

CHUNK_ROWS = 5000
# The columns of outbound_messages a chunk's rows hold, in this order (_message_columns). Every
# column of the table (a test compares them).
ROW_COLUMNS = (
    "campaign_key",
    "partition_date",
    "row_key",
    "customer_id",
    "recipient",
    "template_name",
    "language",
    "category",
    "variant",
    "header_params_json",
    "body_params_json",
    "preview_text",
    "rendered",
    "reason",
    "run_id",
)
# The audience columns rendering reads of each eligible row, in the order _message_columns takes
# them.
AUDIENCE_COLUMNS_READ = ("row_key", "customer_id", "recipient", "fields_json", "variant")
T = TypeVar("T")
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


@dataclass
class MessagesSummary:
    rows: int = 0
    rendered: int = 0
    cleaned: int = 0
    reasons: Counter[str] = field(default_factory=Counter)
    sample_preview: str | None = None

    def merge(self, other: MessagesSummary) -> None:
        self.rows += other.rows
        self.rendered += other.rendered
        self.cleaned += other.cleaned
        self.reasons.update(other.reasons)
        self.sample_preview = self.sample_preview or other.sample_preview


def _label(component: str, number: int, source: VariableSource) -> str:
    return f"{component} {{{{{number}}}}}" + (f" ({source.column})" if source.column else "")


@dataclass(frozen=True)
class _Slot:
    """One template parameter as rendering reads it: its component ("header" or "body", and
    whether that is the header, told once), its number and where its value comes from."""

    component: str
    number: int
    source: VariableSource
    in_header: bool


def _slots(variables: Variables) -> tuple[_Slot, ...]:
    """The parameters of `variables` in the order they are sent: the header's, then the body's,
    each by number (worked out once an arm, not once a row)."""
    return tuple(
        _Slot(component, number, mapping[number], component == "header")
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
    slots = _slots(variables or campaign.variables)
    return _rendered(campaign, template, slots, fields, recipient, links)


def _rendered(
    campaign: Campaign,
    template: Template,
    slots: Sequence[_Slot],
    fields: Mapping[str, Any],
    recipient: str | None,
    links: LinkMaker | None,
) -> tuple[list[str], list[str], str, int]:
    """render_row with the arm's parameters worked out (`_slots`)."""
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


def _parameter(campaign: Campaign, template: Template, slot: _Slot, raw: Any) -> tuple[str, bool]:
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


def _message_columns(
    campaign: Campaign,
    arms: Mapping[str | None, tuple[Arm, Template]],
    partition_date: str,
    run_id: str,
    chunk: Chunk,
    summary: MessagesSummary,
    links: LinkMaker | None,
) -> list[Sequence[Any]]:
    """The rows of outbound_messages for a chunk of audience rows (AUDIENCE_COLUMNS_READ), column
    by column in the order of ROW_COLUMNS: no list made for each row."""
    row_keys, customer_ids, recipients, fields, variants = every_column(
        chunk, len(AUDIENCE_COLUMNS_READ)
    )
    arm_of: list[Arm] = []
    template_of: list[Template] = []
    headers: list[str | None] = []
    bodies: list[str | None] = []
    previews: list[str | None] = []
    reasons: list[str | None] = []
    slots = {variant: _slots(arm.variables) for variant, (arm, _) in arms.items()}
    for recipient, fields_json, variant in zip(recipients, fields, variants, strict=True):
        chosen = variant if variant in arms else None
        arm, template = arms[chosen]
        arm_of.append(arm)
        template_of.append(template)
        try:
            header, body, preview, cleaned = _rendered(
                campaign,
                template,
                slots[chosen],
                from_json(fields_json or "{}"),
                recipient,
                links,
            )
        except RenderSkip as skip:
            summary.reasons[skip.reason.value] += 1
            headers.append(None)
            bodies.append(None)
            previews.append(None)
            reasons.append(str(skip)[:300])
            continue
        summary.rendered += 1
        summary.cleaned += cleaned
        if summary.sample_preview is None:
            summary.sample_preview = _without_links(preview, recipient, links)
        headers.append(to_json(header) if header else "[]")  # most templates have none
        bodies.append(to_json(body))
        previews.append(preview)
        reasons.append(None)
    size = len(row_keys)
    summary.rows += size
    rows = {
        "campaign_key": [campaign.key] * size,
        "partition_date": [partition_date] * size,
        "row_key": row_keys,
        "customer_id": customer_ids,
        "recipient": recipients,
        "template_name": [t.name for t in template_of],
        "language": [t.language for t in template_of],
        "category": [t.category for t in template_of],
        "variant": [arm.variant for arm in arm_of],
        "header_params_json": headers,
        "body_params_json": bodies,
        "preview_text": previews,
        "rendered": [reason is None for reason in reasons],
        "reason": reasons,
        "run_id": [run_id] * size,
    }
    return [rows[name] for name in ROW_COLUMNS]


def _render_chunk(
    campaign: Campaign,
    arms: Mapping[str | None, tuple[Arm, Template]],
    partition_date: str,
    run_id: str,
    links: LinkMaker | None,
    pack: Callable[[list[Sequence[Any]]], T],
    chunk: Chunk,
    start: int,
) -> tuple[T, MessagesSummary]:
    """One chunk's messages (ROW_COLUMNS), packed for the warehouse's loader
    (StageWrites.pack_columns), and their counts (in a worker process for a large day)."""
    summary = MessagesSummary()
    columns = _message_columns(campaign, arms, partition_date, run_id, chunk, summary, links)
    return pack(columns), summary


def _without_links(preview: str, recipient: str | None, links: LinkMaker | None) -> str:
    """The preview shown in the UI: an unsubscribe link or token encodes the phone number."""
    if links is None or recipient is None:
        return preview
    for kind in ("link", "token"):
        preview = preview.replace(links(recipient, kind), f"<unsubscribe {kind}>")
    return preview


def campaign_arms(
    campaign: Campaign, config: OutboundConfig
) -> dict[str | None, tuple[Arm, Template]]:
    """Each variant (None: the campaign's own template) with its template."""
    return {arm.variant: (arm, config.template_for(arm)) for arm in campaign.arms()}  # type: ignore[arg-type]


def render(
    engine: sa.Engine,
    campaign: Campaign,
    config: OutboundConfig,
    partition_date: str,
    run_id: str,
    progress: Callable[[int], None] | None = None,
    chunk_rows: int = CHUNK_ROWS,
    links: LinkMaker | None = None,
    parallel_from: int = PARALLEL_FROM_ROWS,
) -> MessagesSummary:
    """Render every eligible audience row of the day into `outbound_messages` (delete-then-insert),
    each with its variant's template, a large day on a pool of processes (outbound_pipeline.workers);
    `links` makes the unsubscribe links the variables ask for (it must pickle)."""
    if campaign.uses_unsubscribe() and links is None:
        raise UnsubscribeLinksUnavailable(
            f"campaign {campaign.key}: a template variable is the unsubscribe link, and "
            "OUTBOUND_UNSUBSCRIBE_SECRET or OUTBOUND_UNSUBSCRIBE_BASE_URL is not set; nothing "
            "was rendered"
        )
    arms = campaign_arms(campaign, config)
    summary = MessagesSummary()
    a = audience.c
    day = sa.and_(
        messages.c.campaign_key == campaign.key, messages.c.partition_date == partition_date
    )
    select = (
        sa.select(*(a[name] for name in AUDIENCE_COLUMNS_READ))
        .where(
            a.campaign_key == campaign.key,
            a.partition_date == partition_date,
            a.eligible == sa.true(),
        )
        .order_by(a.row_number)
    )
    # One write connection for the stage, short transactions (as the audience's extraction).
    with engine.connect() as read, engine.connect() as write:
        with write.begin():
            replace_partition(write, messages, day, ())
        read = read.execution_options(read_only=True)
        writes = StageWrites(write, messages, ROW_COLUMNS)
        work = functools.partial(
            _render_chunk, campaign, arms, partition_date, run_id, links, writes.pack_columns
        )
        with query_chunks(read, select, {}, chunk_rows) as query:
            for rows, done in in_order(work, query.chunks, parallel_from):
                summary.merge(done)
                writes.add(rows)
                if progress:
                    progress(summary.rows)
        writes.flush()
    refresh_statistics(engine, messages)
    return summary


def stored_summary(conn: sa.Connection, campaign_key: str, partition_date: str) -> MessagesSummary:
    """The summary of a day's messages as the table holds it (a kept snapshot; cleaning is not stored)."""
    m = messages.c
    day = sa.and_(m.campaign_key == campaign_key, m.partition_date == partition_date)
    summary = MessagesSummary()
    for rendered, reason, count in conn.execute(
        sa.select(m.rendered, m.reason, sa.func.count()).where(day).group_by(m.rendered, m.reason)
    ):
        summary.rows += count
        if rendered:
            summary.rendered += count
        else:
            summary.reasons[code_of(reason) or "not_rendered"] += count
    summary.sample_preview = conn.execute(
        sa.select(m.preview_text).where(day, m.rendered == sa.true()).order_by(m.row_key).limit(1)
    ).scalar()
    return summary
