"""What analysts and whoever is on call read: the day's figures per campaign (stats, with the
replies and conversions of conversions.py), the failure-rate check, and the alerts posted to a
webhook (with the redaction that keeps phone numbers and secrets out of them)."""

from __future__ import annotations

from outbound_pipeline.reporting.alerts import (
    WEBHOOK_URL,
    AlertDeliveryError,
    AlertsResource,
    alerts_from_env,
    notify_failure_rate,
    notify_run_failure,
)
from outbound_pipeline.reporting.conversions import (
    REPORT_METRICS,
    conversation_figures,
    report_metrics,
)
from outbound_pipeline.reporting.experiments import (
    ConversionQueryError,
    GroupFigures,
    experiment_figures,
    experiment_metadata,
    write_experiment_figures,
)
from outbound_pipeline.reporting.failure_rate import (
    FAILURE_RATE_CHECK,
    FailureRateThresholds,
    failure_rate,
    failure_rate_check,
    failure_rate_spec,
    status_totals,
)
from outbound_pipeline.reporting.redaction import redact
from outbound_pipeline.reporting.stats import (
    compute_daily_stats,
    lock_report,
    write_daily_stats,
)

__all__ = [
    "ConversionQueryError",
    "GroupFigures",
    "experiment_figures",
    "experiment_metadata",
    "write_experiment_figures",
    "AlertDeliveryError",
    "AlertsResource",
    "FAILURE_RATE_CHECK",
    "FailureRateThresholds",
    "REPORT_METRICS",
    "notify_failure_rate",
    "notify_run_failure",
    "WEBHOOK_URL",
    "alerts_from_env",
    "compute_daily_stats",
    "conversation_figures",
    "failure_rate",
    "failure_rate_check",
    "failure_rate_spec",
    "lock_report",
    "redact",
    "report_metrics",
    "status_totals",
    "write_daily_stats",
]
