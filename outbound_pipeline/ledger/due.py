"""Days a later run must finish: deferred rows whose wait is over, and days a dead run abandoned.

What the deferred-retry sensor reads to start the retry job of a day.
"""

from __future__ import annotations

import datetime as dt
import zoneinfo

import sqlalchemy as sa

from outbound_pipeline.clock import as_utc
from outbound_pipeline.config import Campaign
from outbound_pipeline.ledger.senders import DEAD_SENDER_SECONDS
from outbound_pipeline.ledger.tables import send_ledger, send_runs
from outbound_pipeline.outcomes import Status

# How many days back the deferred-retry sensor looks for rows to resend.
RETRY_LOOKBACK_DAYS = 7


def _retry_window(campaign: Campaign, now: dt.datetime) -> tuple[str, str]:
    """The first and last days (YYYY-MM-DD) the retry sensor looks at: existing partitions only."""
    today = now.astimezone(zoneinfo.ZoneInfo(campaign.schedule.timezone)).date()
    first = max(campaign.start_date, today - dt.timedelta(days=RETRY_LOOKBACK_DAYS))
    last = min(today, campaign.end_date) if campaign.end_date else today
    return first.isoformat(), last.isoformat()


def due_deferred(
    conn: sa.Connection, campaign: Campaign, now: dt.datetime
) -> list[dict[str, object]]:
    """Days of the campaign with deferred rows that may go now: day, rows, last change."""
    d = send_ledger.c
    first, last = _retry_window(campaign, now)
    rows = conn.execute(
        sa.select(d.partition_date, sa.func.count(), sa.func.max(d.updated_at))
        .where(
            d.campaign_key == campaign.key,
            d.status == Status.DEFERRED,
            sa.or_(d.not_before.is_(None), d.not_before <= now),
            d.partition_date.between(first, last),
        )
        .group_by(d.partition_date)
        .order_by(d.partition_date)
    ).all()
    return [
        {"day": day, "rows": int(n), "last_change": as_utc(changed)} for day, n, changed in rows
    ]


def abandoned_days(
    conn: sa.Connection,
    campaign: Campaign,
    now: dt.datetime,
    stale_after: dt.timedelta = dt.timedelta(seconds=DEAD_SENDER_SECONDS),
) -> list[dict[str, object]]:
    """Days of the campaign a run stopped sending mid-way (killed, lost its host): rows still
    `pending` or `sending` and no live sender on the day. Day, rows, last change.

    Their run may show as failed in Dagster, but nothing else would finish the day: the retry run
    turns the dead sender's in-flight rows into `unknown` and sends the pending ones.
    """
    d, r = send_ledger.c, send_runs.c
    first, last = _retry_window(campaign, now)
    live_sender = sa.exists().where(
        r.campaign_key == d.campaign_key,
        r.partition_date == d.partition_date,
        r.finished_at.is_(None),
        r.heartbeat_at >= now - stale_after,
    )
    rows = conn.execute(
        sa.select(d.partition_date, sa.func.count())
        .where(
            d.campaign_key == campaign.key,
            d.status.in_((Status.PENDING, Status.SENDING)),
            d.partition_date.between(first, last),
            ~live_sender,
        )
        .group_by(d.partition_date)
        # A run reconciles (rows become pending) a moment before its sender registers: a day touched
        # this recently may be starting, not abandoned.
        .having(sa.func.max(d.updated_at) < now - stale_after)
        .order_by(d.partition_date)
    ).all()
    # The state is the rows and the day's latest sender. A retry run's reconcile rewrites updated_at
    # but not that: a retry that fails before it sends does not start another at every tick.
    latest_sender = (
        dict(
            conn.execute(
                sa.select(r.partition_date, sa.func.max(r.started_at))
                .where(
                    r.campaign_key == campaign.key, r.partition_date.in_([day for day, _ in rows])
                )
                .group_by(r.partition_date)
            ).all()
        )
        if rows
        else {}
    )
    return [
        {"day": day, "rows": int(n), "last_change": as_utc(latest_sender.get(day))}
        for day, n in rows
    ]
