"""Per campaign: the daily job and its schedule, the dry-run job, and the retry of deferred rows.

- `<campaign>_daily`: audience, messages, deliveries and report for one day; the schedule
  `<campaign>_schedule` starts it at the campaign's cron in its timezone (stopped by default).
- `<campaign>_dry_run`: the same up to deliveries, with `dry_run: true` preset: every check, what
  would be sent in `outbound_dry_runs`, no call and no change to the ledger.
- `<campaign>_retry_deferred` and the sensor `<campaign>_deferred_retry`: deferred rows (quiet
  hours, limits, pair rate, temporary errors) whose `not_before` has passed, and rows a dead run left
  pending or in flight, go out on a later run of deliveries and report for their day (stopped by
  default, like the schedule).
"""


import datetime as dt
import zoneinfo

import dagster as dg
import sqlalchemy as sa
from dagster._core.definitions.unresolved_asset_job_definition import UnresolvedAssetJobDefinition

from outbound_pipeline.clock import ClockResource, as_utc
from outbound_pipeline.config import Campaign
from outbound_pipeline.defs.campaigns.assets import (
    AUDIENCE,
    DELIVERIES,
    MESSAGES,
    REPORT,
    asset_key,
    partitions_for,
)
from outbound_pipeline.ledger import DEAD_SENDER_SECONDS, active_halt
from outbound_pipeline.warehouse import (
    WarehouseResource,
    deliveries,
    rows_kept_out_of_errors,
    send_runs,
)

# How many days back the deferred-retry sensor looks for rows to resend.
RETRY_LOOKBACK_DAYS = 7


def job_name(campaign: Campaign) -> str:
    return f"{campaign.key}_daily"


def dry_run_job_name(campaign: Campaign) -> str:
    return f"{campaign.key}_dry_run"


def retry_job_name(campaign: Campaign) -> str:
    return f"{campaign.key}_retry_deferred"


def build_campaign_job(campaign: Campaign) -> UnresolvedAssetJobDefinition:
    return dg.define_asset_job(
        name=job_name(campaign),
        selection=dg.AssetSelection.groups(campaign.key),
        partitions_def=partitions_for(campaign),
        description=f"Audience, messages, deliveries and report of {campaign.key} for one day.",
        tags={"outbound/campaign": campaign.key},
    )


def build_dry_run_job(campaign: Campaign) -> UnresolvedAssetJobDefinition:
    key = campaign.key
    return dg.define_asset_job(
        name=dry_run_job_name(campaign),
        selection=dg.AssetSelection.assets(*(asset_key(key, n) for n in (AUDIENCE, MESSAGES, DELIVERIES))),
        partitions_def=partitions_for(campaign),
        config={"ops": {f"{key}__deliveries": {"config": {"dry_run": True}}}},
        description=(
            f"Dry run of {key} for one day: audience, messages and every send check; what would be "
            "sent goes to outbound_dry_runs. Nothing is sent and the ledger is unchanged."
        ),
        tags={"outbound/campaign": key, "outbound/dry_run": "true"},
    )


def build_retry_job(campaign: Campaign) -> UnresolvedAssetJobDefinition:
    key = campaign.key
    return dg.define_asset_job(
        name=retry_job_name(campaign),
        selection=dg.AssetSelection.assets(asset_key(key, DELIVERIES), asset_key(key, REPORT)),
        partitions_def=partitions_for(campaign),
        description=f"Send {key}'s deferred rows of one day whose wait is over, then refresh the report.",
        tags={"outbound/campaign": key, "outbound/kind": "retry_deferred"},
    )


def build_campaign_schedule(campaign: Campaign, job: UnresolvedAssetJobDefinition) -> dg.ScheduleDefinition:
    timezone = campaign.schedule.timezone

    @dg.schedule(
        name=f"{campaign.key}_schedule",
        cron_schedule=campaign.schedule.cron,
        execution_timezone=timezone,
        job=job,
        description=f"Sends {campaign.key} at '{campaign.schedule.cron}' ({timezone}) for that day.",
        default_status=dg.DefaultScheduleStatus.STOPPED,
    )
    def _schedule(context: dg.ScheduleEvaluationContext) -> dg.RunRequest | dg.SkipReason:
        when = context.scheduled_execution_time.astimezone(zoneinfo.ZoneInfo(timezone))
        day = when.date()
        if day < campaign.start_date or (campaign.end_date and day > campaign.end_date):
            return dg.SkipReason(f"{day} is outside {campaign.key}'s dates")
        # run_key: a schedule tick re-evaluated for the same day never starts a second run.
        return dg.RunRequest(run_key=day.isoformat(), partition_key=day.isoformat())

    return _schedule


def _retry_window(campaign: Campaign, now: dt.datetime) -> tuple[str, str]:
    """The first and last days (YYYY-MM-DD) the retry sensor looks at: existing partitions only."""
    today = now.astimezone(zoneinfo.ZoneInfo(campaign.schedule.timezone)).date()
    first = max(campaign.start_date, today - dt.timedelta(days=RETRY_LOOKBACK_DAYS))
    last = min(today, campaign.end_date) if campaign.end_date else today
    return first.isoformat(), last.isoformat()


def due_deferred(conn: sa.Connection, campaign: Campaign, now: dt.datetime) -> list[dict[str, object]]:
    """Days of the campaign with deferred rows that may go now: day, rows, last change."""
    d = deliveries.c
    first, last = _retry_window(campaign, now)
    rows = conn.execute(
        sa.select(d.partition_date, sa.func.count(), sa.func.max(d.updated_at))
        .where(
            d.campaign_key == campaign.key,
            d.status == "deferred",
            sa.or_(d.not_before.is_(None), d.not_before <= now),
            d.partition_date.between(first, last),
        )
        .group_by(d.partition_date)
        .order_by(d.partition_date)
    ).all()
    return [{"day": day, "rows": int(n), "last_change": as_utc(changed)} for day, n, changed in rows]


def abandoned_days(
    conn: sa.Connection, campaign: Campaign, now: dt.datetime, stale_after: dt.timedelta = dt.timedelta(seconds=DEAD_SENDER_SECONDS)
) -> list[dict[str, object]]:
    """Days of the campaign a run stopped sending mid-way (killed, lost its host): rows still
    `pending` or `sending` and no live sender on the day. Day, rows, last change.

    Their run may show as failed in Dagster, but nothing else would finish the day: the retry run
    turns the dead sender's in-flight rows into `unknown` and sends the pending ones.
    """
    d, r = deliveries.c, send_runs.c
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
            d.status.in_(("pending", "sending")),
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
    latest_sender = dict(
        conn.execute(
            sa.select(r.partition_date, sa.func.max(r.started_at))
            .where(r.campaign_key == campaign.key, r.partition_date.in_([day for day, _ in rows]))
            .group_by(r.partition_date)
        ).all()
    ) if rows else {}
    return [{"day": day, "rows": int(n), "last_change": as_utc(latest_sender.get(day))} for day, n in rows]


def build_deferred_retry_sensor(campaign: Campaign, job: UnresolvedAssetJobDefinition) -> dg.SensorDefinition:
    @dg.sensor(
        name=f"{campaign.key}_deferred_retry",
        job=job,
        minimum_interval_seconds=300,
        default_status=dg.DefaultSensorStatus.STOPPED,
        description=(
            f"Starts {retry_job_name(campaign)} for a day of {campaign.key} with deferred rows whose "
            "wait is over (quiet hours, limits, pair rate), or with rows a dead run left pending or "
            f"in flight, looking back {RETRY_LOOKBACK_DAYS} days."
        ),
    )
    @rows_kept_out_of_errors
    def _sensor(
        context: dg.SensorEvaluationContext, warehouse: WarehouseResource, clock: ClockResource
    ) -> dg.SensorResult:
        now = clock.now()
        with warehouse.engine.connect() as conn:
            halt = active_halt(conn, campaign.key, now)
            if halt:
                # Every run would stop at its first claim: wait for the halt to end or be cleared.
                return dg.SensorResult(skip_reason=dg.SkipReason(f"{campaign.key} is halted: {halt}"))
            due = {str(item["day"]): item for item in due_deferred(conn, campaign, now)}
            abandoned = {str(item["day"]): item for item in abandoned_days(conn, campaign, now)}
        requests = []
        for day in sorted(due.keys() | abandoned.keys()):
            # The key changes only when the day's rows do: one run per state of the ledger.
            state = [
                f"{kind}:{item['rows']}:{item['last_change'].isoformat() if item['last_change'] else ''}"  # type: ignore[attr-defined]
                for kind, item in (("deferred", due.get(day)), ("abandoned", abandoned.get(day)))
                if item
            ]
            tags = {"outbound/deferred_rows": str(due[day]["rows"]) if day in due else "0"}
            if day in abandoned:
                tags["outbound/abandoned_rows"] = str(abandoned[day]["rows"])
            requests.append(dg.RunRequest(run_key=f"{day}:{':'.join(state)}", partition_key=day, tags=tags))
        if not requests:
            return dg.SensorResult(skip_reason=dg.SkipReason(f"no {campaign.key} rows are due or abandoned"))
        return dg.SensorResult(run_requests=requests)

    return _sensor
