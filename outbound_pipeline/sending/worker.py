"""The workers: each takes a claimed row from the queue, sends it at the sender's pace, records it.

A call that follows a longer wait (a retry, a 429 pause, a slow limiter) checks consent again first.
Every call waits for its row's dispatch mark to be committed (`dispatch.DispatchGate`), which also
refuses a recipient on the suppression list. A stop holds every call not yet made, including those
of workers asleep in a retry or waiting for the limiter.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import random
import time
from typing import Any

import sqlalchemy as sa

from outbound_pipeline.iadvize import Action, IAdvizeError, OutboundMessage, SendResult, Verdict
from outbound_pipeline.ledger import (
    CampaignPlan,
    Claimed,
    Decision,
    Outcome,
    active_halt,
    row_checks,
    set_halt,
)
from outbound_pipeline.outcomes import Status
from outbound_pipeline.sending.context import SendContext
from outbound_pipeline.sending.dispatch import Clearance, DispatchGate
from outbound_pipeline.sending.pacing import SenderSlots
from outbound_pipeline.sending.recorder import OutcomeRecorder
from outbound_pipeline.sending.send_queue import QueuedRow
from outbound_pipeline.sending.settings import CONSENT_FRESH_SECONDS, SendSettings
from outbound_pipeline.sending.verdicts import (
    Progress,
    crash_outcome,
    decided_outcome,
    halt_for,
    login_failure_verdict,
    not_sent,
    retries_exhausted,
    settled_outcome,
    stopped_outcome,
    unsubscribed_outcome,
)
from outbound_pipeline.warehouse import ConsentSource


def current_state(
    conn: sa.Connection,
    plan: CampaignPlan,
    item: Claimed,
    now: dt.datetime,
    consent: ConsentSource,
    extra_checks: tuple[Any, ...],
) -> tuple[str | None, Decision | None]:
    """(active halt, what the claim's own row checks decide now) for a row that waited."""
    halt = active_halt(conn, plan.campaign_key, now)
    if halt:
        return halt, None
    decisions = row_checks(conn, plan, [item], now, consent=consent, extra_checks=extra_checks)
    return None, decisions.get(item.delivery_key)


def backoff_seconds(settings: SendSettings, attempt: int) -> float:
    """The wait before retrying a call the API did not say how long to wait for (with jitter)."""
    base = settings.backoff_base_seconds * (2 ** (attempt - 1))
    return min(settings.backoff_max_seconds, base) * (0.5 + random.random() / 2)


class SendWorker:
    """The job of each of the loop's `concurrency` worker tasks (they share this object)."""

    def __init__(self, ctx: SendContext, recorder: OutcomeRecorder, gate: DispatchGate) -> None:
        self._ctx = ctx
        self._recorder = recorder
        self._gate = gate
        self._slots = SenderSlots(ctx.plan.sender, ctx.limiter, ctx.db, ctx.stop.event)
        # The row each worker holds, with what it did so far: what an interrupt records for it.
        self.in_hand: dict[str, tuple[Claimed, Progress]] = {}

    async def run(self) -> None:
        """Take rows until a None (or a cancel) ends this worker."""
        queue = self._ctx.queue
        try:
            while True:
                queued = await queue.take()
                if queued is None:
                    return
                if self._ctx.stop.is_set():
                    continue  # left `sending` under our token, released as deferred at the end
                await self._handle(queued)
        finally:
            queue.worker_left()

    async def _handle(self, queued: QueuedRow) -> None:
        """One row: send it, record its outcome, write a batch of outcomes once there is one."""
        progress = Progress()
        key = queued.item.delivery_key
        self.in_hand[key] = (queued.item, progress)
        try:
            outcome = await self.send(queued, progress)
        except Exception as exc:
            outcome = crash_outcome(queued.item, progress, exc)
            self._ctx.stop.fail(exc, "a send worker")
        self._recorder.record(outcome)
        del self.in_hand[key]
        if self._recorder.full:
            await self._recorder.flush_or_stop()

    async def send(self, queued: QueuedRow, progress: Progress) -> Outcome:
        """Call for the row until its outcome is known, retrying what the API says to retry."""
        ctx = self._ctx
        item = queued.item
        message = self._message(item)
        while True:
            # Login and introspection first: a login may wait for its slot, and neither the mark
            # nor the row's slot, pace and consent re-check may precede that wait. A failure is
            # remembered by the client and met again by the call below.
            with contextlib.suppress(IAdvizeError):
                await ctx.client.prepare()
            # Marked, then paced: the mark's commit is waited for before the row's send slot, so
            # it never makes the call late for its slot (a late call takes a fresh slot, another
            # transaction, and at 1,000 msg/s those crowd the ledger thread until the rate falls).
            held = await self._dispatch(item, progress)
            if held is None:
                held = await self._wait_for_turn(queued, progress)
            if held is not None:
                return held
            result, verdict = await self._call(message, progress)
            action = verdict.action
            progress.maybe_accepted = action in (Action.SENT, Action.UNKNOWN)
            now = ctx.now()
            if action is Action.RETRY:
                # Refused before acceptance: not dispatched while it waits for its retry.
                self._gate.release(item.delivery_key)
                retried = await self._retry(queued, progress, verdict)
                if retried is None:
                    continue  # the stop and the consent are checked again before the next call
                return retried
            outcome = settled_outcome(item, verdict, result, now, progress.extra_attempts)
            if outcome is None:
                return await self._stop_sends(item, verdict, now, progress)
            if outcome.status is Status.SENT:
                ctx.summary.first_sent_at = ctx.summary.first_sent_at or now
                ctx.summary.last_sent_at = now
            return outcome

    async def _wait_for_turn(
        self, queued: QueuedRow, progress: Progress, slot_retaken: bool = False
    ) -> Outcome | None:
        """Wait until the row's call may go; its outcome instead when it must not (a stop, or a
        re-check that holds it back)."""
        ctx = self._ctx
        if queued.slot is not None:
            queued.slot = await self._slots.wait_for(queued.slot)
        # This process's own spacing (its campaigns of the sender together) and pauses.
        await ctx.limiter.wait_for_slot()
        # A stop (368, a halt) may have come while this worker waited for its slot or its retry.
        if ctx.stop.is_set():
            return self._not_sent(queued.item, progress)
        # A wait (the queue, a 429 pause, a retry's backoff) aged the claim's consent check:
        # an opt-out written meanwhile must still stop this call (invariant 1).
        if time.monotonic() - queued.checked_at > CONSENT_FRESH_SECONDS:
            decided = await self._recheck(queued, progress)
            if decided is not None:
                return decided
        # Admitted only now: a re-check's database round trip between the window's count and
        # the call would let calls delayed together leave together, over the rate.
        await ctx.limiter.admit()
        if ctx.stop.is_set():
            return self._not_sent(queued.item, progress)
        if self._slots.missed(queued.slot) and not slot_retaken:
            # Held up past its slot after waiting for it (a stall): a fresh one, as wait_for does.
            # Once only: missing the fresh one too means the store answers slower than a slot
            # lasts, and each new slot would need a new re-check, missed again (the run would
            # wait forever). The call goes late then, within this process's rate.
            return await self._wait_for_turn(queued, progress, slot_retaken=True)
        return None

    async def _dispatch(self, item: Claimed, progress: Progress) -> Outcome | None:
        """Wait for the row's dispatch mark to be committed; its outcome when the call must not
        leave (the recipient unsubscribed, the run stopped, the mark failed)."""
        clearance = await self._gate.clear(item.delivery_key)
        if clearance is Clearance.UNSUBSCRIBED:
            return unsubscribed_outcome(item, progress)
        if clearance is Clearance.HELD or self._ctx.stop.is_set():
            return self._not_sent(item, progress)
        return None

    async def _recheck(self, queued: QueuedRow, progress: Progress) -> Outcome | None:
        """The claim's halt and row checks again for a row that waited; None when it may go."""
        ctx = self._ctx
        item = queued.item
        await ctx.consent_read_ahead()  # as a claim does
        started = time.monotonic()
        halt, decision = await ctx.db.run(
            current_state, ctx.plan, item, ctx.now(), ctx.consent, ctx.extra_checks
        )
        queued.checked_at = started
        if halt:
            ctx.stop.for_halt(halt)
            return self._not_sent(item, progress)
        if decision is None:
            return None
        return decided_outcome(item, decision, progress)

    async def _call(
        self, message: OutboundMessage, progress: Progress
    ) -> tuple[SendResult | None, Verdict]:
        """One call and the API's verdict on it."""
        try:
            # Login and introspection first: no message goes with them, so a row stopped or
            # interrupted during them is not `unknown`, nor counted as called.
            await self._ctx.client.prepare()
            progress.calls += 1
            self._ctx.summary.calls += 1
            progress.maybe_accepted = True
            result = await self._ctx.client.send(message)
            return result, result.verdict
        except IAdvizeError as exc:
            return None, login_failure_verdict(exc)

    async def _retry(
        self, queued: QueuedRow, progress: Progress, verdict: Verdict
    ) -> Outcome | None:
        """Wait before calling again (None); the row's outcome when stopped or out of attempts."""
        ctx = self._ctx
        delay = (
            verdict.delay
            if verdict.delay is not None
            else backoff_seconds(ctx.settings, progress.calls)
        )
        if verdict.throttle:
            await self._slots.hold_every_run(delay)
        if ctx.stop.is_set():
            return self._not_sent(queued.item, progress)
        if progress.calls < ctx.settings.max_attempts:
            await asyncio.sleep(delay)
            if ctx.limiter.rate:
                queued.slot = await self._slots.fresh()  # the claim's slot is spent
            return None
        return retries_exhausted(queued.item, verdict, progress.extra_attempts)

    async def _stop_sends(
        self, item: Claimed, verdict: Verdict, now: dt.datetime, progress: Progress
    ) -> Outcome:
        """A verdict that stops this campaign or every one: its halt in the ledger, the run stops.
        One that stops this run alone (no login within its bound) sets no halt."""
        ctx = self._ctx
        if verdict.action is Action.STOP_RUN:
            if not ctx.stop.is_set():
                ctx.log.error(f"{ctx.label}: this run stops, other runs go on: {verdict.reason}")
            ctx.stop.with_reason(verdict.reason)
            return self._not_sent(item, progress)
        halt = halt_for(verdict, ctx.plan.campaign_key, now)
        await ctx.db.run(set_halt, halt.scope, halt.reason, ctx.run_id, now, halt.until)
        ctx.log.error(f"{ctx.plan.campaign_key}: sends stopped for {halt.scope}: {halt.reason}")
        ctx.stop.with_reason(halt.reason, halt.everything, halt.until)
        return stopped_outcome(item, verdict, halt, progress.extra_attempts)

    def _not_sent(self, item: Claimed, progress: Progress) -> Outcome:
        return not_sent(item, progress, self._ctx.summary.stopped)

    def _message(self, item: Claimed) -> OutboundMessage:
        plan = self._ctx.plan
        return OutboundMessage(
            sender=plan.sender,
            recipient=item.recipient,
            template_name=item.template_name or plan.template_name,
            language=item.language or plan.language,
            header_params=json.loads(item.header_params_json or "[]"),
            body_params=json.loads(item.body_params_json or "[]"),
            campaign_id=plan.campaign_id,
        )
