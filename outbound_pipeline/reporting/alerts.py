"""Alerts: notifications to a Slack-style webhook when a run fails or a day's failure rate is
too high (the check itself is in `failure_rate`).

The sensors (defs/campaigns/sensors.py) call `notify_run_failure` on every failed run of the code
location and `notify_failure_rate` on the successful runs whose failure-rate check did not pass.
Each posts a message to the webhook (`OUTBOUND_ALERT_WEBHOOK_URL`, a Slack incoming webhook or
anything that takes `{"text": ...}`) with the campaign, the partition, the day's counts and a link
to the run.

A notification never carries a phone number or a secret: free text (error messages) goes through
`redact`, which masks anything that looks like a phone number and removes bearer tokens, URL
credentials and the values of the secret settings. Counts come from the ledger, never rows.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import Any

import dagster as dg
import httpx
import sqlalchemy as sa
from pydantic import Field

from outbound_pipeline.ledger import StateStoreResource, send_ledger
from outbound_pipeline.reporting.failure_rate import FAILURE_RATE_CHECK
from outbound_pipeline.reporting.redaction import redact

WEBHOOK_URL = "OUTBOUND_ALERT_WEBHOOK_URL"
DAGSTER_URL = "OUTBOUND_DAGSTER_URL"
DEFAULT_DAGSTER_URL = "http://127.0.0.1:3000"
# Settings whose values must never leave the process.
SECRET_SETTINGS = ("IADVIZE_PASSWORD", "IADVIZE_USERNAME", WEBHOOK_URL, "OUTBOUND_WAREHOUSE_URL")


class AlertDeliveryError(RuntimeError):
    """The webhook refused the notification (the message says how, never the URL)."""


def env_secrets(env: Mapping[str, str] | None = None) -> list[str]:
    env = os.environ if env is None else env
    return [env[name] for name in SECRET_SETTINGS if env.get(name)]


# -- the notifier resource ---------------------------------------------------------------------


# Fields the pipeline computes from the ledger (status counts), shown as they are.
TRUSTED_FIELDS = frozenset({"counts"})


class AlertsResource(dg.ConfigurableResource):
    """Where alerts go: a Slack-style incoming webhook. Without a URL, alerts are only logged."""

    webhook_url: str | None = Field(
        default=None, description="Incoming webhook URL (set with dg.EnvVar: it is a secret)."
    )
    dagster_url: str = Field(
        default=DEFAULT_DAGSTER_URL, description="Base URL of the Dagster UI, for run links."
    )
    timeout_seconds: float = Field(default=10.0, gt=0)

    @property
    def enabled(self) -> bool:
        return bool(self.webhook_url)

    def run_url(self, run_id: str) -> str:
        return f"{self.dagster_url.rstrip('/')}/runs/{run_id}"

    def payload(
        self, title: str, fields: Mapping[str, Any], run_id: str | None, detail: str | None = None
    ) -> dict[str, Any]:
        """The webhook body: Slack's `text` (what any receiver shows) plus Block Kit sections."""
        secrets = [*env_secrets(), self.webhook_url]
        title = redact(title, secrets)
        lines = [f"*{title}*"]
        for name, value in fields.items():
            # The day's counts are the pipeline's own figures, never a phone: a count of a million
            # would read as a number to mask.
            shown = str(value) if name in TRUSTED_FIELDS else redact(str(value), secrets)
            lines.append(f"{name}: {shown}")
        if detail:
            lines.append(redact(detail, secrets)[:1500])
        if run_id:
            lines.append(f"run: {self.run_url(run_id)}")
        text = "\n".join(lines)
        blocks: list[dict[str, Any]] = [
            {"type": "section", "text": {"type": "mrkdwn", "text": text}}
        ]
        return {"text": text, "blocks": blocks}

    def notify(
        self,
        title: str,
        fields: Mapping[str, Any],
        run_id: str | None = None,
        detail: str | None = None,
    ) -> dict[str, Any] | None:
        """Post the alert; returns the body sent, or None when no webhook is configured."""
        body = self.payload(title, fields, run_id, detail)
        if not self.webhook_url:
            return None
        try:
            response = httpx.post(self.webhook_url, json=body, timeout=self.timeout_seconds)
        except httpx.HTTPError as exc:
            raise AlertDeliveryError(
                f"the alert webhook could not be reached ({type(exc).__name__})"
            ) from None
        if response.status_code >= 300:
            raise AlertDeliveryError(f"the alert webhook answered HTTP {response.status_code}")
        return body


def alerts_from_env() -> AlertsResource:
    return AlertsResource(
        webhook_url=dg.EnvVar(WEBHOOK_URL) if os.environ.get(WEBHOOK_URL) else None,
        dagster_url=os.environ.get(DAGSTER_URL) or DEFAULT_DAGSTER_URL,
    )


# -- sensors -----------------------------------------------------------------------------------


def campaign_of_run(
    run: Any,
    campaign_keys: Iterable[str],
    job_campaigns: Mapping[str, str],
    step_keys: Iterable[str] = (),
) -> str | None:
    """The campaign a run belongs to: by its job, else by the assets it selected, else by its
    steps (`<campaign>__deliveries`)."""
    if run.job_name in job_campaigns:
        return job_campaigns[run.job_name]
    keys = set(campaign_keys)
    for asset_key in sorted(run.asset_selection or (), key=lambda k: k.to_user_string()):
        if asset_key.path and asset_key.path[0] in keys:
            return asset_key.path[0]
    for step in [*step_keys, *(run.step_keys_to_execute or ())]:
        prefix = step.split("__", 1)[0]
        if prefix in keys:
            return prefix
    return None


def day_counts(state: StateStoreResource, campaign_key: str, partition: str) -> dict[str, int]:
    """status -> rows of the ledger (state store) for one campaign and day."""
    d = send_ledger.c
    with state.reading() as conn:
        rows = conn.execute(
            sa.select(d.status, sa.func.count())
            .where(d.campaign_key == campaign_key, d.partition_date == partition)
            .group_by(d.status)
        ).all()
    return {status: int(n) for status, n in sorted(rows)}


def _check_evaluations(instance: dg.DagsterInstance, run_id: str) -> list[Any]:
    records = instance.get_records_for_run(
        run_id=run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION
    ).records
    out = []
    for record in records:
        event = record.event_log_entry.dagster_event
        if event is not None:
            out.append(event.event_specific_data)
    return out


def failed_rate_checks(instance: dg.DagsterInstance, run_id: str) -> list[Any]:
    return [
        e
        for e in _check_evaluations(instance, run_id)
        if e.check_name == FAILURE_RATE_CHECK and not e.passed
    ]


def _rate_fields(evaluation: Any) -> dict[str, Any]:
    md = evaluation.metadata
    rate = md.get("failure_rate")
    value = getattr(rate, "value", None)
    return {
        "severity": evaluation.severity.value,
        "failure rate": f"{value:.1%}" if isinstance(value, float) else "n/a",
        "thresholds": f"warn above {getattr(md.get('warn_above'), 'value', '?')}, error above {getattr(md.get('error_above'), 'value', '?')}",
    }


def _counts_text(counts: Mapping[str, int]) -> str:
    return ", ".join(f"{status} {n}" for status, n in counts.items()) or "no ledger rows"


def _day_counts_field(state: StateStoreResource, campaign: str, partition: str) -> str:
    """The day's counts for an alert, or why they are missing: the alert matters more than its
    figures."""
    try:
        return _counts_text(day_counts(state, campaign, partition))
    except Exception as exc:
        return f"unavailable ({type(exc).__name__})"


def _run_failure_detail(context: dg.RunFailureSensorContext, steps: list[Any]) -> str | None:
    """What failed: the first failed step and its error, else the run's failure message."""
    if steps:
        error = getattr(steps[0].event_specific_data, "error", None)
        message = getattr(error, "message", None) or steps[0].message or ""
        return f"step {steps[0].step_key} failed: {message.strip()}"
    return context.failure_event.message or None


def notify_run_failure(
    context: dg.RunFailureSensorContext,
    alerts: AlertsResource,
    state: StateStoreResource,
    campaign_keys: Iterable[str],
    job_campaigns: Mapping[str, str],
) -> dict[str, Any] | None:
    run = context.dagster_run
    steps = context.get_step_failure_events()
    step_keys = [s.step_key for s in steps if s.step_key]
    campaign = (
        campaign_of_run(run, campaign_keys, job_campaigns, step_keys) or "(not a campaign run)"
    )
    partition = run.tags.get("dagster/partition") or "(none)"
    fields: dict[str, Any] = {"campaign": campaign, "partition": partition, "job": run.job_name}
    if campaign in set(campaign_keys) and partition != "(none)":
        fields["counts"] = _day_counts_field(state, campaign, partition)
    for evaluation in failed_rate_checks(context.instance, run.run_id):
        fields.update(_rate_fields(evaluation))
    detail = _run_failure_detail(context, steps)
    body = alerts.notify(f"Outbound run failed: {campaign} {partition}", fields, run.run_id, detail)
    context.log.info(
        f"alert for failed run {run.run_id}: {'posted' if body else 'no webhook configured'}"
    )
    return body


def notify_failure_rate(
    context: dg.RunStatusSensorContext,
    alerts: AlertsResource,
    state: StateStoreResource,
    campaign_keys: Iterable[str],
    job_campaigns: Mapping[str, str],
) -> list[dict[str, Any]]:
    run = context.dagster_run
    sent = []
    for evaluation in failed_rate_checks(context.instance, run.run_id):
        campaign = evaluation.asset_key.path[0]
        partition = evaluation.partition or run.tags.get("dagster/partition") or "(none)"
        fields: dict[str, Any] = {
            "campaign": campaign,
            "partition": partition,
            **_rate_fields(evaluation),
        }
        fields["counts"] = _day_counts_field(state, campaign, partition)
        level = "error" if evaluation.severity == dg.AssetCheckSeverity.ERROR else "warning"
        body = alerts.notify(
            f"Outbound failure rate {level}: {campaign} {partition}", fields, run.run_id
        )
        if body:
            sent.append(body)
    return sent
