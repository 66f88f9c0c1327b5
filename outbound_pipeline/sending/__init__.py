"""sending: a campaign day's send step, and the send loop that claims its rows and calls iAdvize at
the sender's rate.

`send_partition` / `dry_run_partition` are the deliveries step (plan, send, count, publish); `SendLoop(...).run()`
sends; `interrupts_stop` turns Ctrl-C and a terminated run into its stop.
"""

from __future__ import annotations

from outbound_pipeline.sending.interrupts import interrupts_stop
from outbound_pipeline.sending.loop import SendLoop
from outbound_pipeline.sending.pacing import (
    RateLimiter,
    forget_limiters,
    limiter_for,
    release_limiter,
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
from outbound_pipeline.sending.publishing import PUBLISH_SECONDS, Publisher
from outbound_pipeline.sending.settings import (
    INTERRUPTED,
    SendLoopError,
    SendSettings,
    SendSummary,
    claim_ahead,
)

__all__ = [
    "INTERRUPTED",
    "PUBLISH_SECONDS",
    "Publisher",
    "RateLimiter",
    "SendLoop",
    "SendLoopError",
    "SendSettings",
    "SendSummary",
    "claim_ahead",
    "forget_limiters",
    "interrupts_stop",
    "limiter_for",
    "release_limiter",
    "CampaignDay",
    "DeliveryOptions",
    "PartitionDryRun",
    "PartitionSend",
    "campaign_day",
    "dry_run_partition",
    "send_partition",
]
