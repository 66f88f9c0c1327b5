"""The send loop after a wait: a call that follows a wait (a 429's Retry-After, a retry's backoff, a
slow limiter) checks consent again first, so an opt-out written during the wait is honoured
(invariant 1). The producer claims no more rows than the queue takes; rows given back behind the
claim cursor are still sent.

A stop that holds the workers asleep in a retry or waiting for the limiter: test_send_loop_stops.py.
Errors mid-run: test_send_loop_faults.py.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import threading
import time

import httpx
import sqlalchemy as sa

from outbound_pipeline import ledger
from outbound_pipeline import sending as send_loop
from outbound_pipeline.clock import as_utc
from outbound_pipeline.config import OutboundConfig
from outbound_pipeline.iadvize import (
    IAdvizeClient,
    OutboundMessage,
    SendResult,
    classify_http,
)
from outbound_pipeline.ledger import (
    extra_checks_for,
    halts,
    send_ledger,
    sender_pace,
)
from outbound_pipeline.sandbox import SandboxServer
from outbound_pipeline.sending import SendLoop, SendSettings, SendSummary
from outbound_pipeline_tests.bulk import (
    assert_no_duplicate_messages,
    statuses,
)
from outbound_pipeline_tests.conftest import (
    deliveries_run_config,
    materialize_campaign,
    resources_for,
)
from outbound_pipeline_tests.send_loop_harness import (
    HANG_SECONDS,
    LOG,
    SENDER,
    FakeAPI,
    fake_api,
    in_thread,
    passthrough,
    prepared_day,
    received,
    rows_by_key,
    run_loop,
)
from outbound_pipeline_tests.stores import Warehouse, consent_for

__all__ = ["fake_api"]  # a fixture


# --- 3. consent is checked again after a wait; claims stay within the queue ------------------------


def sending_until_a_429(
    warehouse: Warehouse,
    sandbox: SandboxServer,
    config: OutboundConfig,
    retry_after: float,
    concurrency: int,
) -> tuple[threading.Thread, float]:
    """The day's deliveries in a thread, every call refused with 429 and this Retry-After until the
    test lifts the fault: (the thread, when the first 429 was seen)."""
    sandbox.configure(
        faults={"rate": 1.0, "kinds": ["http_429"], "retry_after_seconds": retry_after}
    )
    resources = resources_for(warehouse, sandbox)
    run_config = deliveries_run_config("faults", concurrency=concurrency, batch_size=10)
    runner = threading.Thread(
        target=lambda: materialize_campaign(
            config, "faults", resources, run_config=run_config, selection=["deliveries"]
        ),
        daemon=True,
    )
    runner.start()
    deadline = time.monotonic() + HANG_SECONDS
    while not sandbox.stats()["faults"].get("http_429"):
        assert time.monotonic() < deadline, "no call was made"
        time.sleep(0.01)
    return runner, time.time()


def test_an_opt_out_written_during_a_retry_wait_stops_the_retry(
    small: Warehouse, sandbox: SandboxServer
) -> None:
    config, plan = prepared_day(small, sandbox, "customer_id <= 'C000040'")
    # Every first call is refused with 429 Retry-After 2 s (a 131057 says a minute): the wait.
    runner, _ = sending_until_a_429(small, sandbox, config, retry_after=2.0, concurrency=4)
    # During the wait every customer of the day opts out, then the API would accept the retries.
    with small.engine.begin() as conn:
        customers = (
            conn.execute(
                sa.select(send_ledger.c.customer_id).where(
                    plan.where(send_ledger), send_ledger.c.status.in_(("pending", "sending"))
                )
            )
            .scalars()
            .all()
        )
        conn.execute(
            sa.text(
                "INSERT INTO whatsapp_consents (customer_id, category, status, updated_at, source) "
                "VALUES (:c, 'order_updates', 'opted_out', :t, 'unsubscribe_link')"
            ),
            [{"c": c, "t": dt.datetime.now(dt.UTC) + dt.timedelta(days=400)} for c in customers],
        )
    sandbox.configure(faults={"rate": 0})
    runner.join(HANG_SECONDS)
    assert not runner.is_alive()

    assert len(customers) >= 10
    assert sandbox.messages() == [], "a retry went out after the recipient opted out"
    rows = rows_by_key(small)
    refused_once = [r for r in rows.values() if r.customer_id in customers]
    assert {(r.status, r.reason) for r in refused_once} == {
        ("skipped", "consent_withdrawn_before_send")
    }


def test_a_429_holds_the_senders_slots_for_every_run_of_it(
    small: Warehouse, sandbox: SandboxServer
) -> None:
    # The API's "slow down" is about the sender number, not this process: a run of another campaign
    # of the same number, on another machine, must not reserve slots inside the Retry-After.
    config, _ = prepared_day(small, sandbox, "customer_id <= 'C000040'")
    runner, refused_at = sending_until_a_429(small, sandbox, config, retry_after=3.0, concurrency=2)
    held: float | None = None
    # Read while the run still waits out the Retry-After (its retries then take slots after it).
    while held is None or held < refused_at + 2.5:
        assert time.time() < refused_at + 2.0, (
            f"no hold of the sender during the Retry-After (free from {held})"
        )
        time.sleep(0.02)
        with small.engine.connect() as conn:
            held = conn.execute(
                sa.select(sender_pace.c.next_free_slot).where(sender_pace.c.sender == SENDER)
            ).scalar()
    sandbox.configure(faults={"rate": 0})
    runner.join(HANG_SECONDS)
    assert not runner.is_alive()
    assert held <= refused_at + 3.5
    assert {r.status for r in rows_by_key(small).values()} <= {"sent", "skipped"}


def test_a_call_held_up_past_its_slot_takes_a_new_one_instead_of_crowding_another_runs(
    small: Warehouse, sandbox: SandboxServer
) -> None:
    _, plan = prepared_day(small, sandbox, "customer_id <= 'C000040'")
    rate = 10.0
    other: list[float] = []

    async def send_then_stall(real: IAdvizeClient, message: OutboundMessage) -> SendResult:
        result = await real.send(message)
        # Another run of the sender claims while this process stalls (a long synchronous step): its
        # slots follow the ones this run holds, which pass meanwhile.
        with small.engine.begin() as conn:
            other.append(ledger.reserve_send_slots(conn, SENDER, 20, rate, time.time()))
        time.sleep(1.5)
        return result

    settings = SendSettings(concurrency=2, batch_size=10, rate_per_second=rate)
    outcome, _ = run_loop(small, sandbox, plan, [send_then_stall], settings)

    assert isinstance(outcome, SendSummary), outcome
    times = [dt.datetime.fromisoformat(m["received_at"]).timestamp() for m in sandbox.messages()]
    assert outcome.statuses["sent"] == len(times) >= 10
    start, end = other[0], other[0] + 20 / rate
    assert start < min(times) + 1.0, (
        "the other run's slots should start while this run still held some"
    )
    # The calls whose slots passed during the stall did not go late, into the other run's slots.
    assert not [t for t in times if start <= t < end], (start, end, sorted(times))


def test_a_retry_after_of_an_hour_stops_the_campaign_until_then_instead_of_holding_the_run(
    small: Warehouse, sandbox: SandboxServer
) -> None:
    # Waited out in the run, it held the claimed rows and the run itself for an hour.
    config, _ = prepared_day(small, sandbox, "customer_id <= 'C000040'")
    sandbox.configure(faults={"rate": 1.0, "kinds": ["http_429"], "retry_after_seconds": 3600.0})
    resources = resources_for(small, sandbox)
    run_config = deliveries_run_config("faults", concurrency=4, batch_size=10)
    before = dt.datetime.now(dt.UTC)
    result = in_thread(
        lambda: materialize_campaign(
            config,
            "faults",
            resources,
            run_config=run_config,
            selection=["deliveries"],
            raise_on_error=False,
        ),
        timeout=30,
    )
    assert not result.success  # a stop fails the step loudly, as the other stops do
    assert sandbox.messages() == []
    rows = rows_by_key(small).values()
    # The refused row and those claimed with it wait for the halt's end; the rest were never claimed.
    assert {r.status for r in rows} <= {"deferred", "skipped", "pending"} and any(
        r.status == "deferred" for r in rows
    )
    with small.engine.connect() as conn:
        halt = conn.execute(sa.select(halts)).one()
    assert halt.scope == "campaign:faults" and "rate_limited_retry_after (429)" in halt.reason
    assert (
        before + dt.timedelta(minutes=59)
        <= as_utc(halt.until)
        <= dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)
    )


def test_a_retry_that_would_fall_in_quiet_hours_waits_for_them_to_end(
    small: Warehouse, sandbox: SandboxServer
) -> None:
    # Quiet hours are checked at the claim; a retry after a wait (here a 429's Retry-After, or
    # 131057's minute) must check them again, like consent.
    config, plan = prepared_day(
        small,
        sandbox,
        "customer_id <= 'C000040'",
        quiet_hours={"start_hour": 9, "end_hour": 20, "timezone": "UTC"},
    )
    clock = [dt.datetime(2026, 11, 24, 19, 59, 58, tzinfo=dt.UTC)]

    async def refused_then_evening(real: IAdvizeClient, message: OutboundMessage) -> SendResult:
        clock[0] = dt.datetime(
            2026, 11, 24, 20, 0, 1, tzinfo=dt.UTC
        )  # quiet hours began during the wait
        return SendResult(classify_http(429, httpx.Headers({"retry-after": "1.2"})))  # type: ignore[arg-type]

    settings = SendSettings(concurrency=1, batch_size=1, rate_per_second=None)
    outcome, script = run_loop(
        small,
        sandbox,
        plan,
        [refused_then_evening],
        settings,
        now=lambda: clock[0],
        extra_checks=extra_checks_for(config.campaign("faults")),
    )

    assert isinstance(outcome, SendSummary), outcome
    assert len(script.calls) == 1 and sandbox.messages() == [], "a call went out in quiet hours"
    row = rows_by_key(small)[script.calls[0]]
    assert (row.status, row.reason) == ("deferred", "quiet_hours:UTC")
    assert as_utc(row.not_before) == dt.datetime(2026, 11, 25, 9, tzinfo=dt.UTC)


def test_the_producer_claims_no_more_rows_than_the_queue_takes(
    small: Warehouse, sandbox: SandboxServer
) -> None:
    _, plan = prepared_day(small, sandbox, "customer_id <= 'C000300'")
    sandbox.configure(latency_ms=5)  # workers slower than claims: the producer is always ahead
    settings = SendSettings(concurrency=2, batch_size=50, rate_per_second=None)
    outcome, script = run_loop(small, sandbox, plan, [], settings)

    assert isinstance(outcome, SendSummary), outcome
    assert outcome.statuses["sent"] == len(script.calls) >= 100
    # Claimed but not yet called: the queue and the workers' hands, never a batch more besides.
    most = send_loop.claim_ahead(settings) + settings.concurrency
    assert max(script.claimed_ahead) <= most, (max(script.claimed_ahead), most)


def test_rows_another_run_gives_back_behind_the_claim_cursor_are_sent_before_the_loop_ends(
    small: Warehouse, sandbox: SandboxServer
) -> None:
    # Claims read on from the last key claimed. Rows before that key that become claimable during
    # the run (another run stopped and released them) must not be left for a later run.
    _, plan = prepared_day(small, sandbox, "customer_id <= 'C000150'")
    d = send_ledger.c
    now = dt.datetime.now(dt.UTC)
    with small.engine.begin() as conn:
        held = (
            conn.execute(
                sa.select(d.delivery_key)
                .where(plan.where(send_ledger), d.status == "pending")
                .order_by(d.delivery_key)
                .limit(5)
            )
            .scalars()
            .all()
        )
        ledger.register_sender(conn, "other-run-token", plan, "other-run", now)
        conn.execute(
            sa.update(send_ledger)
            .where(plan.where(send_ledger), d.delivery_key.in_(held))
            .values(
                status="sending", claim_token="other-run-token", claimed_at=now, run_id="other-run"
            )
        )

    async def other_run_stops_and_releases(
        real: IAdvizeClient, message: OutboundMessage
    ) -> SendResult:
        with small.engine.begin() as conn:
            released = ledger.release_claims(
                conn, plan, "other-run-token", "not_sent:cancelled", dt.datetime.now(dt.UTC), None
            )
            ledger.heartbeat(conn, "other-run-token", dt.datetime.now(dt.UTC), finished=True)
        assert released == len(held)
        return await real.send(message)

    settings = SendSettings(concurrency=4, batch_size=10, rate_per_second=None)
    # By the 40th call the claims have read well past the held rows, which come first by key.
    outcome, script = run_loop(
        small, sandbox, plan, [passthrough] * 39 + [other_run_stops_and_releases], settings
    )

    assert isinstance(outcome, SendSummary), outcome
    assert all(key in received(sandbox) and script.calls.count(key) == 1 for key in held)
    rows = rows_by_key(small)
    assert {rows[key].status for key in held} == {"sent"}
    assert not [r for r in rows.values() if r.status in ("pending", "sending", "deferred")]
    assert_no_duplicate_messages(sandbox.messages())


def test_rows_interrupted_during_the_login_are_deferred_not_unknown(
    small: Warehouse, sandbox: SandboxServer, fake_api: FakeAPI
) -> None:
    # No message goes with a login: an interrupt (Ctrl-C, a terminated run) that finds every worker
    # waiting for it leaves rows for the next run, not `unknown` rows that need an operator.
    _, plan = prepared_day(small, sandbox, "customer_id <= 'C000060'")
    fake_api.login_seconds = 1.0
    settings = SendSettings(concurrency=4, batch_size=10, rate_per_second=None)

    async def main() -> SendSummary:
        async with fake_api.resource().client(max_connections=4) as client:
            loop = SendLoop(
                small.engine,
                plan,
                client,
                lambda: dt.datetime.now(dt.UTC),
                "run-1",
                settings,
                LOG,
                consent=consent_for(small, plan),
            )
            asyncio.get_running_loop().call_later(0.3, loop.interrupt)
            return await loop.run()

    outcome = in_thread(lambda: asyncio.run(main()))
    assert isinstance(outcome, SendSummary) and outcome.stopped == send_loop.INTERRUPTED, outcome
    rows = rows_by_key(small)
    deferred = [r for r in rows.values() if r.status == "deferred"]
    assert deferred and {r.reason for r in deferred} == {"not_sent:interrupted"}
    assert {r.status for r in rows.values()} <= {"pending", "deferred", "skipped"}, statuses(
        list(rows.values())
    )
    assert {r.attempts for r in deferred} == {0}
