"""The async send loop: claim a batch, send with bounded concurrency at the sender's rate, record.

One producer claims batches from the ledger (the last-moment checks run there), a fixed number of
workers send, and outcomes are written back in batches. Database work runs on one worker thread so it
never blocks the event loop and never races itself. Rows are claimed only a little ahead of the
workers, never more than the queue takes, so the consent re-check stays close to the call; a call
that follows a longer wait (a retry, a 429 pause, a slow limiter) checks consent again first.

A stop (an account blocked, a halt, an unexpected error) holds every call not yet made, including
those of workers asleep in a retry or waiting for the limiter. An unexpected error stops the loop
and fails it once every row is recorded: `unknown` when its call may have gone out, else `deferred`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import datetime as dt
import json
import logging
import random
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx
import sqlalchemy as sa

from outbound_pipeline import ledger
from outbound_pipeline.iadvize import (
    Action,
    IAdvizeClient,
    IAdvizeError,
    OutboundMessage,
    Verdict,
    request_never_left,
)
from outbound_pipeline.ledger import CampaignPlan, Claimed, Outcome
from outbound_pipeline.sending.pacing import limiter_for
from outbound_pipeline.sending.settings import (
    BUSY_POLL_SECONDS,
    BUSY_WAIT_SECONDS,
    CONSENT_FRESH_SECONDS,
    IADVIZE_PAUSE_SECONDS,
    INTERRUPTED,
    LATE_SLOT_SECONDS,
    SendLoopError,
    SendSettings,
    SendSummary,
    claim_ahead,
)
from outbound_pipeline.warehouse import database_message

T = TypeVar("T")


@dataclass
class _Queued:
    item: Claimed
    checked_at: float  # time.monotonic() when consent was last checked for this row
    slot: float | None = None  # Unix time of the send slot reserved for it in the warehouse


@dataclass
class _Progress:
    """What a worker knows of the row in its hands, read when it fails half way."""

    calls: int = 0
    maybe_accepted: bool = False  # a call went out and was not refused (yet)


def _safe_detail(exc: BaseException) -> str:
    # A statement error's own text lists the SQL parameters (full phone numbers): keep the driver's.
    return database_message(exc)[:300]


def _claim_with_slots(
    conn: sa.Connection, plan: CampaignPlan, rate: float | None, *args: Any, **kwargs: Any
) -> tuple[ledger.ClaimResult, float | None]:
    """A claim and, in the same transaction, one send slot of the sender per row claimed: (the
    claim, the first slot's Unix time, None without pacing)."""
    result = ledger.claim_batch(conn, plan, *args, **kwargs)
    if not rate or not result.claimed:
        return result, None
    return result, ledger.reserve_send_slots(
        conn, plan.sender, len(result.claimed), rate, time.time()
    )


def _current_state(
    conn: sa.Connection,
    plan: CampaignPlan,
    item: Claimed,
    now: dt.datetime,
    id_is_int: bool,
    extra_checks: tuple[Any, ...],
) -> tuple[str | None, ledger.Decision | None]:
    """(active halt, what the claim's own row checks decide now) for a row that waited."""
    halt = ledger.active_halt(conn, plan.campaign_key, now)
    if halt:
        return halt, None
    decisions = ledger.row_checks(
        conn, plan, [item], now, consent_id_is_int=id_is_int, extra_checks=extra_checks
    )
    return None, decisions.get(item.delivery_key)


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
        # The ledger thread's connection, kept between transactions: opening one per claim or flush
        # (SQLite's engine pools none) cost about a millisecond each.
        self._conn: sa.Connection | None = None
        self._stop = asyncio.Event()
        # Set when a worker takes a row from the queue, exits, or the loop stops: what the producer waits on.
        self._room = asyncio.Event()
        self._workers_alive = 0
        self._workers: list[asyncio.Task[None]] = []
        # The row each worker holds, with what it did so far: what an interrupt records for it.
        self._in_hand: dict[str, tuple[Claimed, _Progress]] = {}
        self._error: tuple[BaseException, str] | None = None

    async def _in_db(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run fn(conn, *args) in its own transaction on the ledger thread."""

        def run() -> T:
            for attempt in (1, 2):
                if self._conn is None:
                    self._conn = self.engine.connect()
                try:
                    with self._conn.begin():
                        return fn(self._conn, *args, **kwargs)
                except sa.exc.DBAPIError as exc:
                    self._close_connection()
                    # The kept connection was lost while idle (a server restart, an idle timeout):
                    # once more on a new one. Safe for every ledger write: an uncommitted one is
                    # redone, and rows a lost commit claimed are ours, released unsent at the end.
                    if attempt == 1 and exc.connection_invalidated:
                        continue
                    raise
                except BaseException:
                    # Its transaction is rolled back; the connection itself may be broken: not reused.
                    self._close_connection()
                    raise
            raise AssertionError("unreachable")

        return await asyncio.get_running_loop().run_in_executor(self._db, run)

    def _close_connection(self) -> None:
        """On the ledger thread (SQLite connections belong to the thread that opened them)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except Exception as exc:
                self.log.warning(f"closing the ledger connection failed: {_safe_detail(exc)}")

    def _stop_with(
        self, reason: str, everything: bool = False, until: dt.datetime | None = None
    ) -> None:
        """The first stop names the run's outcome; `until`: the end of the halt it set, if any."""
        if self.summary.stopped is None:
            self.summary.stopped = reason
            self.summary.halted_until = until
        self.summary.stop_all = self.summary.stop_all or everything
        self._stop.set()
        self._room.set()

    def _stop_for_halt(self, halt: str) -> None:
        """A halt in force (`ledger.active_halt`'s description) found at a claim or a re-check."""
        self._stop_with(f"halted ({halt})", everything=halt.startswith("all"))

    def _fail(self, exc: BaseException, where: str) -> None:
        """An unexpected error: stop sending; `run` records what it can, then raises it."""
        name = type(exc).__name__
        if self._error is None:
            self._error = (exc, where)
            # The frames without the message: the message may quote SQL parameters (phone numbers).
            frames = "".join(traceback.format_tb(exc.__traceback__))
            self.log.error(
                f"{self.plan.campaign_key} {self.plan.partition_date}: sends stopped: unexpected {name} "
                f"in {where}: {_safe_detail(exc)}\n{frames}"
            )
        self._stop_with(f"unexpected_error:{name}")

    async def run(self) -> SendSummary:
        try:
            now = self.now()
            await self._in_db(ledger.register_sender, self.token, self.plan, self.run_id, now)
            queue: asyncio.Queue[_Queued | None] = asyncio.Queue(maxsize=claim_ahead(self.settings))
            self._workers_alive = self.settings.concurrency
            workers = self._workers = [
                asyncio.create_task(self._worker(queue)) for _ in range(self.settings.concurrency)
            ]
            background = [
                asyncio.create_task(self._flusher()),
                asyncio.create_task(self._heartbeat()),
            ]
            try:
                await self._produce(queue)
            except Exception as exc:
                self._fail(exc, "a claim")
            finally:
                # One None per worker, after what is queued (skipped when stopped); workers that are
                # gone cannot make this wait forever.
                for _ in workers:
                    if not await self._room_for(queue, 1, even_if_stopped=True):
                        break
                    queue.put_nowait(None)
                await asyncio.gather(*workers, return_exceptions=True)
                for task in background:
                    task.cancel()
                await asyncio.gather(*background, return_exceptions=True)
            await self._finish()
            self._progress(final=True)
            if self._error is not None:
                exc, where = self._error
                raise SendLoopError(
                    f"{self.plan.campaign_key} {self.plan.partition_date}: sends stopped by an unexpected "
                    f"{type(exc).__name__} in {where}: {_safe_detail(exc)}. A row whose call may have gone "
                    "out is recorded unknown; rows not called are deferred for the next run."
                ) from None
            return self.summary
        finally:
            self._db.submit(self._close_connection).result()
            self._db.shutdown(wait=True)

    async def _finish(self) -> None:
        """Record the last outcomes, give back the rows never called, mark this sender finished."""
        # Rows of workers stopped mid-send by an interrupt: unknown if their call may have left.
        for item, progress in self._in_hand.values():
            if progress.maybe_accepted:
                self._record(
                    Outcome(
                        item.delivery_key,
                        ledger.UNKNOWN,
                        "interrupted_outcome_unknown",
                        extra_attempts=progress.calls - 1,
                    )
                )
            else:
                self._record(self._not_sent(item, progress))
        self._in_hand.clear()
        try:
            await self._flush()
        except Exception as exc:
            self._fail(exc, "recording outcomes")
        if self._outcomes:
            # Outcomes that could not be recorded: their rows stay `sending` (released, a sent one
            # would be sent again); this sender marked finished, the next run records them unknown.
            self.log.error(
                f"{self.plan.campaign_key} {self.plan.partition_date}: {len(self._outcomes)} outcomes "
                "not recorded; the next run records those rows unknown"
            )
        else:
            release_reason = (
                f"not_sent:{self.summary.stopped}" if self.summary.stopped else "not_sent"
            )
            try:
                released = await self._in_db(
                    ledger.release_claims,
                    self.plan,
                    self.token,
                    release_reason[:300],
                    self.now(),
                    None,
                )
            except Exception as exc:
                self._fail(exc, "releasing unsent rows")
            else:
                if released:
                    self.summary.statuses["deferred"] += released
                    self.summary.reasons[release_reason] += released
        try:
            await self._in_db(ledger.heartbeat, self.token, self.now(), finished=True)
        except Exception as exc:
            self._fail(exc, "the heartbeat")

    async def _room_for(
        self, queue: asyncio.Queue[_Queued | None], need: int, even_if_stopped: bool = False
    ) -> int:
        """Free places in the queue once there are `need`; 0 when stopped or no worker is left."""
        while True:
            free = queue.maxsize - queue.qsize()
            if free >= need:
                return free
            if self._workers_alive == 0 or (self._stop.is_set() and not even_if_stopped):
                return 0
            self._room.clear()
            await self._room.wait()

    async def _produce(self, queue: asyncio.Queue[_Queued | None]) -> None:
        busy_since: float | None = None
        after: str | None = None  # the claims' cursor: each reads on from the last
        # Claim only what the queue can take, once half of it is free: a producer blocked on a full
        # queue would hold a whole batch whose consent check ages while it waits.
        low_water = min(self.settings.batch_size, max(1, queue.maxsize // 2))
        while not self._stop.is_set():
            room = await self._room_for(queue, low_water)
            if not room:
                return
            checked_at = time.monotonic()
            now = self.now()
            rate = self.limiter.rate
            result, first_slot = await self._in_db(
                _claim_with_slots,
                self.plan,
                rate,
                self.token,
                self.run_id,
                now,
                min(room, self.settings.batch_size),
                consent_id_is_int=self.consent_id_is_int,
                extra_checks=self.extra_checks,
                after=after,
            )
            for reason, n in result.decided.items():
                self.summary.decided_at_claim[reason] += n
            if result.halted:
                self._stop_for_halt(result.halted)
                return
            if result.candidates == 0:
                if after is not None:
                    after = None  # once more from the start: rows behind the cursor may be due now
                    continue
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
            after = result.last_key
            self.summary.claimed += len(result.claimed)
            for i, item in enumerate(result.claimed):
                slot = None if first_slot is None or not rate else first_slot + i / rate
                queue.put_nowait(
                    _Queued(item, checked_at, slot)
                )  # never more than the room measured above

    async def _worker(self, queue: asyncio.Queue[_Queued | None]) -> None:
        try:
            while True:
                queued = await queue.get()
                self._room.set()
                if queued is None:
                    return
                if self._stop.is_set():
                    continue  # left `sending` under our token, released as deferred at the end
                progress = _Progress()
                key = queued.item.delivery_key
                self._in_hand[key] = (queued.item, progress)
                try:
                    outcome = await self._send(queued, progress)
                except Exception as exc:
                    outcome = self._crash_outcome(queued.item, progress, exc)
                    self._fail(exc, "a send worker")
                self._record(outcome)
                del self._in_hand[key]
                if len(self._outcomes) >= self.settings.flush_rows:
                    try:
                        await self._flush()
                    except Exception as exc:
                        self._fail(exc, "recording outcomes")
        finally:
            self._workers_alive -= 1
            self._room.set()

    def _record(self, outcome: Outcome) -> None:
        self.summary.statuses[outcome.status] += 1
        self.summary.reasons[outcome.reason or outcome.status] += 1
        self._outcomes.append(outcome)

    def interrupt(self) -> None:
        """Stop at once (Ctrl-C, a run terminated from the UI): no new call, calls in flight are
        abandoned. `run` then records their rows `unknown`, defers the rows never called, and
        returns with `stopped` set to INTERRUPTED."""
        if self.summary.stopped == INTERRUPTED:
            return
        self.log.warning(
            f"{self.plan.campaign_key} {self.plan.partition_date}: interrupted: stopping sends, recording "
            f"{len(self._in_hand)} calls in flight as unknown and deferring the rows not called"
        )
        self._stop_with(INTERRUPTED)
        for task in self._workers:
            task.cancel()

    def _crash_outcome(self, item: Claimed, progress: _Progress, exc: Exception) -> Outcome:
        """The row of a worker that failed: unknown when its call may have been accepted."""
        name = type(exc).__name__
        extra = progress.calls - 1
        never_left = isinstance(exc, httpx.HTTPError) and request_never_left(exc)
        if progress.maybe_accepted and not never_left:
            return Outcome(
                item.delivery_key,
                ledger.UNKNOWN,
                f"unexpected_error:{name}",
                name,
                False,
                extra_attempts=extra,
            )
        return Outcome(
            item.delivery_key,
            ledger.DEFERRED,
            f"unexpected_error:{name}",
            name,
            True,
            extra_attempts=extra,
        )

    def _not_sent(self, item: Claimed, progress: _Progress) -> Outcome:
        """A row the loop stopped before its (next) call: what the rows still queued get at the end."""
        reason = f"not_sent:{self.summary.stopped}"[:300]
        return Outcome(
            item.delivery_key,
            ledger.DEFERRED,
            reason,
            None,
            True,
            extra_attempts=progress.calls - 1,
        )

    async def _recheck(self, queued: _Queued, progress: _Progress) -> Outcome | None:
        """The claim's halt and row checks again for a row that waited; None when it may go."""
        item = queued.item
        started = time.monotonic()
        halt, decision = await self._in_db(
            _current_state, self.plan, item, self.now(), self.consent_id_is_int, self.extra_checks
        )
        queued.checked_at = started
        if halt:
            self._stop_for_halt(halt)
            return self._not_sent(item, progress)
        if decision is None:
            return None
        status, reason, not_before = decision
        return Outcome(
            item.delivery_key,
            status,
            reason,
            retryable=status == ledger.DEFERRED,
            not_before=not_before,
            extra_attempts=progress.calls - 1,
        )

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

    async def _send(self, queued: _Queued, progress: _Progress) -> Outcome:
        item = queued.item
        message = self._message(item)
        while True:
            if queued.slot is not None:
                # The slot reserved in the warehouse keeps the sender's rate across runs and machines.
                await self._until(queued.slot)
                if time.time() - queued.slot > LATE_SLOT_SECONDS and not self._stop.is_set():
                    # Held up past it (a stalled process): going now would crowd the slots the
                    # sender's other runs hold right after it. It takes the next free one instead.
                    queued.slot = await self._fresh_slot()
                    continue
            # This process's own spacing (its campaigns of the sender together) and pauses.
            await self.limiter.wait_for_slot()
            # A stop (368, a halt) may have come while this worker waited for its slot or its retry.
            if self._stop.is_set():
                return self._not_sent(item, progress)
            # A wait (the queue, a 429 pause, a retry's backoff) aged the claim's consent check:
            # an opt-out written meanwhile must still stop this call (invariant 1).
            if time.monotonic() - queued.checked_at > CONSENT_FRESH_SECONDS:
                decided = await self._recheck(queued, progress)
                if decided is not None:
                    return decided
            # Admitted only now: a re-check's database round trip between the window's count and
            # the call would let calls delayed together leave together, over the rate.
            await self.limiter.admit()
            if self._stop.is_set():
                return self._not_sent(item, progress)
            try:
                # Login and introspection first: no message goes with them, so a row stopped or
                # interrupted during them is not `unknown`, nor counted as called.
                await self.client.prepare()
                progress.calls += 1
                self.summary.calls += 1
                progress.maybe_accepted = True
                result = await self.client.send(message)
                verdict = result.verdict
            except IAdvizeError as exc:
                # Login or introspection failed: no message went out with it. Every campaign stops:
                # for a while when the API was unreachable or failing, else until an operator clears
                # the halt (retrying refused credentials would only lock the account).
                result, verdict = (
                    None,
                    (
                        Verdict(
                            Action.STOP_ALL,
                            f"iadvize_unavailable: {exc}",
                            "iadvize",
                            defer_seconds=IADVIZE_PAUSE_SECONDS,
                        )
                        if exc.transient
                        else Verdict(Action.STOP_ALL, f"iadvize_unusable: {exc}", "iadvize")
                    ),
                )
            action = verdict.action
            progress.maybe_accepted = action in (Action.SENT, Action.UNKNOWN)
            now = self.now()
            extra = progress.calls - 1
            if action is Action.SENT and result is not None:
                self.summary.first_sent_at = self.summary.first_sent_at or now
                self.summary.last_sent_at = now
                return Outcome(
                    item.delivery_key,
                    ledger.SENT,
                    "accepted",
                    message_id=result.message_id,
                    message_text=result.message_text,
                    sent_at=now,
                    extra_attempts=extra,
                )
            if action is Action.RETRY:
                delay = (
                    verdict.delay if verdict.delay is not None else self._backoff(progress.calls)
                )
                if verdict.throttle:
                    self.limiter.pause(delay)
                    if self.limiter.rate:
                        # Every run of this sender waits too, not only this process.
                        await self._in_db(
                            ledger.reserve_send_slots,
                            self.plan.sender,
                            0,
                            self.limiter.rate,
                            time.time() + delay,
                        )
                if self._stop.is_set():
                    return self._not_sent(item, progress)
                if progress.calls < self.settings.max_attempts:
                    await asyncio.sleep(delay)
                    if self.limiter.rate:
                        queued.slot = await self._fresh_slot()  # the claim's slot is spent
                    continue  # the stop and the consent are checked again before the next call
                return Outcome(
                    item.delivery_key,
                    ledger.FAILED,
                    f"{verdict.reason}:retries_exhausted",
                    verdict.code,
                    True,
                    extra_attempts=extra,
                )
            if action is Action.DEFER:
                return Outcome(
                    item.delivery_key,
                    ledger.DEFERRED,
                    verdict.reason,
                    verdict.code,
                    True,
                    not_before=now + dt.timedelta(seconds=verdict.defer_seconds or 0),
                    extra_attempts=extra,
                )
            if action is Action.FAIL:
                return Outcome(
                    item.delivery_key,
                    ledger.FAILED,
                    verdict.reason,
                    verdict.code,
                    False,
                    extra_attempts=extra,
                )
            if action is Action.UNKNOWN:
                return Outcome(
                    item.delivery_key,
                    ledger.UNKNOWN,
                    verdict.reason,
                    verdict.code,
                    False,
                    extra_attempts=extra,
                )
            # Stops: this row was not accepted; it waits for a later run like the rest of the queue.
            everything = action is not Action.STOP_CAMPAIGN
            scope = "all" if everything else f"campaign:{self.plan.campaign_key}"
            until = (
                now + dt.timedelta(seconds=verdict.defer_seconds) if verdict.defer_seconds else None
            )
            reason = f"{verdict.reason} ({verdict.code})"
            await self._in_db(ledger.set_halt, scope, reason, self.run_id, now, until)
            self.log.error(f"{self.plan.campaign_key}: sends stopped for {scope}: {reason}")
            self._stop_with(reason, everything, until)
            return Outcome(
                item.delivery_key,
                ledger.DEFERRED,
                f"stopped:{verdict.reason}",
                verdict.code,
                True,
                not_before=until,
                extra_attempts=extra,
            )

    async def _fresh_slot(self) -> float:
        """The sender's next free send slot, for a row whose own slot is spent or missed."""
        return await self._in_db(
            ledger.reserve_send_slots, self.plan.sender, 1, self.limiter.rate, time.time()
        )

    async def _until(self, slot: float | None) -> None:
        """Wait for a reserved slot (Unix time); a stop ends a long wait (a slow-down's hold)."""
        delay = 0.0 if slot is None else slot - time.time()
        if delay > CONSENT_FRESH_SECONDS:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), delay)
        elif delay > 0:
            await asyncio.sleep(delay)  # the usual fraction of a second: no task per call

    async def _flush(self) -> None:
        if not self._outcomes:
            return
        batch, self._outcomes = self._outcomes, []
        now = self.now()
        try:
            await self._in_db(ledger.record_results, self.plan, self.token, batch, now)
        except BaseException:
            # Kept, not dropped: the end of the run must neither lose them nor release their rows as
            # never called. Writing them twice is harmless (record_results only moves `sending` rows).
            self._outcomes[:0] = batch
            raise

    async def _flusher(self) -> None:
        while True:
            await asyncio.sleep(self.settings.flush_seconds)
            try:
                await self._flush()
            except Exception as exc:
                self._fail(exc, "recording outcomes")
                return

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(self.settings.heartbeat_seconds)
            try:
                await self._in_db(ledger.heartbeat, self.token, self.now())
            except Exception as exc:
                # Without its heartbeat this sender's claims would soon look dead to other runs.
                self._fail(exc, "the heartbeat")
                return
            self._progress()

    def _progress(self, final: bool = False) -> None:
        s = self.summary
        counts = (
            ", ".join(f"{n} {status}" for status, n in sorted(s.statuses.items()))
            or "nothing sent yet"
        )
        self.log.info(
            f"{self.plan.campaign_key} {self.plan.partition_date}: {'done: ' if final else ''}{counts}; "
            f"{s.claimed} claimed, {s.calls} calls, {s.send_rate:.1f} msg/s"
        )
