"""The deliveries step's publications of the day's ledger to the warehouse: every few minutes while
it sends, so analysts' SQL sees progress, and once at its end, whatever the end was.

Best effort: a publication that fails is logged and the sends go on; the ledger in the state store
stays the truth, and the next publication (this run's or the next run's) copies it whole again.
Publications run in a thread of their own, one at a time, never on the event loop nor on the
ledger's thread, so they never hold up a claim or a call.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any

import sqlalchemy as sa

from outbound_pipeline.ledger import CampaignPlan, Publication, publish_partition
from outbound_pipeline.sending.ledger_thread import safe_detail

# Default of the deliveries step's `publish_seconds`: a long send is published this often.
PUBLISH_SECONDS = 120.0


class Publisher:
    """Publishes one campaign day; remembers the last publication and the last error."""

    def __init__(
        self,
        state: sa.Engine,
        warehouse: sa.Engine,
        plan: CampaignPlan,
        log: logging.Logger | Any,
    ) -> None:
        self._state, self._warehouse, self._plan, self._log = state, warehouse, plan, log
        self._lock = threading.Lock()  # one publication at a time: the timed one and the last
        self.last: Publication | None = None
        self.error: str | None = None

    def publish(self) -> Publication | None:
        """Copy the day's ledger to the warehouse now; None (and a logged warning) if it failed."""
        label = f"{self._plan.campaign_key} {self._plan.partition_date}"
        with self._lock:
            try:
                done = publish_partition(
                    self._state, self._warehouse, self._plan.campaign_key, self._plan.partition_date
                )
            except Exception as exc:
                self.error = f"{type(exc).__name__}: {safe_detail(exc)}"
                self._log.warning(
                    f"{label}: publishing the ledger to the warehouse's outbound_deliveries failed "
                    f"({self.error}); the next publication copies it whole"
                )
                return None
        self.last, self.error = done, None
        self._log.info(f"{label}: {done.rows} ledger rows published to outbound_deliveries")
        return done

    async def every(self, seconds: float) -> None:
        """Publish every `seconds` until cancelled (a task beside the send loop)."""
        while True:
            await asyncio.sleep(seconds)
            await asyncio.to_thread(self.publish)
