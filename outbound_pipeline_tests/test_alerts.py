"""Alerts: the failure-rate check (warn and error thresholds), the run-failure and failure-rate
sensors, and the webhook message (campaign, partition, counts, run link; never a phone or a secret)."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import dagster as dg
import pytest
import sqlalchemy as sa

from outbound_pipeline.defs.campaigns.assets import build_campaign_assets
from outbound_pipeline.defs.campaigns.sensors import (
    FAILURE_RATE_SENSOR,
    RUN_FAILURE_SENSOR,
    build_alert_sensors,
)
from outbound_pipeline.reporting import (
    FAILURE_RATE_CHECK,
    AlertsResource,
    FailureRateThresholds,
    failure_rate_check,
    redact,
)
from outbound_pipeline.warehouse import deliveries
from outbound_pipeline_tests.conftest import DAY, resources_for

KEY = "order_ready"
PASSWORD = "not-a-real-password"  # the sandbox resource's, from conftest


class Webhook:
    """A Slack-style incoming webhook on a loopback port that keeps what it receives."""

    def __init__(self, status: int = 200) -> None:
        received: list[dict[str, Any]] = []
        self.received = received

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                length = int(self.headers.get("content-length") or 0)
                received.append(json.loads(self.rfile.read(length)))
                self.send_response(status)
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.url = (
            f"http://127.0.0.1:{self.server.server_address[1]}/services/T000/B000/secret-path"
        )

    def __enter__(self) -> Webhook:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def webhook() -> Iterator[Webhook]:
    with Webhook() as hook:
        yield hook


def _alerts(webhook: Webhook) -> AlertsResource:
    return AlertsResource(webhook_url=webhook.url, dagster_url="http://dagster.test:3000")


def _materialize(
    config: Any,
    resources: dict[str, Any],
    thresholds: FailureRateThresholds,
    instance: dg.DagsterInstance,
) -> dg.ExecuteInProcessResult:
    assets = build_campaign_assets(config.campaign(KEY), config, thresholds)
    return dg.materialize(
        assets, partition_key=DAY, resources=resources, instance=instance, raise_on_error=False
    )


def _event(instance: dg.DagsterInstance, run_id: str, kind: dg.DagsterEventType) -> Any:
    (record,) = instance.get_records_for_run(run_id=run_id, of_type=kind).records
    return record.event_log_entry.dagster_event


def _sensors(config: Any) -> dict[str, dg.SensorDefinition]:
    return {
        s.name: s for s in build_alert_sensors([c.key for c in config.campaigns], {}, running=True)
    }


def _recipients(engine: sa.Engine) -> list[str]:
    with engine.connect() as conn:
        return [r for r in conn.execute(sa.select(deliveries.c.recipient)).scalars() if r]


def assert_no_pii(body: dict[str, Any], recipients: list[str], webhook: Webhook) -> None:
    text = json.dumps(body, ensure_ascii=False)
    for recipient in recipients:
        assert recipient not in text and recipient.lstrip("+") not in text
    assert not re.search(r"(?<![\w-])\+?\d{9,15}(?![\w-])", text), (
        "something that looks like a phone number"
    )
    assert PASSWORD not in text and "secret-path" not in text and webhook.url not in text


# -- pure functions --------------------------------------------------------------------------


def test_failure_rate_check_thresholds() -> None:
    thresholds = FailureRateThresholds(warn=0.05, error=0.2)
    ok = failure_rate_check({"sent": {"accepted": 96}, "failed": {"undeliverable": 4}}, thresholds)
    assert ok.passed
    warn = failure_rate_check(
        {"sent": {"accepted": 90}, "failed": {"undeliverable": 10}}, thresholds
    )
    assert not warn.passed and warn.severity == dg.AssetCheckSeverity.WARN
    error = failure_rate_check(
        {"sent": {"accepted": 70}, "failed": {"undeliverable": 30}}, thresholds
    )
    assert not error.passed and error.severity == dg.AssetCheckSeverity.ERROR
    assert error.metadata["failed_by_reason"].value == {"undeliverable": 30}
    # Skipped and deferred rows are not calls: they do not dilute nor raise the rate.
    assert failure_rate_check({"skipped": {"opted_out": 500}}, thresholds).passed
    unknown = failure_rate_check(
        {"sent": {"accepted": 1}, "unknown": {"timeout": 1}, "failed": {"x": 1}}, thresholds
    )
    assert unknown.metadata["failure_rate"].value == pytest.approx(1 / 3, abs=1e-3)
    with pytest.raises(ValueError):
        FailureRateThresholds(warn=0.5, error=0.1)
    assert FailureRateThresholds.from_env(
        {"OUTBOUND_FAILURE_RATE_WARN": "0.01", "OUTBOUND_FAILURE_RATE_ERROR": "0.5"}
    ) == FailureRateThresholds(0.01, 0.5)


def test_redact_masks_phones_and_secrets_but_keeps_dates_and_ids() -> None:
    text = (
        "to +33 6 12 34 56 78, 0612345678 and 33612345678 at 2026-11-24 10:00:00+00:00 for 2026-11-24; "
        "run 1f2e3d4c-1234-4abc-9def-123456789012; Authorization: Bearer abc.def.ghi; password=hunter2hunter; "
        "postgresql://brand:s3cret@db.internal/warehouse; 1500 sent"
    )
    out = redact(text, ["hunter2hunter"])
    for secret in (
        "+33 6 12 34 56 78",
        "0612345678",
        "33612345678",
        "abc.def.ghi",
        "hunter2hunter",
        "s3cret",
    ):
        assert secret not in out
    for kept in (
        "2026-11-24 10:00:00+00:00",
        "for 2026-11-24",
        "1f2e3d4c-1234-4abc-9def-123456789012",
        "1500 sent",
    ):
        assert kept in out


def test_notify_posts_a_slack_message_and_refusals_are_errors(webhook: Webhook) -> None:
    alerts = _alerts(webhook)
    body = alerts.notify(
        "Outbound run failed: order_ready 2026-11-24",
        {"campaign": "order_ready", "counts": "sent 3"},
        "run-1",
        "call to +33612345678 failed",
    )
    assert webhook.received == [body]
    assert (
        body["text"].startswith("*Outbound run failed")
        and "http://dagster.test:3000/runs/run-1" in body["text"]
    )
    assert body["blocks"][0]["type"] == "section" and "+33612345678" not in json.dumps(body)
    assert AlertsResource().notify("nothing configured", {}) is None
    with Webhook(status=500) as failing:
        from outbound_pipeline.reporting import AlertDeliveryError

        with pytest.raises(AlertDeliveryError) as info:
            _alerts(failing).notify("x", {})
        assert "secret-path" not in str(info.value)


def test_the_days_counts_reach_the_webhook_as_counted(webhook: Webhook) -> None:
    """A million-row day is a count, not a phone number: the counts field is not masked."""
    body = _alerts(webhook).notify(
        "x", {"counts": "sent 1234567, failed 12"}, None, "to +33612345678"
    )
    assert "counts: sent 1234567, failed 12" in body["text"]
    assert "+33612345678" not in body["text"]


# -- the pipeline and the sensors, on SQLite and PostgreSQL ---------------------------------


@pytest.mark.parametrize(
    "fault_rate, thresholds, severity",
    [
        (0.6, FailureRateThresholds(warn=0.05, error=0.2), dg.AssetCheckSeverity.ERROR),
        (0.25, FailureRateThresholds(warn=0.05, error=0.9), dg.AssetCheckSeverity.WARN),
    ],
)
def test_failure_rate_check_and_alert(
    seeded, sandbox, demo_config, webhook, fault_rate, thresholds, severity
) -> None:
    sandbox.configure(faults={"rate": fault_rate, "kinds": ["wa_131026"], "seed": 3})
    instance = dg.DagsterInstance.ephemeral()
    resources = resources_for(seeded, sandbox)
    result = _materialize(demo_config, resources, thresholds, instance)
    assert result.success, "a high failure rate alerts; it does not fail the run"
    (evaluation,) = [
        e for e in result.get_asset_check_evaluations() if e.check_name == FAILURE_RATE_CHECK
    ]
    assert not evaluation.passed and evaluation.severity == severity
    failed = evaluation.metadata["failed"].value
    sent = evaluation.metadata["sent"].value
    assert failed > 0 and evaluation.metadata["failure_rate"].value == pytest.approx(
        failed / (failed + sent), abs=1e-3
    )

    run = instance.get_run_by_id(result.run_id)
    with dg.build_run_status_sensor_context(
        sensor_name=FAILURE_RATE_SENSOR,
        dagster_event=_event(instance, result.run_id, dg.DagsterEventType.RUN_SUCCESS),
        dagster_instance=instance,
        dagster_run=run,
        resources={"alerts": _alerts(webhook), "state": resources["state"]},
    ) as context:
        _sensors(demo_config)[FAILURE_RATE_SENSOR](context)
    (body,) = webhook.received
    text = body["text"]
    level = "error" if severity == dg.AssetCheckSeverity.ERROR else "warning"
    assert f"failure rate {level}: {KEY} {DAY}" in text
    assert f"campaign: {KEY}" in text and f"partition: {DAY}" in text
    assert f"failed {failed}" in text and f"sent {sent}" in text and "skipped" in text
    assert f"http://dagster.test:3000/runs/{result.run_id}" in text
    assert_no_pii(body, _recipients(seeded.engine), webhook)


@pytest.mark.parametrize("warehouse", ["sqlite"], indirect=True)
def test_no_failure_rate_alert_when_the_check_passes(seeded, sandbox, demo_config, webhook) -> None:
    instance = dg.DagsterInstance.ephemeral()
    resources = resources_for(seeded, sandbox)
    result = _materialize(demo_config, resources, FailureRateThresholds(), instance)
    assert result.success
    with dg.build_run_status_sensor_context(
        sensor_name=FAILURE_RATE_SENSOR,
        dagster_event=_event(instance, result.run_id, dg.DagsterEventType.RUN_SUCCESS),
        dagster_instance=instance,
        dagster_run=instance.get_run_by_id(result.run_id),
        resources={"alerts": _alerts(webhook), "state": resources["state"]},
    ) as context:
        _sensors(demo_config)[FAILURE_RATE_SENSOR](context)
    assert webhook.received == []


def test_run_failure_alert(seeded, sandbox, demo_config, webhook) -> None:
    # WhatsApp error 368 (account blocked) stops every send and fails the run.
    sandbox.configure(faults={"rate": 1.0, "kinds": ["wa_368"], "seed": 1})
    instance = dg.DagsterInstance.ephemeral()
    resources = resources_for(seeded, sandbox)
    result = _materialize(demo_config, resources, FailureRateThresholds(), instance)
    assert not result.success

    with dg.build_run_status_sensor_context(
        sensor_name=RUN_FAILURE_SENSOR,
        dagster_event=_event(instance, result.run_id, dg.DagsterEventType.RUN_FAILURE),
        dagster_instance=instance,
        dagster_run=instance.get_run_by_id(result.run_id),
        resources={"alerts": _alerts(webhook), "state": resources["state"]},
    ) as context:
        _sensors(demo_config)[RUN_FAILURE_SENSOR](context.for_run_failure())
    (body,) = webhook.received
    text = body["text"]
    assert f"Outbound run failed: {KEY} {DAY}" in text
    assert f"campaign: {KEY}" in text and f"partition: {DAY}" in text
    assert re.search(r"counts: .*deferred \d+", text) and "skipped" in text
    assert "ALL sends stopped" in text and f"/runs/{result.run_id}" in text
    assert_no_pii(body, _recipients(seeded.engine), webhook)
