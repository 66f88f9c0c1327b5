"""Alerts: the failure-rate check of a day's sends, and notifications to a Slack-style webhook.

- `failure_rate_check` is an asset check on `<campaign>/deliveries`, evaluated with each send: the
  share of failed calls among the rows whose call had an outcome (sent + failed + unknown). Above the
  warn threshold it fails with severity WARN, above the error threshold with severity ERROR. It does
  not block the report: the day's figures are still computed.
- `build_alert_sensors` makes two sensors: one on every failed run of the code location, one on the
  successful runs whose failure-rate check did not pass. Each posts a message to the webhook
  (`OUTBOUND_ALERT_WEBHOOK_URL`, a Slack incoming webhook or anything that takes `{"text": ...}`)
  with the campaign, the partition, the day's counts and a link to the run.

A notification never carries a phone number or a secret: free text (error messages) goes through
`redact`, which masks anything that looks like a phone number and removes bearer tokens, URL
credentials and the values of the secret settings. Counts come from the ledger, never rows.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import dagster as dg
import httpx
import sqlalchemy as sa
from pydantic import Field

from outbound_pipeline.warehouse import WarehouseResource, deliveries
from outbound_pipeline.whatsapp import mask

WEBHOOK_URL = "OUTBOUND_ALERT_WEBHOOK_URL"
DAGSTER_URL = "OUTBOUND_DAGSTER_URL"
FAILURE_RATE_WARN = "OUTBOUND_FAILURE_RATE_WARN"
FAILURE_RATE_ERROR = "OUTBOUND_FAILURE_RATE_ERROR"
FAILURE_RATE_CHECK = "failure_rate_within_thresholds"
DEFAULT_DAGSTER_URL = "http://127.0.0.1:3000"
# Settings whose values must never leave the process.
SECRET_SETTINGS = ("IADVIZE_PASSWORD", "IADVIZE_USERNAME", WEBHOOK_URL, "OUTBOUND_WAREHOUSE_URL")


class AlertDeliveryError(RuntimeError):
    """The webhook refused the notification (the message says how, never the URL)."""


# -- failure rate ------------------------------------------------------------------------------


@dataclass(frozen=True)
class FailureRateThresholds:
    """Failed / (sent + failed + unknown) of a partition: above `warn` a warning, above `error` an error."""

    warn: float = 0.05
    error: float = 0.20
    min_outcomes: int = 1  # below this many outcomes the rate says nothing: the check passes

    def __post_init__(self) -> None:
        if not 0 <= self.warn <= self.error <= 1:
            raise ValueError(f"failure-rate thresholds need 0 <= warn <= error <= 1, got {self.warn} and {self.error}")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> FailureRateThresholds:
        env = os.environ if env is None else env
        try:
            return cls(
                warn=float(env.get(FAILURE_RATE_WARN) or cls.warn),
                error=float(env.get(FAILURE_RATE_ERROR) or cls.error),
            )
        except ValueError as exc:
            raise ValueError(f"{FAILURE_RATE_WARN} / {FAILURE_RATE_ERROR}: {exc}") from None


def status_totals(counts: Mapping[str, Mapping[str, int]]) -> dict[str, int]:
    """status -> rows, from `ledger.status_counts` (status -> reason -> rows)."""
    return {status: sum(reasons.values()) for status, reasons in counts.items()}


def failure_rate(totals: Mapping[str, int]) -> tuple[float | None, int]:
    """(failed share of the outcomes of calls, number of those outcomes); None without outcomes."""
    outcomes = totals.get("sent", 0) + totals.get("failed", 0) + totals.get("unknown", 0)
    if outcomes == 0:
        return None, 0
    return totals.get("failed", 0) / outcomes, outcomes


def failure_rate_check(
    counts: Mapping[str, Mapping[str, int]], thresholds: FailureRateThresholds, asset_key: dg.AssetKey | None = None
) -> dg.AssetCheckResult:
    totals = status_totals(counts)
    rate, outcomes = failure_rate(totals)
    severity = dg.AssetCheckSeverity.WARN
    passed = True
    if rate is not None and outcomes >= thresholds.min_outcomes:
        if rate > thresholds.error:
            passed, severity = False, dg.AssetCheckSeverity.ERROR
        elif rate > thresholds.warn:
            passed = False
    failed_reasons = dict(sorted((counts.get("failed") or {}).items()))
    return dg.AssetCheckResult(
        asset_key=asset_key,
        check_name=FAILURE_RATE_CHECK,
        passed=passed,
        severity=severity,
        metadata={
            "failure_rate": dg.MetadataValue.float(round(rate, 4) if rate is not None else 0.0),
            "outcomes": outcomes,
            "failed": totals.get("failed", 0),
            "sent": totals.get("sent", 0),
            "unknown": totals.get("unknown", 0),
            "warn_above": thresholds.warn,
            "error_above": thresholds.error,
            "failed_by_reason": dg.MetadataValue.json(failed_reasons),
        },
    )


def failure_rate_spec(asset_key: dg.AssetKey, thresholds: FailureRateThresholds) -> dg.AssetCheckSpec:
    return dg.AssetCheckSpec(
        FAILURE_RATE_CHECK,
        asset=asset_key,
        blocking=False,
        description=(
            f"Failed calls / (sent + failed + unknown) of the day: a warning above {thresholds.warn:.0%}, "
            f"an error above {thresholds.error:.0%} (settings {FAILURE_RATE_WARN}, {FAILURE_RATE_ERROR}). "
            "A failed check posts an alert to the webhook."
        ),
    )


# -- redaction ---------------------------------------------------------------------------------

# A phone number: 8 to 15 digits, maybe a '+', maybe single spaces, dots or dashes between digits,
# not glued to a word (run IDs and hex stay as they are).
_PHONE = re.compile(r"(?<![\w-])\+?\d(?:[ .\-\u00a0]?\d){7,14}(?![\w-])")
# ISO dates and times are not phone numbers: set aside before masking, put back after.
_ISO_TIME = re.compile(r"\d{4}-\d{2}-\d{2}(?:[ T]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:?\d{2})?)?")
_BEARER = re.compile(r"(?i)\b(bearer|token|password|access_token)\b([\"'=: ]+)[^\s\"',;&]+")
_URL_CREDENTIALS = re.compile(r"(\w+://)[^/\s:@]+:[^/\s@]+@")


def redact(text: str, secrets: Iterable[str | None] = ()) -> str:
    """The text with phone-like numbers masked and secrets removed."""
    for secret in sorted({s for s in secrets if s and len(s) >= 4}, key=len, reverse=True):
        text = text.replace(secret, "[redacted]")
    text = _URL_CREDENTIALS.sub(r"\1[redacted]@", text)
    text = _BEARER.sub(lambda m: f"{m.group(1)}{m.group(2)}[redacted]", text)

    kept: list[str] = []

    def keep(match: re.Match[str]) -> str:
        kept.append(match.group(0))
        return f"\x00{len(kept) - 1}\x00"

    text = _ISO_TIME.sub(keep, text)
    text = _PHONE.sub(lambda m: mask(re.sub(r"[ .\-\u00a0]", "", m.group(0))), text)
    return re.sub(r"\x00(\d+)\x00", lambda m: kept[int(m.group(1))], text)


def env_secrets(env: Mapping[str, str] | None = None) -> list[str]:
    env = os.environ if env is None else env
    return [env[name] for name in SECRET_SETTINGS if env.get(name)]


# -- the notifier resource ---------------------------------------------------------------------


class AlertsResource(dg.ConfigurableResource):
    """Where alerts go: a Slack-style incoming webhook. Without a URL, alerts are only logged."""

    webhook_url: str | None = Field(
        default=None, description="Incoming webhook URL (set with dg.EnvVar: it is a secret)."
    )
    dagster_url: str = Field(default=DEFAULT_DAGSTER_URL, description="Base URL of the Dagster UI, for run links.")
    timeout_seconds: float = Field(default=10.0, gt=0)

    @property
    def enabled(self) -> bool:
        return bool(self.webhook_url)

    def run_url(self, run_id: str) -> str:
        return f"{self.dagster_url.rstrip('/')}/runs/{run_id}"

    def payload(self, title: str, fields: Mapping[str, Any], run_id: str | None, detail: str | None = None) -> dict[str, Any]:
        """The webhook body: Slack's `text` (what any receiver shows) plus Block Kit sections."""
        secrets = [*env_secrets(), self.webhook_url]
        title = redact(title, secrets)
        lines = [f"*{title}*"]
        for name, value in fields.items():
            lines.append(f"{name}: {redact(str(value), secrets)}")
        if detail:
            lines.append(redact(detail, secrets)[:1500])
        if run_id:
            lines.append(f"run: {self.run_url(run_id)}")
        text = "\n".join(lines)
        blocks: list[dict[str, Any]] = [{"type": "section", "text": {"type": "mrkdwn", "text": text}}]
        return {"text": text, "blocks": blocks}

    def notify(self, title: str, fields: Mapping[str, Any], run_id: str | None = None, detail: str | None = None) -> dict[str, Any] | None:
        """Post the alert; returns the body sent, or None when no webhook is configured."""
        body = self.payload(title, fields, run_id, detail)
        if not self.webhook_url:
            return None
        try:
            response = httpx.post(self.webhook_url, json=body, timeout=self.timeout_seconds)
        except httpx.HTTPError as exc:
            raise AlertDeliveryError(f"the alert webhook could not be reached ({type(exc).__name__})") from None
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
    run: Any, campaign_keys: Iterable[str], job_campaigns: Mapping[str, str], step_keys: Iterable[str] = ()
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


def day_counts(warehouse: WarehouseResource, campaign_key: str, partition: str) -> dict[str, int]:
    """status -> rows of the ledger for one campaign and day."""
    d = deliveries.c
    with warehouse.engine.connect() as conn:
        rows = conn.execute(
            sa.select(d.status, sa.func.count())
            .where(d.campaign_key == campaign_key, d.partition_date == partition)
            .group_by(d.status)
        ).all()
    return {status: int(n) for status, n in sorted(rows)}


def _check_evaluations(instance: dg.DagsterInstance, run_id: str) -> list[Any]:
    records = instance.get_records_for_run(run_id=run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION).records
    out = []
    for record in records:
        event = record.event_log_entry.dagster_event
        if event is not None:
            out.append(event.event_specific_data)
    return out


def failed_rate_checks(instance: dg.DagsterInstance, run_id: str) -> list[Any]:
    return [e for e in _check_evaluations(instance, run_id) if e.check_name == FAILURE_RATE_CHECK and not e.passed]


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


def notify_run_failure(
    context: dg.RunFailureSensorContext,
    alerts: AlertsResource,
    warehouse: WarehouseResource,
    campaign_keys: Iterable[str],
    job_campaigns: Mapping[str, str],
) -> dict[str, Any] | None:
    run = context.dagster_run
    steps = context.get_step_failure_events()
    step_keys = [s.step_key for s in steps if s.step_key]
    campaign = campaign_of_run(run, campaign_keys, job_campaigns, step_keys) or "(not a campaign run)"
    partition = run.tags.get("dagster/partition") or "(none)"
    fields: dict[str, Any] = {"campaign": campaign, "partition": partition, "job": run.job_name}
    if campaign in set(campaign_keys) and partition != "(none)":
        try:
            fields["counts"] = _counts_text(day_counts(warehouse, campaign, partition))
        except Exception as exc:  # the alert matters more than its figures
            fields["counts"] = f"unavailable ({type(exc).__name__})"
    for evaluation in failed_rate_checks(context.instance, run.run_id):
        fields.update(_rate_fields(evaluation))
    detail = None
    if steps:
        error = getattr(steps[0].event_specific_data, "error", None)
        message = getattr(error, "message", None) or steps[0].message or ""
        detail = f"step {steps[0].step_key} failed: {message.strip()}"
    elif context.failure_event.message:
        detail = context.failure_event.message
    body = alerts.notify(f"Outbound run failed: {campaign} {partition}", fields, run.run_id, detail)
    context.log.info(f"alert for failed run {run.run_id}: {'posted' if body else 'no webhook configured'}")
    return body


def notify_failure_rate(
    context: dg.RunStatusSensorContext,
    alerts: AlertsResource,
    warehouse: WarehouseResource,
    campaign_keys: Iterable[str],
    job_campaigns: Mapping[str, str],
) -> list[dict[str, Any]]:
    run = context.dagster_run
    sent = []
    for evaluation in failed_rate_checks(context.instance, run.run_id):
        campaign = evaluation.asset_key.path[0]
        partition = evaluation.partition or run.tags.get("dagster/partition") or "(none)"
        fields: dict[str, Any] = {"campaign": campaign, "partition": partition, **_rate_fields(evaluation)}
        try:
            fields["counts"] = _counts_text(day_counts(warehouse, campaign, partition))
        except Exception as exc:
            fields["counts"] = f"unavailable ({type(exc).__name__})"
        level = "error" if evaluation.severity == dg.AssetCheckSeverity.ERROR else "warning"
        body = alerts.notify(f"Outbound failure rate {level}: {campaign} {partition}", fields, run.run_id)
        if body:
            sent.append(body)
    return sent
