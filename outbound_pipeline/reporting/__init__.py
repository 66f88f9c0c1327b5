"""reporting."""

from __future__ import annotations

from outbound_pipeline.reporting.alerts import (
    FAILURE_RATE_CHECK,
    FAILURE_RATE_SENSOR,
    RUN_FAILURE_SENSOR,
    WEBHOOK_URL,
    AlertDeliveryError,
    AlertsResource,
    FailureRateThresholds,
    alerts_from_env,
    build_alert_sensors,
    failure_rate,
    failure_rate_check,
    failure_rate_spec,
    redact,
    status_totals,
)
from outbound_pipeline.reporting.stats import (
    compute_daily_stats,
    lock_report,
    write_daily_stats,
)

__all__ = [
    "AlertDeliveryError",
    "AlertsResource",
    "FAILURE_RATE_CHECK",
    "FAILURE_RATE_SENSOR",
    "FailureRateThresholds",
    "RUN_FAILURE_SENSOR",
    "WEBHOOK_URL",
    "alerts_from_env",
    "build_alert_sensors",
    "compute_daily_stats",
    "failure_rate",
    "failure_rate_check",
    "failure_rate_spec",
    "lock_report",
    "redact",
    "status_totals",
    "write_daily_stats",
]
