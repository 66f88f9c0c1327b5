"""The producer: claims batches of rows from the ledger (the last-moment checks run there), each
with its send slots, into the send queue, as fast as the workers free room in it."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import sqlalchemy as sa

from outbound_pipeline.ledger import (
    CampaignPlan,
    Claimed,
    ClaimResult,
    claim_batch,
    reserve_send_slots,
)
from outbound_pipeline.sending.context import SendContext
from outbound_pipeline.sending.send_queue import QueuedRow
from outbound_pipeline.sending.settings import BUSY_POLL_SECONDS, BUSY_WAIT_SECONDS


def claim_with_slots(
    conn: sa.Connection, plan: CampaignPlan, rate: float | None, *args: Any, **kwargs: Any
) -> tuple[ClaimResult, float | None]:
    """A claim and, in the same transaction, one send slot of the sender per row claimed: (the
    claim, the first slot's Unix time, None without pacing)."""
    result = claim_batch(conn, plan, *args, **kwargs)
    if not rate or not result.claimed:
        return result, None
    return result, reserve_send_slots(conn, plan.sender, len(result.claimed), rate, time.time())


class Producer:
    def __init__(self, ctx: SendContext) -> None:
        self._ctx = ctx

    async def run(self) -> None:
        """Claim until no row is left, the run stops, or every worker is gone."""
        ctx = self._ctx
        queue = ctx.queue
        busy_since: float | None = None
        after: str | None = None  # the claims' cursor: each reads on from the last
        # Claim only what the queue can take, once half of it is free: a producer blocked on a full
        # queue would hold a whole batch whose consent check ages while it waits.
        low_water = min(ctx.settings.batch_size, max(1, queue.maxsize // 2))
        while not ctx.stop.is_set():
            room = await queue.room_for(low_water)
            if not room:
                return
            checked_at = time.monotonic()
            rate = ctx.limiter.rate
            result, first_slot = await self._claim(min(room, ctx.settings.batch_size), rate, after)
            if result.halted:
                ctx.stop.for_halt(result.halted)
                return
            if result.candidates == 0:
                if after is not None:
                    after = None  # once more from the start: rows behind the cursor may be due now
                    continue
                if not result.busy:
                    return
                busy_since = busy_since or time.monotonic()
                if not await self._wait_while_busy(busy_since):
                    return
                continue
            busy_since = None
            after = result.last_key
            self._queue_rows(result.claimed, checked_at, first_slot, rate)

    async def _claim(
        self, size: int, rate: float | None, after: str | None
    ) -> tuple[ClaimResult, float | None]:
        ctx = self._ctx
        await ctx.consent_read_ahead()
        now = ctx.now()
        result, first_slot = await ctx.db.run(
            claim_with_slots,
            ctx.plan,
            rate,
            ctx.token,
            ctx.run_id,
            now,
            size,
            consent=ctx.consent,
            extra_checks=ctx.extra_checks,
            after=after,
        )
        for reason, n in result.decided.items():
            ctx.summary.decided_at_claim[reason] += n
        return result, first_slot

    async def _wait_while_busy(self, busy_since: float) -> bool:
        """Wait a little for rows another transaction holds; False once that has lasted too long."""
        if time.monotonic() - busy_since > BUSY_WAIT_SECONDS:
            self._ctx.log.warning(
                f"{self._ctx.label}: rows still held by another "
                f"transaction after {BUSY_WAIT_SECONDS:g} s; they stay pending for a later run"
            )
            return False
        await asyncio.sleep(BUSY_POLL_SECONDS)
        return True

    def _queue_rows(
        self,
        claimed: list[Claimed],
        checked_at: float,
        first_slot: float | None,
        rate: float | None,
    ) -> None:
        self._ctx.summary.claimed += len(claimed)
        for i, item in enumerate(claimed):
            slot = None if first_slot is None or not rate else first_slot + i / rate
            self._ctx.queue.put(
                QueuedRow(item, checked_at, slot)
            )  # never more than the room measured above
