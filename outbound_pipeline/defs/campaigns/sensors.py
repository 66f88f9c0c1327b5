"""The sensors: per campaign the retry of deferred rows, and the code location's two alerts."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import dagster as dg

from outbound_pipeline.clock import ClockResource
from outbound_pipeline.config import Campaign
from outbound_pipeline.defs.campaigns.jobs import AssetJob, retry_job_name
from outbound_pipeline.ledger import (
    RETRY_LOOKBACK_DAYS,
    StateStoreResource,
    abandoned_days,
    active_halt,
    due_deferred,
)
from outbound_pipeline.reporting import (
    FAILURE_RATE_CHECK,
    WEBHOOK_URL,
    AlertsResource,
    notify_failure_rate,
    notify_run_failure,
)
from outbound_pipeline.warehouse import rows_kept_out_of_errors


def _retry_request(
    day: str, deferred: Mapping[str, Any] | None, abandoned: Mapping[str, Any] | None
) -> dg.RunRequest:
    """The run of one day; its key changes only when the day's rows do: one run per ledger state."""
    state = [
        f"{kind}:{item['rows']}:{item['last_change'].isoformat() if item['last_change'] else ''}"
        for kind, item in (("deferred", deferred), ("abandoned", abandoned))
        if item
    ]
    tags = {"outbound/deferred_rows": str(deferred["rows"]) if deferred else "0"}
    if abandoned:
        tags["outbound/abandoned_rows"] = str(abandoned["rows"])
    return dg.RunRequest(run_key=f"{day}:{':'.join(state)}", partition_key=day, tags=tags)


def build_deferred_retry_sensor(campaign: Campaign, job: AssetJob) -> dg.SensorDefinition:
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
        context: dg.SensorEvaluationContext, state: StateStoreResource, clock: ClockResource
    ) -> dg.SensorResult:
        now = clock.now()
        with state.reading() as conn:
            halt = active_halt(conn, campaign.key, now)
            if halt:
                # Every run would stop at its first claim: wait for the halt to end or be cleared.
                return dg.SensorResult(
                    skip_reason=dg.SkipReason(f"{campaign.key} is halted: {halt}")
                )
            due = {str(item["day"]): item for item in due_deferred(conn, campaign, now)}
            abandoned = {str(item["day"]): item for item in abandoned_days(conn, campaign, now)}
        requests = [
            _retry_request(day, due.get(day), abandoned.get(day))
            for day in sorted(due.keys() | abandoned.keys())
        ]
        if not requests:
            return dg.SensorResult(
                skip_reason=dg.SkipReason(f"no {campaign.key} rows are due or abandoned")
            )
        return dg.SensorResult(run_requests=requests)

    return _sensor


RUN_FAILURE_SENSOR = "outbound_run_failure_alert"
FAILURE_RATE_SENSOR = "outbound_failure_rate_alert"


def build_alert_sensors(
    campaign_keys: Iterable[str], job_campaigns: Mapping[str, str], running: bool
) -> list[dg.SensorDefinition]:
    """The run-failure sensor and the failure-rate sensor of the code location."""
    keys = list(campaign_keys)
    status = dg.DefaultSensorStatus.RUNNING if running else dg.DefaultSensorStatus.STOPPED

    @dg.run_failure_sensor(
        name=RUN_FAILURE_SENSOR,
        description=(
            "Posts every failed run of this code location to the alert webhook "
            f"({WEBHOOK_URL}): campaign, partition, the day's counts, a link to the run."
        ),
        default_status=status,
        minimum_interval_seconds=30,
    )
    @rows_kept_out_of_errors
    def run_failure_alert(
        context: dg.RunFailureSensorContext, alerts: AlertsResource, state: StateStoreResource
    ) -> None:
        notify_run_failure(context, alerts, state, keys, job_campaigns)

    @dg.run_status_sensor(
        name=FAILURE_RATE_SENSOR,
        run_status=dg.DagsterRunStatus.SUCCESS,
        description=(
            f"Posts to the alert webhook when a run's {FAILURE_RATE_CHECK} check did not pass "
            "(warning or error threshold)."
        ),
        default_status=status,
        minimum_interval_seconds=30,
    )
    @rows_kept_out_of_errors
    def failure_rate_alert(
        context: dg.RunStatusSensorContext, alerts: AlertsResource, state: StateStoreResource
    ) -> None:
        notify_failure_rate(context, alerts, state, keys, job_campaigns)

    return [run_failure_alert, failure_rate_alert]
