"""sending: a campaign day's send step, and the send loop that claims its rows and calls iAdvize at
the sender's rate.

`send_partition` / `dry_run_partition` are the deliveries step (plan, send, count, publish); `SendLoop(...).run()`
sends; `interrupts_stop` turns Ctrl-C and a terminated run into its stop.
"""

from __future__ import annotations

from outbound_pipeline.sending.interrupts import interrupts_stop
from outbound_pipeline.sending.loop import SendLoop
from outbound_pipeline.sending.pacing import (
    _LIMITERS,
    _LIMITERS_LOCK,
    RateLimiter,
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
    "_LIMITERS",
    "_LIMITERS_LOCK",
    "claim_ahead",
    "interrupts_stop",
    "limiter_for",
    "CampaignDay",
    "DeliveryOptions",
    "PartitionDryRun",
    "PartitionSend",
    "campaign_day",
    "dry_run_partition",
    "send_partition",
]
