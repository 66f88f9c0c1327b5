"""Messages: each eligible audience row rendered into the template's parameters and preview
(`messages.parameters`), written to outbound_messages, a large day on the worker processes.

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
)
from outbound_pipeline.json_text import from_json, to_json
from outbound_pipeline.messages.parameters import (
    LinkMaker,
    RenderSkip,
    UnsubscribeLinksUnavailable,
    parameter_slots,
    render_parameters,
)
from outbound_pipeline.outcomes import code_of
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
    slots = {variant: parameter_slots(arm.variables) for variant, (arm, _) in arms.items()}
    for recipient, fields_json, variant in zip(recipients, fields, variants, strict=True):
        chosen = variant if variant in arms else None
        arm, template = arms[chosen]
        arm_of.append(arm)
        template_of.append(template)
        try:
            header, body, preview, cleaned = render_parameters(
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
