"""When a campaign runs and follows up: its daily schedule, when replies are read again and when its
report is due. Every cron string is checked by Dagster itself (a `dg.ScheduleDefinition`)."""

from __future__ import annotations

import warnings

from pydantic import Field, field_validator

from outbound_pipeline.config.fields import StrictModel, checked_timezone


def is_valid_cron(value: str) -> bool:
    """True when Dagster accepts the cron string: the campaign's schedule is built from it."""
    # Imported here: the audience's worker processes read campaigns and need no Dagster (2 s).
    import dagster as dg

    try:
        with warnings.catch_warnings():
            # An interval out of range only warns; the campaign's schedule warns when it is built.
            warnings.simplefilter("ignore")
            dg.ScheduleDefinition(name="cron_check", cron_schedule=value, job_name="cron_check")
    except dg.DagsterInvalidDefinitionError:
        return False
    return True


class ScheduleConfig(StrictModel):
    cron: str = "0 9 * * *"
    timezone: str = "UTC"

    @field_validator("cron")
    @classmethod
    def _cron(cls, value: str) -> str:
        if not is_valid_cron(value):
            raise ValueError(f"'{value}' is not a valid cron expression (e.g. '0 9 * * *')")
        return value

    @field_validator("timezone")
    @classmethod
    def _tz(cls, value: str) -> str:
        return checked_timezone(value)


class FollowUp(StrictModel):
    """After the send: when replies are read again and when the day's report is due (crons in
    the schedule's timezone)."""

    conversations_cron: str = Field(
        default="0 6 * * *",
        description="When the days whose attribution window is still open (or just closed) have "
        "their conversations read again and their report refreshed.",
    )
    report_deadline_cron: str = Field(
        default="0 23 * * *",
        description="The day's report is overdue when not materialised by this tick of its day.",
    )

    @field_validator("conversations_cron", "report_deadline_cron")
    @classmethod
    def _cron(cls, value: str) -> str:
        if not is_valid_cron(value):
            raise ValueError(f"'{value}' is not a valid cron expression (e.g. '0 6 * * *')")
        return value
