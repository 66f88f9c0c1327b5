"""The failure-rate check of a day's sends.

`failure_rate_check` is an asset check on `<campaign>/deliveries`, evaluated with each send: the
share of failed calls among the rows whose call had an outcome (sent + failed + unknown). Above the
warn threshold it fails with severity WARN, above the error threshold with severity ERROR. It does
not block the report: the day's figures are still computed.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

import dagster as dg

from outbound_pipeline.outcomes import Status

FAILURE_RATE_WARN = "OUTBOUND_FAILURE_RATE_WARN"
FAILURE_RATE_ERROR = "OUTBOUND_FAILURE_RATE_ERROR"
FAILURE_RATE_CHECK = "failure_rate_within_thresholds"


@dataclass(frozen=True)
class FailureRateThresholds:
    """Failed / (sent + failed + unknown) of a partition: above `warn` a warning, above `error` an error."""

    warn: float = 0.05
    error: float = 0.20
    min_outcomes: int = 1  # below this many outcomes the rate says nothing: the check passes

    def __post_init__(self) -> None:
        if not 0 <= self.warn <= self.error <= 1:
            raise ValueError(
                f"failure-rate thresholds need 0 <= warn <= error <= 1, got {self.warn} and {self.error}"
            )

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
    failed = totals.get(Status.FAILED, 0)
    outcomes = totals.get(Status.SENT, 0) + failed + totals.get(Status.UNKNOWN, 0)
    if outcomes == 0:
        return None, 0
    return failed / outcomes, outcomes


def failure_rate_check(
    counts: Mapping[str, Mapping[str, int]],
    thresholds: FailureRateThresholds,
    asset_key: dg.AssetKey | None = None,
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
    failed_reasons = dict(sorted((counts.get(Status.FAILED) or {}).items()))
    return dg.AssetCheckResult(
        asset_key=asset_key,
        check_name=FAILURE_RATE_CHECK,
        passed=passed,
        severity=severity,
        metadata={
            "failure_rate": dg.MetadataValue.float(round(rate, 4) if rate is not None else 0.0),
            "outcomes": outcomes,
            "failed": totals.get(Status.FAILED, 0),
            "sent": totals.get(Status.SENT, 0),
            "unknown": totals.get(Status.UNKNOWN, 0),
            "warn_above": thresholds.warn,
            "error_above": thresholds.error,
            "failed_by_reason": dg.MetadataValue.json(failed_reasons),
        },
    )


def failure_rate_spec(
    asset_key: dg.AssetKey, thresholds: FailureRateThresholds
) -> dg.AssetCheckSpec:
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
