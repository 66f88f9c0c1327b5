"""Per campaign: the daily job and its schedule, the conversations refresh, the dry-run job, and the
retry of deferred rows.

- `<campaign>_daily`: audience, messages, deliveries, conversations and report for one day; the
  schedule `<campaign>_schedule` starts it at the campaign's cron in its timezone (stopped by
  default). Its conversations step reads the replies that came while it sent, and the report
  shows them.
- `<campaign>_conversations`: conversations and report of one day. Replies keep arriving for the
  attribution window after each message, so the schedule `<campaign>_conversations_schedule`
  (at `follow_up.conversations_cron`, stopped by default) starts it for every earlier day whose
  window is open or just closed (`days_to_refresh`); a day's figures are final once a run reads it
  with `window_closed` true in the conversations asset's metadata.
- `<campaign>_dry_run`: the same up to deliveries, with `dry_run: true` preset: every check, what
  would be sent in `outbound_dry_runs`, no call and no change to the ledger.
- `<campaign>_retry_deferred` and the sensor `<campaign>_deferred_retry`: deferred rows (quiet
  hours, limits, pair rate, temporary errors) whose `not_before` has passed, and rows a dead run left
  pending or in flight, go out on a later run of deliveries and report for their day (stopped by
  default, like the schedule).
"""

from __future__ import annotations

import zoneinfo
from typing import Any

import dagster as dg

from outbound_pipeline.config import Campaign
from outbound_pipeline.conversations import days_to_refresh
from outbound_pipeline.defs.campaigns.keys import (
    AUDIENCE,
    CONVERSATIONS,
    DELIVERIES,
    MESSAGES,
    REPORT,
    asset_key,
    partitions_for,
)

# What dg.define_asset_job returns (a job resolved against the assets when the Definitions load):
# Dagster does not export its class, and a private import breaks on upgrades.
AssetJob = Any


def job_name(campaign: Campaign) -> str:
    return f"{campaign.key}_daily"


def dry_run_job_name(campaign: Campaign) -> str:
    return f"{campaign.key}_dry_run"


def retry_job_name(campaign: Campaign) -> str:
    return f"{campaign.key}_retry_deferred"


def conversations_job_name(campaign: Campaign) -> str:
    return f"{campaign.key}_conversations"


def build_campaign_job(campaign: Campaign) -> AssetJob:
    return dg.define_asset_job(
        name=job_name(campaign),
        selection=dg.AssetSelection.groups(campaign.key),
        partitions_def=partitions_for(campaign),
        description=(
            f"Audience, messages, deliveries, conversations and report of {campaign.key} for one day."
        ),
        tags={"outbound/campaign": campaign.key},
    )


def build_dry_run_job(campaign: Campaign) -> AssetJob:
    key = campaign.key
    return dg.define_asset_job(
        name=dry_run_job_name(campaign),
        selection=dg.AssetSelection.assets(
            *(asset_key(key, n) for n in (AUDIENCE, MESSAGES, DELIVERIES))
        ),
        partitions_def=partitions_for(campaign),
        config={"ops": {f"{key}__deliveries": {"config": {"dry_run": True}}}},
        description=(
            f"Dry run of {key} for one day: audience, messages and every send check; what would be "
            "sent goes to outbound_dry_runs. Nothing is sent and the ledger is unchanged."
        ),
        tags={"outbound/campaign": key, "outbound/dry_run": "true"},
    )


def build_retry_job(campaign: Campaign) -> AssetJob:
    key = campaign.key
    return dg.define_asset_job(
        name=retry_job_name(campaign),
        selection=dg.AssetSelection.assets(asset_key(key, DELIVERIES), asset_key(key, REPORT)),
        partitions_def=partitions_for(campaign),
        description=f"Send {key}'s deferred rows of one day whose wait is over, then refresh the report.",
        tags={"outbound/campaign": key, "outbound/kind": "retry_deferred"},
    )


def build_conversations_job(campaign: Campaign) -> AssetJob:
    key = campaign.key
    return dg.define_asset_job(
        name=conversations_job_name(campaign),
        selection=dg.AssetSelection.assets(asset_key(key, CONVERSATIONS), asset_key(key, REPORT)),
        partitions_def=partitions_for(campaign),
        description=f"Read the replies to {key}'s messages of one day again, then refresh its report.",
        tags={"outbound/campaign": key, "outbound/kind": "conversations"},
    )


def build_conversations_schedule(campaign: Campaign, job: AssetJob) -> dg.ScheduleDefinition:
    timezone, cron = campaign.schedule.timezone, campaign.follow_up.conversations_cron

    @dg.schedule(
        name=f"{campaign.key}_conversations_schedule",
        cron_schedule=cron,
        execution_timezone=timezone,
        job=job,
        description=(
            f"At '{cron}' ({timezone}), reads again the replies to {campaign.key}'s earlier days "
            "whose attribution window is open or just closed, and refreshes their reports."
        ),
        default_status=dg.DefaultScheduleStatus.STOPPED,
    )
    def _schedule(context: dg.ScheduleEvaluationContext) -> list[dg.RunRequest]:
        today = context.scheduled_execution_time.astimezone(zoneinfo.ZoneInfo(timezone)).date()
        days = days_to_refresh(
            today, campaign.attribution_window_hours, campaign.start_date, campaign.end_date
        )
        # run_key: one run per tick and day, however often the tick is evaluated.
        return [dg.RunRequest(run_key=f"{today}:{day}", partition_key=day) for day in days]

    return _schedule


def build_campaign_schedule(campaign: Campaign, job: AssetJob) -> dg.ScheduleDefinition:
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
