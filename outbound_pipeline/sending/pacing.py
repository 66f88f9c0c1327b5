"""A sender's pace in this process: the spacing of its calls across every campaign sending from it."""

from __future__ import annotations

import asyncio
import collections
import threading
import time


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
        await self.wait_for_slot()
        await self.admit()

    async def wait_for_slot(self) -> None:
        """Wait for this call's evenly spaced slot (and any pause)."""
        delay = self._reserve()
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
