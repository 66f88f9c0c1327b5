"""A sender's pace: this process's spacing of its calls, and the send slots reserved in the warehouse.

The limiter spaces the calls of one sender number across every campaign of this process; the slots
reserved in the warehouse keep the sender's rate across runs and machines.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import threading
import time
from dataclasses import dataclass

from outbound_pipeline.ledger import reserve_send_slots
from outbound_pipeline.sending.ledger_thread import LedgerThread
from outbound_pipeline.sending.settings import (
    CATCH_UP_SECONDS,
    CONSENT_FRESH_SECONDS,
    LATE_SLOT_SECONDS,
    WINDOW_SECONDS,
)


class RateLimiter:
    """Paces calls of one sender number across every campaign of this process (messages/s).

    Calls get evenly spaced slots; a window of the last second's calls (a little longer:
    WINDOW_SECONDS) then admits each one, so that slots woken together after a stall (a busy event
    loop, a slow claim) cannot go out as a burst over the rate.
    """

    def __init__(self, rate: float | None) -> None:
        self.rate = rate
        self._next = 0.0
        self._paused_until = 0.0
        self._last_second: collections.deque[float] = collections.deque()
        self._lock = threading.Lock()

    def reserve(self) -> float:
        """This call's slot in the spacing: how long to wait for it (0: go now)."""
        with self._lock:
            now = time.monotonic()
            if not self.rate:
                return max(0.0, self._paused_until - now)
            # A call a little behind the schedule keeps it (it goes at once, and so may the next
            # few): restarting the spacing from each late call would lose every such delay, and
            # calls woken by the event loop are always a little late. Further behind, the sender
            # was idle: the spacing starts again from now.
            slot = self._next if self._next >= now - CATCH_UP_SECONDS else now
            slot = max(slot, self._paused_until)
            self._next = slot + 1.0 / self.rate
            return max(0.0, slot - now)

    def _admit(self) -> float:
        """0 when a call may go now (and it is counted), else how long to wait."""
        with self._lock:
            if not self.rate:
                return 0.0
            now = time.monotonic()
            calls = self._last_second
            while calls and calls[0] <= now - WINDOW_SECONDS:
                calls.popleft()
            if now < self._paused_until:
                # A pause that began after this call got its slot holds it too.
                return self._paused_until - now
            if len(calls) < max(1, int(self.rate)):
                calls.append(now)
                return 0.0
            return calls[0] + WINDOW_SECONDS - now

    async def acquire(self) -> None:
        await self.wait_for_slot()
        await self.admit()

    async def wait_for_slot(self) -> None:
        """Wait for this call's evenly spaced slot (and any pause)."""
        delay = self.reserve()
        if delay > 0:
            await asyncio.sleep(delay)

    async def admit(self) -> None:
        """Count the call in the last second's window, waiting while that is full: make the call
        right after, so what the window counted is when calls really leave."""
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


@dataclass
class _SharedLimiter:
    limiter: RateLimiter
    runs: int = 0  # the runs of this process using it now


_LIMITERS: dict[str, _SharedLimiter] = {}
_LIMITERS_LOCK = threading.Lock()


def limiter_for(sender: str, rate: float | None) -> RateLimiter:
    """The sender's limiter, shared by the runs of this process sending from it at the same time;
    each run gives it back with `release_limiter` when it ends."""
    with _LIMITERS_LOCK:
        shared = _LIMITERS.get(sender)
        if shared is not None and shared.limiter.rate and rate:
            # Campaigns sharing a sender share its limiter and ceiling: keep the lowest configured
            # rate, lowered in place (a new limiter would let the campaigns already sending go on
            # at their own pace beside it).
            shared.limiter.lower_to(rate)
        elif shared is None or shared.limiter.rate != rate:
            runs = shared.runs if shared else 0
            shared = _LIMITERS[sender] = _SharedLimiter(RateLimiter(rate), runs)
        shared.runs += 1
        return shared.limiter


def release_limiter(sender: str) -> None:
    """A run of `sender` ended. Once none is left, the limiter is forgotten: a later run goes at its
    own campaign's rate, not at the lowest rate a run of the process ever had (a process running
    many runs, such as the in-process executor's, kept it for its lifetime)."""
    with _LIMITERS_LOCK:
        shared = _LIMITERS.get(sender)
        if shared is not None:
            shared.runs -= 1
            if shared.runs <= 0:
                del _LIMITERS[sender]


def forget_limiters() -> None:
    """Forget every sender's limiter, in use or not (tests: one test's pauses and rates must not
    reach the next)."""
    with _LIMITERS_LOCK:
        _LIMITERS.clear()


class SenderSlots:
    """One run's use of its sender's send slots in the warehouse, beside this process's limiter."""

    def __init__(
        self, sender: str, limiter: RateLimiter, db: LedgerThread, stopped: asyncio.Event
    ) -> None:
        self._sender = sender
        self._limiter = limiter
        self._db = db
        self._stopped = stopped

    async def wait_for(self, slot: float | None) -> float | None:
        """Wait for a row's reserved slot; the slot its call goes in (None: the row has none)."""
        while slot is not None:
            # The slot reserved in the warehouse keeps the sender's rate across runs and machines.
            await self._until(slot)
            if not self.missed(slot) or self._stopped.is_set():
                return slot
            # Held up past it (a stalled process): going now would crowd the slots the
            # sender's other runs hold right after it. It takes the next free one instead.
            slot = await self.fresh()
        return None

    def missed(self, slot: float | None) -> bool:
        """A row's slot passed too long ago for its call to go in it now."""
        return slot is not None and time.time() - slot > LATE_SLOT_SECONDS

    async def fresh(self) -> float:
        """The sender's next free send slot, for a row whose own slot is spent or missed."""
        return await self._db.run(
            reserve_send_slots, self._sender, 1, self._limiter.rate, time.time()
        )

    async def hold_every_run(self, seconds: float) -> None:
        """The API said slow down: this process's calls of the sender wait, and every run's too."""
        self._limiter.pause(seconds)
        if self._limiter.rate:
            # Every run of this sender waits too, not only this process.
            await self._db.run(
                reserve_send_slots, self._sender, 0, self._limiter.rate, time.time() + seconds
            )

    async def _until(self, slot: float | None) -> None:
        """Wait for a reserved slot (Unix time); a stop ends a long wait (a slow-down's hold)."""
        delay = 0.0 if slot is None else slot - time.time()
        if delay > CONSENT_FRESH_SECONDS:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopped.wait(), delay)
        elif delay > 0:
            await asyncio.sleep(delay)  # the usual fraction of a second: no task per call
