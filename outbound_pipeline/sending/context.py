"""What the parts of one send loop share: the producer, the workers and the loop read it."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from outbound_pipeline.iadvize import IAdvizeClient
from outbound_pipeline.ledger import CampaignPlan
from outbound_pipeline.sending.ledger_thread import LedgerThread
from outbound_pipeline.sending.pacing import RateLimiter
from outbound_pipeline.sending.send_queue import SendQueue
from outbound_pipeline.sending.settings import SendSettings, SendSummary
from outbound_pipeline.sending.stops import RunStop
from outbound_pipeline.warehouse import ConsentSource


@dataclass(frozen=True)
class SendContext:
    """One campaign day's send: who sends what, with which settings, and the run's shared parts."""

    plan: CampaignPlan
    client: IAdvizeClient
    now: Callable[[], dt.datetime]
    run_id: str
    token: str  # this process's claim token in the ledger
    settings: SendSettings
    log: logging.Logger | Any
    consent: ConsentSource  # the customers' current consent (the warehouse's consent table)
    extra_checks: tuple[Any, ...]  # the campaign's own claim-time row checks
    limiter: RateLimiter
    summary: SendSummary
    db: LedgerThread
    stop: RunStop
    queue: SendQueue

    @property
    def label(self) -> str:
        """ "<campaign> <day>", the start of the loop's messages."""
        return f"{self.plan.campaign_key} {self.plan.partition_date}"

    async def consent_read_ahead(self) -> None:
        """Let the consent source read the warehouse now if it must, off the ledger's thread and
        before a claim's or re-check's transaction opens: that transaction (SQLite's write lock on
        the state store) never waits on the warehouse. No thread hop when there is nothing to read."""
        if self.consent.refresh_due():
            await asyncio.to_thread(self.consent.refresh)
