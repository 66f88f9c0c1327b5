"""The send loop's rate limiter, alone: one per sender in a process, shared by the runs sending from it
at the lowest of their rates and forgotten when the last ends; `pause()` (429, 130429) holds every
call of the sender; missed slots never turn into a burst; calls are counted over a little more than
a second; rows claimed ahead of the calls stay few.

The pace of whole runs: test_pacing.py.
"""

from __future__ import annotations

import asyncio
import time
import types

import pytest

from outbound_pipeline import sending as send_loop
from outbound_pipeline.sending import RateLimiter, limiter_for, pacing, release_limiter
from outbound_pipeline_tests.pace_measures import assert_paced, busiest_second

# Senders of this file only.
UNIT_SENDERS = ("+33644646092", "+33644646093", "+33644646094")
RATE = 10.0


# --- one limiter per sender, shared by its campaigns ------------------------------------------------


async def _acquire_times(limiter: RateLimiter, n: int) -> list[float]:
    times: list[float] = []
    for _ in range(n):
        await limiter.acquire()
        times.append(time.monotonic())
    return times


async def _two_campaigns(first: RateLimiter, second: RateLimiter, n: int) -> list[float]:
    a, b = await asyncio.gather(_acquire_times(first, n), _acquire_times(second, n))
    return a + b


@pytest.mark.parametrize("rates", [(50.0, 10.0), (10.0, 50.0)], ids=["fast_first", "slow_first"])
def test_campaigns_sharing_a_sender_share_one_limiter_at_the_lowest_rate(
    rates: tuple[float, float],
) -> None:
    sender = UNIT_SENDERS[0]
    first = limiter_for(sender, rates[0])
    second = limiter_for(sender, rates[1])  # a second campaign starts while the first is sending
    # Whatever the order, the sender's calls go at the lower rate, counted across both campaigns.
    times = asyncio.run(_two_campaigns(first, second, 8))
    assert len(times) == 16
    assert_paced(times, min(rates))
    # A third campaign at a higher rate does not lift the ceiling either.
    assert limiter_for(sender, 80.0).rate == min(rates)
    # While one of the three still sends the ceiling stays; once the last ends, a new run goes at
    # its own rate.
    release_limiter(sender)
    release_limiter(sender)
    assert limiter_for(sender, 80.0).rate == min(rates)
    release_limiter(sender)
    release_limiter(sender)
    assert limiter_for(sender, 80.0).rate == 80.0


def test_a_different_sender_has_its_own_limiter() -> None:
    ours, theirs = limiter_for(UNIT_SENDERS[1], 10.0), limiter_for(UNIT_SENDERS[2], 10.0)
    assert ours is not theirs and limiter_for(UNIT_SENDERS[1], 10.0) is ours


def test_pause_holds_every_call_of_the_sender() -> None:
    sender = UNIT_SENDERS[0]
    campaign_a, campaign_b = limiter_for(sender, 1000.0), limiter_for(sender, 1000.0)

    async def after_pause() -> float:
        # The API told campaign A to slow down (429 / 130429): campaign B's next call waits too.
        campaign_a.pause(0.5)
        started = time.monotonic()
        await campaign_b.acquire()
        return time.monotonic() - started

    # A lower bound on the wait is an upper bound on the rate: a loaded machine only adds to it.
    assert asyncio.run(after_pause()) >= 0.45


def test_rows_claimed_ahead_of_the_calls_stay_few_at_whatsapps_rates() -> None:
    # At WhatsApp's default 80/s a quarter second is 20 rows: the workers' own slots suffice.
    assert (
        send_loop.claim_ahead(
            send_loop.SendSettings(concurrency=32, batch_size=100, rate_per_second=80)
        )
        == 32
    )
    # At 1,000/s a quarter second is 250 rows, capped at one batch beyond the workers.
    assert (
        send_loop.claim_ahead(
            send_loop.SendSettings(concurrency=32, batch_size=100, rate_per_second=1000)
        )
        == 132
    )
    assert (
        send_loop.claim_ahead(
            send_loop.SendSettings(concurrency=32, batch_size=100, rate_per_second=400)
        )
        == 100
    )
    # Pacing lifted (benchmarks): the next batch is claimed while a whole one still waits.
    assert (
        send_loop.claim_ahead(
            send_loop.SendSettings(concurrency=50, batch_size=100, rate_per_second=None)
        )
        == 150
    )


def test_a_stalled_event_loop_does_not_turn_missed_slots_into_a_burst() -> None:
    limiter = RateLimiter(RATE)
    times: list[float] = []

    async def call() -> None:
        await limiter.acquire()
        times.append(time.monotonic())

    async def main() -> None:
        calls = [asyncio.create_task(call()) for _ in range(30)]
        await asyncio.sleep(0.15)
        # The loop is blocked for a second (a slow synchronous step): ten slots pass unserved, and
        # without the window they would all go out at once beside the next second's ten.
        time.sleep(1.0)
        await asyncio.gather(*calls)

    asyncio.run(main())
    assert len(times) == 30
    assert busiest_second(times) <= RATE + 1, (
        f"{busiest_second(times)} calls in one second at {RATE}/s"
    )


def _limiter_clock(monkeypatch: pytest.MonkeyPatch) -> types.SimpleNamespace:
    """The limiters' monotonic clock, set by the test (`clock.now`), from 1000.0."""
    clock = types.SimpleNamespace(now=1000.0, time=time.time)
    clock.monotonic = lambda: clock.now
    monkeypatch.setattr(pacing, "time", clock)
    return clock


def test_a_call_a_little_behind_the_spacing_keeps_the_schedule_and_an_idle_sender_starts_anew(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The event loop wakes every call a little late. Spacing each from the moment it arrived lost
    # every such delay: 50 calls in flight spent them waiting in the limiter, under the rate.
    clock = _limiter_clock(monkeypatch)
    limiter = RateLimiter(10.0)
    assert limiter.reserve() == 0  # the first call: at once, the next one's slot at 1000.1
    clock.now = 1000.115  # woken 15 ms after that slot: it goes at once, in the slot it missed...
    assert limiter.reserve() == 0
    assert limiter.reserve() == pytest.approx(0.085)  # ...and the next keeps the schedule (1000.2)
    # Further behind than CATCH_UP_SECONDS, the sender was idle: no burst, spacing from now.
    clock.now = 1000.3 + pacing.CATCH_UP_SECONDS + 0.001
    assert limiter.reserve() == 0
    assert limiter.reserve() == pytest.approx(0.1)


def test_calls_are_counted_over_a_little_more_than_a_second(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Calls let go at the edge of a full window reach the API a few milliseconds apart: counted over
    # exactly one second, the API saw 1,003 in one of its seconds at 1,000 msg/s.
    clock = _limiter_clock(monkeypatch)
    limiter = RateLimiter(10.0)
    assert [limiter._admit() for _ in range(10)] == [0.0] * 10
    clock.now = 1001.005  # a second and 5 ms on: the window (a second and 10 ms) is still full
    assert limiter._admit() == pytest.approx(0.005)
    clock.now = 1001.011
    assert limiter._admit() == 0.0


def test_a_pause_holds_calls_that_already_had_their_slot() -> None:
    limiter = RateLimiter(RATE)

    async def main() -> float:
        await limiter.acquire()
        started = time.monotonic()
        waiting = asyncio.create_task(limiter.acquire())  # its slot is 0.1 s away
        await asyncio.sleep(0.02)
        limiter.pause(0.5)  # a 429 answered another call meanwhile
        await waiting
        return time.monotonic() - started

    assert asyncio.run(main()) >= 0.5
