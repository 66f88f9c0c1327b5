"""The day's figures per campaign, for analysts' SQL.

- `outbound_daily_stats`: one row per campaign and day (audience, eligible, rendered, each outcome,
  send rate, every status/reason count as JSON, and the replies, wrong-campaign attachments and
  conversions of outbound_conversations with their rates over the messages sent);
- `outbound_daily_reasons`: the same status/reason counts as rows (campaign, day, status, reason,
  row_count), which SQL can filter and sum without JSON functions.

Both are rewritten for the partition each time the report is materialised (delete-then-insert),
in the warehouse, from the warehouse's audience, messages and conversations and the state store's
ledger.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import sqlalchemy as sa

from outbound_pipeline.clock import as_utc
from outbound_pipeline.ledger import send_ledger
from outbound_pipeline.outcomes import OUTCOMES, Status
from outbound_pipeline.reporting.conversions import conversation_figures
from outbound_pipeline.warehouse import (
    audience,
    daily_reasons,
    daily_stats,
    lock_partition,
    messages,
    replace_partition,
)

# The outbound_daily_stats columns that count one outcome each.
STATUS_COLUMNS: tuple[Status, ...] = OUTCOMES


def lock_report(conn: sa.Connection, campaign_key: str, partition_date: str) -> None:
    """Two runs reporting one partition at once: the second computes and writes after the first
    commits, instead of both inserting into the emptied tables and one failing on the key."""
    lock_partition(conn, "outbound-report", campaign_key, partition_date)


def compute_daily_stats(
    conn: sa.Connection, state: sa.Connection, campaign_key: str, partition_date: str
) -> dict[str, Any]:
    """The day's figures: audience and messages counted on `conn` (the warehouse), outcomes on
    `state` (the ledger)."""

    def where(table: sa.Table) -> sa.ColumnElement[bool]:
        return sa.and_(
            table.c.campaign_key == campaign_key, table.c.partition_date == partition_date
        )

    audience_rows, eligible = conn.execute(
        sa.select(
            sa.func.count(),
            sa.func.coalesce(
                sa.func.sum(sa.case((audience.c.eligible == sa.true(), 1), else_=0)), 0
            ),
        ).where(where(audience))
    ).one()
    rendered = conn.execute(
        sa.select(sa.func.count()).where(where(messages), messages.c.rendered == sa.true())
    ).scalar_one()
    by_status: dict[str, int] = {}
    reasons: dict[str, dict[str, int]] = {}
    d = send_ledger.c
    for status, reason, n in state.execute(
        sa.select(d.status, d.reason, sa.func.count())
        .where(where(send_ledger))
        .group_by(d.status, d.reason)
    ):
        by_status[status] = by_status.get(status, 0) + n
        reasons.setdefault(status, {})[reason or status] = n
    first, last = state.execute(
        sa.select(sa.func.min(d.sent_at), sa.func.max(d.sent_at)).where(
            where(send_ledger), d.status == Status.SENT
        )
    ).one()
    first, last = as_utc(first), as_utc(last)
    sent = by_status.get(Status.SENT, 0)
    span = (last - first).total_seconds() if first and last else 0.0
    return {
        "campaign_key": campaign_key,
        "partition_date": partition_date,
        "audience_rows": int(audience_rows),
        "eligible": int(eligible),
        "rendered": int(rendered),
        **{status.value: by_status.get(status, 0) for status in STATUS_COLUMNS},
        "pending": by_status.get(Status.PENDING, 0) + by_status.get(Status.SENDING, 0),
        "reasons_json": json.dumps(reasons, sort_keys=True),
        "first_sent_at": first,
        "last_sent_at": last,
        "send_rate_per_s": round(sent / span, 2) if span > 0 else None,
        **conversation_figures(conn, campaign_key, partition_date, sent),
    }


def write_daily_stats(
    conn: sa.Connection, stats: dict[str, Any], run_id: str, now: dt.datetime
) -> None:
    """Replace the partition's report rows. Call `lock_report` first, in the same transaction."""
    key, day = stats["campaign_key"], stats["partition_date"]

    def of_day(table: sa.Table) -> sa.ColumnElement[bool]:
        return sa.and_(table.c.campaign_key == key, table.c.partition_date == day)

    replace_partition(
        conn, daily_stats, of_day(daily_stats), [[{**stats, "computed_at": now, "run_id": run_id}]]
    )
    rows = [
        {
            "campaign_key": key,
            "partition_date": day,
            "status": status,
            "reason": reason[:300],
            "row_count": n,
            "computed_at": now,
            "run_id": run_id,
        }
        for status, by_reason in json.loads(stats["reasons_json"]).items()
        for reason, n in by_reason.items()
    ]
    replace_partition(conn, daily_reasons, of_day(daily_reasons), [rows])
