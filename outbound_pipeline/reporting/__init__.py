"""reporting."""

from __future__ import annotations

from outbound_pipeline.reporting.alerts import (
    FAILURE_RATE_CHECK,
    WEBHOOK_URL,
    AlertDeliveryError,
    AlertsResource,
    FailureRateThresholds,
    alerts_from_env,
    failure_rate,
    failure_rate_check,
    failure_rate_spec,
    notify_failure_rate,
    notify_run_failure,
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
    "FailureRateThresholds",
    "notify_failure_rate",
    "notify_run_failure",
    "WEBHOOK_URL",
    "alerts_from_env",
    "compute_daily_stats",
    "failure_rate",
    "failure_rate_check",
    "failure_rate_spec",
    "lock_report",
    "redact",
    "status_totals",
    "write_daily_stats",
]
