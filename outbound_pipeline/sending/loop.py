"""The async send loop: claim a batch, send with bounded concurrency at the sender's rate, record.

One producer claims batches from the ledger (the last-moment checks run there), a fixed number of
workers send, and outcomes are written back in batches. Database work runs on one worker thread so it
never blocks the event loop and never races itself. Rows are claimed only a little ahead of the
workers, never more than the queue takes, so the consent re-check stays close to the call; a call
that follows a longer wait (a retry, a 429 pause, a slow limiter) checks consent again first.

No call leaves before its row's dispatch mark is committed (`dispatch`: one commit per group of
calls, with the outcomes known since), so a crash leaves at most the calls in flight `unknown`.

A stop (an account blocked, a halt, an unexpected error) holds every call not yet made, including
those of workers asleep in a retry or waiting for the limiter. An unexpected error stops the loop
and fails it once every row is recorded: `unknown` when its call may have gone out, else `deferred`.
A state store out of reach stops it too: the outcomes known are kept in memory and written when the
store is back, tried again with backoff for `write_back_seconds`; a run that gives up leaves them
unwritten, and the next run records those rows `unknown` (never resent).

The parts: `producer` (claims), `worker` (one row's calls), `dispatch` (the marks), `verdicts`
(verdict to ledger outcome), `pacing` (the sender's rate), `recorder` (outcomes in batches),
`stops`, `ledger_thread`.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa

from outbound_pipeline import collector
from outbound_pipeline.iadvize import IAdvizeClient
from outbound_pipeline.ledger import (
    CampaignPlan,
    heartbeat,
    new_claim_token,
    register_sender,
    release_claims,
)
from outbound_pipeline.outcomes import Status
from outbound_pipeline.sending.context import SendContext
from outbound_pipeline.sending.dispatch import DispatchGate
from outbound_pipeline.sending.ledger_thread import LedgerThread, safe_detail, store_unreachable
from outbound_pipeline.sending.pacing import limiter_for, release_limiter
from outbound_pipeline.sending.producer import Producer
from outbound_pipeline.sending.recorder import OutcomeRecorder
from outbound_pipeline.sending.send_queue import SendQueue
from outbound_pipeline.sending.settings import (
    INTERRUPTED,
    WRITE_BACK_FIRST_WAIT_SECONDS,
    WRITE_BACK_MAX_WAIT_SECONDS,
    SendLoopError,
    SendSettings,
    SendSummary,
    claim_ahead,
)
from outbound_pipeline.sending.stops import RunStop
from outbound_pipeline.sending.verdicts import interrupted_outcome, release_reason
from outbound_pipeline.sending.worker import SendWorker
from outbound_pipeline.warehouse import ConsentSource


class SendLoop:
    def __init__(
        self,
        engine: sa.Engine,
        plan: CampaignPlan,
        client: IAdvizeClient,
        now: Callable[[], dt.datetime],
        run_id: str,
        settings: SendSettings,
        log: logging.Logger | Any,
        consent: ConsentSource,
        extra_checks: tuple[Any, ...] = (),
    ) -> None:
        self.summary = SendSummary()
        stop = RunStop(self.summary, log, f"{plan.campaign_key} {plan.partition_date}")
        self._ctx = SendContext(
            plan=plan,
            client=client,
            now=now,
            run_id=run_id,
            token=new_claim_token(run_id),
            settings=settings,
            log=log,
            consent=consent,
            extra_checks=extra_checks,
            limiter=limiter_for(plan.sender, settings.rate_per_second),
            summary=self.summary,
            db=LedgerThread(engine, log),
            stop=stop,
            queue=SendQueue(claim_ahead(settings), settings.concurrency, stop),
        )
        self._recorder = OutcomeRecorder(self._ctx)
        self._producer = Producer(self._ctx)
        self._gate = DispatchGate(self._ctx, self._recorder)
        self._worker = SendWorker(self._ctx, self._recorder, self._gate)
        self._workers: list[asyncio.Task[None]] = []

    async def run(self) -> SendSummary:
        ctx = self._ctx
        try:
            now = ctx.now()
            await ctx.db.run(register_sender, ctx.token, ctx.plan, ctx.run_id, now)
            with collector.heap_set_aside():
                await self._send_all()
            await self._finish()
            self.summary.ended = time.monotonic()
            self._progress(final=True)
            self._raise_if_failed()
            return self.summary
        finally:
            ctx.db.close()
            release_limiter(ctx.plan.sender)

    def interrupt(self) -> None:
        """Stop at once (Ctrl-C, a run terminated from the UI): no new call, calls in flight are
        abandoned. `run` then records their rows `unknown`, defers the rows never called, and
        returns with `stopped` set to INTERRUPTED."""
        if self.summary.stopped == INTERRUPTED:
            return
        self._ctx.log.warning(
            f"{self._ctx.label}: interrupted: stopping sends, recording "
            f"{len(self._worker.in_hand)} calls in flight as unknown and deferring the rows not called"
        )
        self._ctx.stop.with_reason(INTERRUPTED)
        for task in self._workers:
            task.cancel()

    async def _send_all(self) -> None:
        """The producer, the workers and the background tasks, until the producer is done and
        every worker has ended."""
        ctx = self._ctx
        workers = self._workers = [
            asyncio.create_task(self._worker.run()) for _ in range(ctx.settings.concurrency)
        ]
        background = [
            asyncio.create_task(self._gate.run()),
            asyncio.create_task(self._flusher()),
            asyncio.create_task(self._heartbeat()),
        ]
        try:
            await self._producer.run()
        except Exception as exc:
            ctx.stop.fail(exc, "a claim")
        finally:
            await ctx.queue.end_workers(len(workers))
            await asyncio.gather(*workers, return_exceptions=True)
            for task in background:
                task.cancel()
            await asyncio.gather(*background, return_exceptions=True)

    async def _finish(self) -> None:
        """Record the last outcomes, give back the rows never called, mark this sender finished."""
        ctx = self._ctx
        # Rows of workers stopped mid-send by an interrupt: unknown if their call may have left.
        for item, progress in self._worker.in_hand.values():
            self._recorder.record(interrupted_outcome(item, progress, self.summary.stopped))
        self._worker.in_hand.clear()
        if not await self._write_back():
            # Their rows stay `sending`, marked dispatched: the next run records them unknown.
            ctx.log.error(
                f"{ctx.label}: {len(self._recorder.pending)} outcomes not recorded; the next run "
                "records those rows unknown (never resent)"
            )
        # Only rows never dispatched: one whose call may have left is never given back.
        await self._release_unsent()
        try:
            await ctx.db.run(heartbeat, ctx.token, ctx.now(), finished=True)
        except Exception as exc:
            ctx.stop.fail(exc, "the heartbeat")

    async def _write_back(self) -> bool:
        """Write the outcomes still in memory; while the state store is unreachable, try again
        with a growing wait for up to `write_back_seconds`. False when they stay unwritten."""
        ctx = self._ctx
        give_up_at = time.monotonic() + ctx.settings.write_back_seconds
        wait = WRITE_BACK_FIRST_WAIT_SECONDS
        tries = 0
        while True:
            kept = len(self._recorder.pending)
            try:
                await self._recorder.flush()
            except Exception as exc:
                tries += 1
                left = give_up_at - time.monotonic()
                if not store_unreachable(exc) or left < wait:
                    ctx.stop.fail(exc, "recording outcomes")
                    return False
                ctx.log.warning(
                    f"{ctx.label}: the state store is unreachable ({safe_detail(exc)}): {kept} "
                    f"outcomes kept in memory, try {tries + 1} in {wait:.1f} s (giving up in "
                    f"{left:.0f} s)"
                )
                await asyncio.sleep(wait)
                wait = min(wait * 2, WRITE_BACK_MAX_WAIT_SECONDS)
                continue
            if tries:
                ctx.log.warning(f"{ctx.label}: the state store is back: {kept} outcomes written")
            return True

    async def _release_unsent(self) -> None:
        """Give the rows claimed and never called back to the ledger as deferred."""
        ctx = self._ctx
        reason = release_reason(self.summary.stopped)
        try:
            released = await ctx.db.run(
                release_claims, ctx.plan, ctx.token, reason[:300], ctx.now(), None
            )
        except Exception as exc:
            ctx.stop.fail(exc, "releasing unsent rows")
        else:
            if released:
                self.summary.statuses[Status.DEFERRED] += released
                self.summary.reasons[reason] += released

    def _raise_if_failed(self) -> None:
        if self._ctx.stop.error is None:
            return
        exc, where = self._ctx.stop.error
        cause = (
            "the state store being unreachable"
            if store_unreachable(exc)
            else f"an unexpected {type(exc).__name__}"
        )
        raise SendLoopError(
            f"{self._ctx.label}: sends stopped by {cause} in {where}: {safe_detail(exc)}. A row "
            "whose call may have gone out is recorded unknown; rows not called are deferred for "
            "the next run."
        ) from None

    async def _flusher(self) -> None:
        while True:
            await asyncio.sleep(self._ctx.settings.flush_seconds)
            if not await self._recorder.flush_or_stop():
                return

    async def _heartbeat(self) -> None:
        ctx = self._ctx
        while True:
            await asyncio.sleep(ctx.settings.heartbeat_seconds)
            try:
                await ctx.db.run(heartbeat, ctx.token, ctx.now())
            except Exception as exc:
                # Without its heartbeat this sender's claims would soon look dead to other runs.
                ctx.stop.fail(exc, "the heartbeat")
                return
            self._progress()

    def _progress(self, final: bool = False) -> None:
        s = self.summary
        counts = (
            ", ".join(f"{n} {status}" for status, n in sorted(s.statuses.items()))
            or "nothing sent yet"
        )
        self._ctx.log.info(
            f"{self._ctx.label}: {'done: ' if final else ''}{counts}; "
            f"{s.claimed} claimed, {s.calls} calls, {s.send_rate:.1f} msg/s"
        )
