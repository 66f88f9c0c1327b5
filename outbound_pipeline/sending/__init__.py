"""sending."""

from __future__ import annotations

from outbound_pipeline.sending.loop import (
    _LIMITERS,
    _LIMITERS_LOCK,
    IADVIZE_PAUSE_SECONDS,
    INTERRUPTED,
    RateLimiter,
    SendLoop,
    SendLoopError,
    SendSettings,
    SendSummary,
    claim_ahead,
    interrupts_stop,
    limiter_for,
)
from outbound_pipeline.sending.partition import (
    CampaignDay,
    DeliveryOptions,
    PartitionDryRun,
    PartitionSend,
    campaign_day,
    dry_run_partition,
    send_partition,
)

__all__ = [
    "IADVIZE_PAUSE_SECONDS",
    "INTERRUPTED",
    "RateLimiter",
    "SendLoop",
    "SendLoopError",
    "SendSettings",
    "SendSummary",
    "_LIMITERS",
    "_LIMITERS_LOCK",
    "claim_ahead",
    "interrupts_stop",
    "limiter_for",
    # partition.py
    "CampaignDay",
    "DeliveryOptions",
    "PartitionDryRun",
    "PartitionSend",
    "campaign_day",
    "dry_run_partition",
    "send_partition",
]
