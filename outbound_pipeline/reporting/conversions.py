"""The day's replies, wrong-campaign attachments and conversions, from outbound_conversations,
and the figures the report shows as numbers (one each, so the UI plots them across partitions)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa

from outbound_pipeline.clock import as_utc
from outbound_pipeline.warehouse import conversations

# The outbound_daily_stats columns counted from outbound_conversations.
CONVERSATION_COUNTS = ("replied", "late_replies", "wrong_campaign", "unattached", "conversions")


def _rate(part: int, whole: int) -> float:
    return round(part / whole, 4) if whole else 0.0


def conversation_figures(
    conn: sa.Connection, campaign_key: str, partition_date: str, sent: int
) -> dict[str, Any]:
    """The counts of the day's rows of outbound_conversations, the rates over `sent` (the ledger's
    accepted messages), and when they were read (None before the first read)."""
    c = conversations.c

    def count(condition: sa.ColumnElement[bool]) -> sa.ColumnElement[Any]:
        return sa.func.coalesce(sa.func.sum(sa.case((condition, 1), else_=0)), 0)

    replied = c.replied == sa.true()
    attached = c.attached_campaign_id
    row = conn.execute(
        sa.select(
            count(replied).label("replied"),
            count(c.within_window == sa.false()).label("late_replies"),
            count(
                sa.and_(replied, c.attached_to_campaign == sa.false(), attached.is_not(None))
            ).label("wrong_campaign"),
            count(sa.and_(replied, attached.is_(None))).label("unattached"),
            count(c.converted == sa.true()).label("conversions"),
            sa.func.max(c.collected_at).label("conversations_read_at"),
        ).where(c.campaign_key == campaign_key, c.partition_date == partition_date)
    ).one()
    figures: dict[str, Any] = {name: int(getattr(row, name)) for name in CONVERSATION_COUNTS}
    figures["reply_rate"] = _rate(figures["replied"], sent)
    figures["conversion_rate"] = _rate(figures["conversions"], sent)
    figures["conversations_read_at"] = as_utc(row.conversations_read_at)
    return figures


# The report's plotted figures, in the order the UI lists them.
REPORT_METRICS = (
    "sent",
    "failed",
    "replied",
    "reply_rate",
    "wrong_campaign",
    "conversions",
    "conversion_rate",
    "late_replies",
    "unattached",
    "audience_rows",
    "eligible",
    "rendered",
    "skipped",
    "deferred",
    "unknown",
    "pending",
    "send_rate_per_s",
)


def report_metrics(stats: Mapping[str, Any], **more: int | float) -> dict[str, int | float]:
    """The report's figures as plain numbers (Dagster plots each across partitions): the stats
    row's, then `more` (e.g. the failure rate, or a breakdown another part computes). A figure
    that is not known yet is 0."""
    metrics: dict[str, int | float] = {}
    for name in REPORT_METRICS:
        value = stats.get(name)
        metrics[name] = value if isinstance(value, int | float) else 0
    return {**metrics, **more}
