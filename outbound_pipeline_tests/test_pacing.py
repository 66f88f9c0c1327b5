"""Invariant 5, throughput and pair rate: the pipeline paces each sender and spaces each recipient.

- The send step never goes faster than the campaign's `max_send_rate` for its sender, measured on the
  sandbox's own accept timestamps (what WhatsApp would count), on SQLite and PostgreSQL.
- Campaigns sharing a sender in one process share one limiter at the lowest rate; `pause()` (429,
  130429) holds every call of that sender.
- A recipient messaged by one campaign is deferred by the next one for `min_interval_seconds`
  (the pair rate), by the pipeline itself, not by waiting for the API's 131056.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import subprocess
import threading
import time
import types
from pathlib import Path

import pytest

from outbound_pipeline import ledger
from outbound_pipeline import sending as send_loop
from outbound_pipeline.clock import as_utc
from outbound_pipeline.sandbox import SandboxServer
from outbound_pipeline.sending import RateLimiter, limiter_for, pacing, release_limiter
from outbound_pipeline_tests.bulk import (
    bulk_campaign,
    bulk_config,
    ledger_rows,
    statuses,
    write_config,
)
from outbound_pipeline_tests.conftest import (
    DAY,
    Warehouse,
    cli_materialize,
    deliveries_run_config,
    materialize_campaign,
    resources_for,
)

# Senders of this file only: the limiter registry lives as long as the process, and a 10/s ceiling
# left on the suite's usual sender would slow every later test that sends from it.
PACED_SENDER = "+33644646091"
UNIT_SENDERS = ("+33644646092", "+33644646093", "+33644646094")
# Low enough that one call arriving up to 100 ms late (a loaded machine) cannot break the count.
RATE = 10.0
# When the two CLI runs of one sender may send first: both processes have started by then.
COMMON_START_SECONDS = 20.0


def busiest_window(times: list[float], seconds: float = 1.0) -> int:
    """The most events in any half-open window [t, t + seconds) (the busiest one starts at an event)."""
    times = sorted(times)
    best, start = 0, 0
    for end, t in enumerate(times):
        while t - times[start] >= seconds:
            start += 1
        best = max(best, end - start + 1)
    return best


def busiest_second(times: list[float]) -> int:
    return busiest_window(times, 1.0)


# Why +1: calls spaced exactly 1/rate apart put rate + 1 of them in a closed 1 s window (the first
# and the last on its two edges), and a timestamp taken a moment after the call left (transit, thread
# switch) can pull the next one inside. More than that means the pacing itself let calls through early.
def assert_paced(times: list[float], rate: float, jitter_calls: int = 0) -> None:
    """`jitter_calls`: extra calls a 1 s window may show when the timestamps are taken at the far
    end of a socket on a loaded machine (a stalled thread stamps a few calls together)."""
    most = rate + 1 + jitter_calls
    assert busiest_second(times) <= most, f"{busiest_second(times)} calls in one second at {rate}/s"
    # Over three seconds the same jitter weighs a third as much: a limiter even 20% fast fails here.
    assert busiest_window(times, 3.0) <= 3 * rate + 2, (
        f"{busiest_window(times, 3.0)} calls in three seconds at {rate}/s"
    )
    # The run as a whole: n calls need n - 1 intervals; one may be absorbed by the same jitter.
    span = max(times) - min(times)
    assert span >= (len(times) - 2) / rate, f"{len(times)} calls in {span:.2f} s at {rate}/s"


# --- 1. the send step keeps to the campaign's messages/s -----------------------------------------


def test_deliveries_never_exceed_the_campaigns_send_rate(
    small: Warehouse, sandbox: SandboxServer
) -> None:
    config = bulk_config(
        bulk_campaign(
            "paced", where="customer_id <= 'C000090'", sender=PACED_SENDER, max_send_rate=RATE
        )
    )
    resources = resources_for(small, sandbox)
    # Audience and messages first, so the observed run is the send step alone.
    assert materialize_campaign(
        config, "paced", resources, selection=["audience", "messages"]
    ).success
    # Far more workers than the rate: only the limiter stands between them and the API.
    run_config = deliveries_run_config("paced", concurrency=32, batch_size=25)
    started = time.monotonic()
    assert materialize_campaign(
        config, "paced", resources, run_config=run_config, selection=["deliveries"]
    ).success
    elapsed = time.monotonic() - started

    rows = ledger_rows(small.engine, "paced", DAY)
    by_status = statuses(rows)
    accepted = [m for m in sandbox.messages() if m["sender_id"] == PACED_SENDER.lstrip("+")]
    # The run did the whole job: every eligible row sent, none left waiting, so a pipeline that
    # sent little or nothing cannot pass the pacing assertions below.
    assert set(by_status) <= {"sent", "skipped"}, by_status
    assert 50 <= by_status["sent"] == len(accepted), (by_status, len(accepted))
    times = [dt.datetime.fromisoformat(m["received_at"]).timestamp() for m in accepted]
    # Stamped by the sandbox's thread, in this same busy process: a stall there once showed 12.
    assert_paced(times, RATE, jitter_calls=2)
    assert elapsed >= (len(accepted) - 2) / RATE  # client side agrees: no way around the limiter
    # The run ended and its sender's limiter with it: a later run of this process from the same
    # sender goes at its own campaign's rate, not at this one's (a worker once kept 7/s for good).
    assert limiter_for(PACED_SENDER, 1000.0).rate == 1000.0


def _deliveries_cli(
    key: str, config_path: Path, warehouse: Warehouse, sandbox: SandboxServer, home: Path
) -> subprocess.Popen[str]:
    """The dagster CLI sending one campaign's day, in a process of its own."""
    run_config = deliveries_run_config(key, concurrency=16, batch_size=10)
    command, env = cli_materialize(
        f"{key}/deliveries", config_path, warehouse, sandbox, home, run_config
    )
    return subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


# PostgreSQL, the warehouse runs on several machines share (the reservations themselves are tested
# on both backends below); one backend keeps this two-CLI-run test to one run of CI.
@pytest.mark.cli
@pytest.mark.parametrize(
    "warehouse", [pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True
)
def test_two_runs_of_one_sender_in_two_processes_share_its_send_rate(
    small: Warehouse, sandbox: SandboxServer, tmp_path: Path
) -> None:
    # Two campaigns of one sender scheduled at the same time run in two processes (two runs, two
    # pods): together they must keep to the sender's messages/s, not each to all of it.
    campaigns = [
        bulk_campaign(
            "paced_a", where="customer_id <= 'C000070'", sender=PACED_SENDER, max_send_rate=RATE
        ),
        bulk_campaign(
            "paced_b",
            where="customer_id > 'C000070' AND customer_id <= 'C000140'",
            sender=PACED_SENDER,
            max_send_rate=RATE,
        ),
    ]
    config = bulk_config(*campaigns)
    config_path = write_config(tmp_path / "paced.yaml", *campaigns)
    resources = resources_for(small, sandbox)
    for key in ("paced_a", "paced_b"):
        assert materialize_campaign(
            config, key, resources, selection=["audience", "messages"]
        ).success

    # A common start: the sender is held (as a 429 holds it) until both processes surely run, so
    # their sends overlap even when a loaded machine starts one CLI seconds after the other.
    with small.engine.begin() as conn:
        ledger.reserve_send_slots(conn, PACED_SENDER, 0, RATE, time.time() + COMMON_START_SECONDS)
    runs = [
        _deliveries_cli(key, config_path, small, sandbox, tmp_path / f"home_{key}")
        for key in ("paced_a", "paced_b")
    ]
    for run in runs:
        output, _ = run.communicate(timeout=300)
        assert run.returncode == 0, output[-3000:]

    accepted = [m for m in sandbox.messages() if m["sender_id"] == PACED_SENDER.lstrip("+")]
    times = {
        key: [
            dt.datetime.fromisoformat(m["received_at"]).timestamp()
            for m in accepted
            if m["campaign_id"] == config.campaign(key).campaign_id
        ]
        for key in ("paced_a", "paced_b")
    }
    for key in times:
        by_status = statuses(ledger_rows(small.engine, key, DAY))
        assert (
            set(by_status) <= {"sent", "skipped"} and by_status["sent"] == len(times[key]) >= 25
        ), (key, by_status)
    # The two runs sent at the same time (else this test would prove nothing)...
    overlap = min(max(t) for t in times.values()) - max(min(t) for t in times.values())
    assert overlap > 1.0, f"the two runs overlapped for {overlap:.2f} s only"
    # ...and the sender's calls, both runs together, kept to its rate.
    assert_paced(times["paced_a"] + times["paced_b"], RATE, jitter_calls=2)


def _reserve(
    warehouse: Warehouse, count: int, earliest: float, sender: str = PACED_SENDER
) -> float:
    with warehouse.engine.begin() as conn:
        return ledger.reserve_send_slots(conn, sender, count, RATE, earliest)


def test_send_slots_are_reserved_one_after_another_for_every_run_of_the_sender(
    warehouse: Warehouse,
) -> None:
    t = 1_800_000_000.0
    assert _reserve(warehouse, 10, t) == t  # a sender's first claim: its slots start now
    # Another run's claim, made at the same moment: after the 10 slots (1 s at 10/s) already held.
    assert _reserve(warehouse, 5, t) == pytest.approx(t + 1.0)
    # A claim made later than everything reserved starts at its own time: no debt, no burst.
    assert _reserve(warehouse, 1, t + 10) == t + 10
    # Another sender has slots of its own.
    assert _reserve(warehouse, 3, t, sender=UNIT_SENDERS[0]) == t
    # The API said slow down for 30 s: nothing reserved afterwards starts before that.
    _reserve(warehouse, 0, t + 40)
    assert _reserve(warehouse, 2, t + 11) == t + 40
    # A free time further ahead than a slow-down can reach was written by a clock that ran ahead:
    # not waited for (the sender would stop for as long).
    _reserve(warehouse, 0, t + 10 * ledger.PACE_TRUSTED_AHEAD_SECONDS)
    assert _reserve(warehouse, 1, t + 50) == t + 50


def test_claims_of_two_connections_at_once_get_slots_that_do_not_overlap(
    warehouse: Warehouse,
) -> None:
    t = 1_800_000_000.0
    starts: list[float] = []
    barrier = threading.Barrier(4)

    def claim() -> None:
        barrier.wait()
        for _ in range(10):
            starts.append(_reserve(warehouse, 4, t))

    threads = [threading.Thread(target=claim) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # 40 claims of 4 slots: 40 back-to-back stretches of 0.4 s from t, whatever the interleaving.
    assert sorted(starts) == pytest.approx([t + 0.4 * i for i in range(40)])


# --- 2. one limiter per sender, shared by its campaigns ------------------------------------------


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


# --- 3. the pipeline's own pair-rate spacing --------------------------------------------------------


def test_recipient_messaged_by_another_campaign_moments_ago_is_deferred(
    small: Warehouse, sandbox: SandboxServer
) -> None:
    interval = 6  # WhatsApp's ~1 message per 6 s to one user
    config = bulk_config(
        bulk_campaign("morning", where="customer_id <= 'C000080'", min_interval_seconds=interval),
        bulk_campaign(
            "followup",
            where="customer_id > 'C000040' AND customer_id <= 'C000120'",
            min_interval_seconds=interval,
        ),
    )
    # The sandbox does not enforce the pair rate (its default): any spacing seen is the pipeline's.
    t0 = dt.datetime(2026, 11, 24, 8, 0, tzinfo=dt.UTC)

    def run_at(key: str, seconds: float) -> None:
        clock = {"frozen_at": (t0 + dt.timedelta(seconds=seconds)).isoformat()}
        assert materialize_campaign(config, key, resources_for(small, sandbox, **clock)).success

    run_at("morning", 0)
    morning = {
        r.recipient: r for r in ledger_rows(small.engine, "morning", DAY) if r.status == "sent"
    }
    run_at("followup", 2)  # back to back: 2 s later, inside the window
    followup = [r for r in ledger_rows(small.engine, "followup", DAY) if r.status != "skipped"]
    both = [r for r in followup if r.recipient in morning]
    assert len(both) >= 5, "the two audiences should share recipients"
    for row in both:
        # Deferred (not sent, not failed), with its reason and the time it may go.
        assert (row.status, row.reason) == ("deferred", "pair_rate"), (row.status, row.reason)
        assert as_utc(row.not_before) == as_utc(morning[row.recipient].claimed_at) + dt.timedelta(
            seconds=interval
        )
    others = [r for r in followup if r.recipient not in morning]
    assert others and {r.status for r in others} == {"sent"}, "only the shared recipients wait"
    followup_id = config.campaign("followup").campaign_id
    received = {
        f"+{m['recipient_id']}" for m in sandbox.messages() if m["campaign_id"] == followup_id
    }
    assert not received & set(morning), (
        "a recipient got the second message inside the pair-rate window"
    )

    # Once the window has passed, the next run sends them: deferred, not dropped.
    run_at("followup", interval + 1)
    later = {r.recipient: r for r in ledger_rows(small.engine, "followup", DAY)}
    for row in both:
        second = later[row.recipient]
        assert second.status == "sent", (second.status, second.reason)
        assert as_utc(second.sent_at) - as_utc(morning[row.recipient].sent_at) >= dt.timedelta(
            seconds=interval
        )
    per_recipient = [f"+{m['recipient_id']}" for m in sandbox.messages()]
    assert all(per_recipient.count(r.recipient) == 2 for r in both)


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
