"""sending: the send loop that claims a campaign day's rows and calls iAdvize at the sender's rate.

`SendLoop(...).run()` sends; `interrupts_stop` turns Ctrl-C and a terminated run into its stop.
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
from outbound_pipeline.sending.settings import (
    IADVIZE_PAUSE_SECONDS,
    INTERRUPTED,
    SendLoopError,
    SendSettings,
    SendSummary,
    claim_ahead,
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
]
