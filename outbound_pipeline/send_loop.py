"""The async send loop: claim a batch, send with bounded concurrency at the sender's rate, record.

One producer claims batches from the ledger (the last-moment checks run there), a fixed number of
workers send, and outcomes are written back in batches. Database work runs on one worker thread so it
never blocks the event loop and never races itself. Rows are claimed only a little ahead of the
workers, so the consent re-check stays close to the call.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import datetime as dt
import json
import logging
import math
import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import sqlalchemy as sa

from outbound_pipeline import ledger
from outbound_pipeline.errors import Action, Verdict
from outbound_pipeline.iadvize import IAdvizeClient, IAdvizeError, OutboundMessage
from outbound_pipeline.ledger import CampaignPlan, Claimed, Outcome
from outbound_pipeline.phones import mask

T = TypeVar("T")


@dataclass(frozen=True)
class SendSettings:
    concurrency: int = 32
    batch_size: int = 100
    max_attempts: int = 4
    rate_per_second: float | None = 80.0  # None: no pacing (benchmarks only)
    stale_after: dt.timedelta = dt.timedelta(seconds=ledger.DEAD_SENDER_SECONDS)
    flush_rows: int = 200
    flush_seconds: float = 0.25
    heartbeat_seconds: float = 5.0
    backoff_base_seconds: float = 0.5
    backoff_max_seconds: float = 30.0


# Rows claimed ahead of the calls cover about this much sending: enough to hide a claim's round trip
# from the workers, few enough that consent is re-checked close to the call and that a killed run
# leaves few claimed rows behind (they become `unknown`).
CLAIM_AHEAD_SECONDS = 0.25


# A concurrent run's reconcile or claim holds rows for milliseconds; a longer hold is someone else's
# transaction, and the rows are left pending for a later run rather than waited for forever.
BUSY_POLL_SECONDS = 0.05
BUSY_WAIT_SECONDS = 30.0


def claim_ahead(settings: SendSettings) -> int:
    """How many claimed rows may wait for a worker (the send queue's size)."""
    most = settings.concurrency + settings.batch_size
    if not settings.rate_per_second:
        return most
    return max(settings.concurrency, min(most, math.ceil(settings.rate_per_second * CLAIM_AHEAD_SECONDS)))


class RateLimiter:
    """Paces calls of one sender number across every campaign of this process (messages/s).

    Calls get evenly spaced slots; a window of the last second's calls then admits each one, so
    that slots woken together after a stall (a busy event loop, a slow claim) cannot go out as a
    burst over the rate.
    """

    def __init__(self, rate: float | None) -> None:
        self.rate = rate
        self._next = 0.0
        self._paused_until = 0.0
        self._last_second: collections.deque[float] = collections.deque()
        self._lock = threading.Lock()

    def _reserve(self) -> float:
        with self._lock:
            now = time.monotonic()
            if not self.rate:
                return max(0.0, self._paused_until - now)
            slot = max(now, self._next, self._paused_until)
            self._next = slot + 1.0 / self.rate
            return slot - now

    def _admit(self) -> float:
        """0 when a call may go now (and it is counted), else how long to wait."""
        with self._lock:
            if not self.rate:
                return 0.0
            now = time.monotonic()
            calls = self._last_second
            while calls and calls[0] <= now - 1.0:
                calls.popleft()
            if now < self._paused_until:
                # A pause that began after this call got its slot holds it too.
                return self._paused_until - now
            if len(calls) < max(1, int(self.rate)):
                calls.append(now)
                return 0.0
            return calls[0] + 1.0 - now

    async def acquire(self) -> None:
        delay = self._reserve()
        if delay > 0:
            await asyncio.sleep(delay)
        while (wait := self._admit()) > 0:
            await asyncio.sleep(wait)

    def lower_to(self, rate: float) -> None:
        with self._lock:
            if self.rate is None or rate < self.rate:
                self.rate = rate

    def pause(self, seconds: float) -> None:
        """The API said slow down (429, 130429): hold every call of this sender for a while."""
        with self._lock:
            self._paused_until = max(self._paused_until, time.monotonic() + seconds)


_LIMITERS: dict[str, RateLimiter] = {}
_LIMITERS_LOCK = threading.Lock()


def limiter_for(sender: str, rate: float | None) -> RateLimiter:
    with _LIMITERS_LOCK:
        limiter = _LIMITERS.get(sender)
        if limiter is not None and limiter.rate and rate:
            # Campaigns sharing a sender share its limiter and ceiling: keep the lowest configured
            # rate, lowered in place (a new limiter would let the campaigns already sending go on
            # at their own pace beside it).
            limiter.lower_to(rate)
        elif limiter is None or limiter.rate != rate:
            limiter = _LIMITERS[sender] = RateLimiter(rate)
        return limiter


@dataclass
class SendSummary:
    claimed: int = 0
    calls: int = 0
    statuses: Counter[str] = field(default_factory=Counter)
    reasons: Counter[str] = field(default_factory=Counter)
    decided_at_claim: Counter[str] = field(default_factory=Counter)
    expired_claims: int = 0
    stopped: str | None = None
    stop_all: bool = False
    started: float = field(default_factory=time.monotonic)
    first_sent_at: dt.datetime | None = None
    last_sent_at: dt.datetime | None = None

    @property
    def seconds(self) -> float:
        return time.monotonic() - self.started

    @property
    def send_rate(self) -> float:
        return self.statuses["sent"] / self.seconds if self.seconds > 0 else 0.0


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
        consent_id_is_int: bool = False,
        extra_checks: tuple[Any, ...] = (),
    ) -> None:
        self.engine = engine
        self.plan = plan
        self.client = client
        self.now = now
        self.run_id = run_id
        self.settings = settings
        self.log = log
        self.consent_id_is_int = consent_id_is_int
        self.extra_checks = extra_checks
        self.token = ledger.new_claim_token(run_id)
        self.limiter = limiter_for(plan.sender, settings.rate_per_second)
        self.summary = SendSummary()
        self._outcomes: list[Outcome] = []
        self._db = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="ledger")
        self._stop = asyncio.Event()

    async def _in_db(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run fn(conn, *args) in its own transaction on the ledger thread."""

        def run() -> T:
            with self.engine.begin() as conn:
                return fn(conn, *args, **kwargs)

        return await asyncio.get_running_loop().run_in_executor(self._db, run)

    def _stop_with(self, reason: str, everything: bool = False) -> None:
        if self.summary.stopped is None:
            self.summary.stopped = reason
        self.summary.stop_all = self.summary.stop_all or everything
        self._stop.set()

    async def run(self) -> SendSummary:
        try:
            now = self.now()
            await self._in_db(ledger.register_sender, self.token, self.plan, self.run_id, now)
            queue: asyncio.Queue[Claimed | None] = asyncio.Queue(maxsize=claim_ahead(self.settings))
            workers = [asyncio.create_task(self._worker(queue)) for _ in range(self.settings.concurrency)]
            background = [asyncio.create_task(self._flusher()), asyncio.create_task(self._heartbeat())]
            try:
                await self._produce(queue)
            finally:
                for _ in workers:
                    await queue.put(None)
                await asyncio.gather(*workers)
                for task in background:
                    task.cancel()
                await asyncio.gather(*background, return_exceptions=True)
            await self._flush()
            now = self.now()
            release_reason = f"not_sent:{self.summary.stopped}" if self.summary.stopped else "not_sent"
            released = await self._in_db(
                ledger.release_claims, self.plan, self.token, release_reason[:300], now, None
            )
            if released:
                self.summary.statuses["deferred"] += released
                self.summary.reasons[release_reason] += released
            await self._in_db(ledger.heartbeat, self.token, self.now(), finished=True)
            self._progress(final=True)
            return self.summary
        finally:
            self._db.shutdown(wait=True)

    async def _produce(self, queue: asyncio.Queue[Claimed | None]) -> None:
        busy_since: float | None = None
        while not self._stop.is_set():
            now = self.now()
            result = await self._in_db(
                ledger.claim_batch,
                self.plan,
                self.token,
                self.run_id,
                now,
                self.settings.batch_size,
                consent_id_is_int=self.consent_id_is_int,
                extra_checks=self.extra_checks,
            )
            for reason, n in result.decided.items():
                self.summary.decided_at_claim[reason] += n
            if result.halted:
                self._stop_with(f"halted ({result.halted})", everything=result.halted.startswith("all"))
                return
            if result.candidates == 0:
                if not result.busy:
                    return
                busy_since = busy_since or time.monotonic()
                if time.monotonic() - busy_since > BUSY_WAIT_SECONDS:
                    self.log.warning(
                        f"{self.plan.campaign_key} {self.plan.partition_date}: rows still held by another "
                        f"transaction after {BUSY_WAIT_SECONDS:g} s; they stay pending for a later run"
                    )
                    return
                await asyncio.sleep(BUSY_POLL_SECONDS)
                continue
            busy_since = None
            self.summary.claimed += len(result.claimed)
            for item in result.claimed:
                await queue.put(item)

    async def _worker(self, queue: asyncio.Queue[Claimed | None]) -> None:
        while True:
            item = await queue.get()
            if item is None:
                return
            if self._stop.is_set():
                continue  # left `sending` under our token, released as deferred at the end
            outcome = await self._send(item)
            self.summary.statuses[outcome.status] += 1
            self.summary.reasons[outcome.reason or outcome.status] += 1
            self._outcomes.append(outcome)
            if len(self._outcomes) >= self.settings.flush_rows:
                await self._flush()

    def _message(self, item: Claimed) -> OutboundMessage:
        return OutboundMessage(
            sender=self.plan.sender,
            recipient=item.recipient,
            template_name=self.plan.template_name,
            language=self.plan.language,
            header_params=json.loads(item.header_params_json or "[]"),
            body_params=json.loads(item.body_params_json or "[]"),
            campaign_id=self.plan.campaign_id,
        )

    def _backoff(self, attempt: int) -> float:
        base = self.settings.backoff_base_seconds * (2 ** (attempt - 1))
        return min(self.settings.backoff_max_seconds, base) * (0.5 + random.random() / 2)

    async def _send(self, item: Claimed) -> Outcome:
        message = self._message(item)
        attempt = 0
        while True:
            await self.limiter.acquire()
            attempt += 1
            self.summary.calls += 1
            try:
                result = await self.client.send(message)
                verdict = result.verdict
            except IAdvizeError as exc:
                result, verdict = None, Verdict(Action.STOP_ALL, f"login_refused: {exc}", "login")
            now = self.now()
            extra = attempt - 1
            action = verdict.action
            if action is Action.SENT and result is not None:
                self.summary.first_sent_at = self.summary.first_sent_at or now
                self.summary.last_sent_at = now
                return Outcome(
                    item.delivery_key, ledger.SENT, "accepted", message_id=result.message_id,
                    message_text=result.message_text, sent_at=now, extra_attempts=extra,
                )
            if action is Action.RETRY:
                delay = verdict.delay if verdict.delay is not None else self._backoff(attempt)
                if verdict.throttle:
                    self.limiter.pause(delay)
                if attempt < self.settings.max_attempts and not self._stop.is_set():
                    await asyncio.sleep(delay)
                    continue
                return Outcome(
                    item.delivery_key, ledger.FAILED, f"{verdict.reason}:retries_exhausted", verdict.code,
                    True, extra_attempts=extra,
                )
            if action is Action.DEFER:
                return Outcome(
                    item.delivery_key, ledger.DEFERRED, verdict.reason, verdict.code, True,
                    not_before=now + dt.timedelta(seconds=verdict.defer_seconds or 0), extra_attempts=extra,
                )
            if action is Action.FAIL:
                return Outcome(item.delivery_key, ledger.FAILED, verdict.reason, verdict.code, False, extra_attempts=extra)
            if action is Action.UNKNOWN:
                return Outcome(item.delivery_key, ledger.UNKNOWN, verdict.reason, verdict.code, False, extra_attempts=extra)
            # Stops: this row was not accepted; it waits for a later run like the rest of the queue.
            everything = action is not Action.STOP_CAMPAIGN
            scope = "all" if everything else f"campaign:{self.plan.campaign_key}"
            until = now + dt.timedelta(seconds=verdict.defer_seconds) if verdict.defer_seconds else None
            reason = f"{verdict.reason} ({verdict.code})"
            await self._in_db(ledger.set_halt, scope, reason, self.run_id, now, until)
            self.log.error(f"{self.plan.campaign_key}: sends stopped for {scope}: {reason}")
            self._stop_with(reason, everything)
            return Outcome(
                item.delivery_key, ledger.DEFERRED, f"stopped:{verdict.reason}", verdict.code, True,
                not_before=until, extra_attempts=extra,
            )

    async def _flush(self) -> None:
        if not self._outcomes:
            return
        batch, self._outcomes = self._outcomes, []
        now = self.now()
        await self._in_db(ledger.record_results, self.plan, self.token, batch, now)

    async def _flusher(self) -> None:
        while True:
            await asyncio.sleep(self.settings.flush_seconds)
            await self._flush()

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(self.settings.heartbeat_seconds)
            now = self.now()
            await self._in_db(ledger.heartbeat, self.token, now)
            self._progress()

    def _progress(self, final: bool = False) -> None:
        s = self.summary
        counts = ", ".join(f"{n} {status}" for status, n in sorted(s.statuses.items())) or "nothing sent yet"
        self.log.info(
            f"{self.plan.campaign_key} {self.plan.partition_date}: {'done: ' if final else ''}{counts}; "
            f"{s.claimed} claimed, {s.calls} calls, {s.send_rate:.1f} msg/s"
        )


def masked_sample(rows: list[dict[str, Any]], phone_fields: tuple[str, ...] = ("recipient", "phone_raw")) -> list[dict[str, Any]]:
    """Rows for UI metadata with phone numbers masked."""
    return [{k: (mask(v) if k in phone_fields else v) for k, v in row.items()} for row in rows]
