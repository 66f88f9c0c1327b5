"""At most once, nothing lost, consent at the last moment, limits held: under faults, crashes, races."""

from __future__ import annotations

import datetime as dt
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from outbound_pipeline.clock import ClockResource
from outbound_pipeline.config import OutboundConfig
from outbound_pipeline.iadvize import login_count
from outbound_pipeline.ledger import active_halt, clear_halt, quota_usage, send_ledger, set_halt
from outbound_pipeline.warehouse import messages
from outbound_pipeline_tests.bulk import (
    assert_no_duplicate_messages,
    assert_one_outcome_per_audience_row,
    bulk_campaign,
    bulk_config,
    ledger_rows,
    signal_when,
    statuses,
    write_config,
)
from outbound_pipeline_tests.conftest import (
    DAY,
    DemoCopies,
    Warehouse,
    cli_materialize,
    deliveries_run_config,
    materialize_campaign,
    resources_for,
    seeded_postgres_warehouse,
    send_calls,
)

# About 800 audience rows, some 450 eligible: enough to catch a run in the middle of sending.
SMALL = "customer_id < 'C000800'"
FAULT_KINDS = [
    "http_429",
    "http_500",
    "http_502",
    "http_504",
    "timeout_after_receive",
    "drop_after_accept",
    "wa_130429",
    "wa_131000",
    "wa_131056",
    "wa_131026",
    "expired_token",
]


@pytest.fixture
def big(warehouse: Warehouse, demo_copies: DemoCopies) -> Warehouse:
    return demo_copies.seed(warehouse, customers=2500)


def _recipients(messages: list[dict]) -> set[str]:
    return {m["recipient_id"] for m in messages}


def _sent_count(engine: sa.Engine, key: str) -> int:
    with engine.connect() as conn:
        return conn.execute(
            sa.select(sa.func.count()).where(
                send_ledger.c.campaign_key == key, send_ledger.c.status.in_(("sent", "sending"))
            )
        ).scalar_one()


def test_faults_never_duplicate_nor_lose_and_reruns_finish_the_job(big, sandbox) -> None:
    # 800 customers (about 500 to send): every kind of fault still drawn dozens of times, in a
    # third of the time of the whole 2,500 (under CI's four workers it took minutes).
    config = bulk_config(bulk_campaign("bulk", where=SMALL))
    sandbox.configure(
        faults={
            "rate": 0.2,
            "kinds": FAULT_KINDS,
            "seed": 7,
            "retry_after_seconds": 0.05,
            "hang_seconds": 1.5,
            # A refused token is logged in again within the user's shared login budget (8 a
            # minute): refusing every token older than a second would make the runs wait for
            # login slots, not test what they send.
            "min_token_age_seconds": 15,
        }
    )
    run_config = deliveries_run_config("bulk", concurrency=32, max_attempts=3)
    resources = resources_for(big, sandbox, timeout_seconds=0.75)
    assert materialize_campaign(config, "bulk", resources, run_config=run_config).success
    first = statuses(ledger_rows(big.engine, "bulk", DAY))
    assert first["sent"] > 0 and (first["failed"] + first["deferred"]) > 0, first

    # Re-runs, the clock moved on a minute each time so deferred rows come due.
    for minute in range(1, 8):
        resources["clock"] = ClockResource(offset_seconds=60.0 * minute)
        assert materialize_campaign(config, "bulk", resources, run_config=run_config).success
        rows = ledger_rows(big.engine, "bulk", DAY)
        if not any(r.status == "deferred" or (r.status == "failed" and r.retryable) for r in rows):
            break
    messages = sandbox.messages()
    assert_no_duplicate_messages(messages)
    rows = assert_one_outcome_per_audience_row(big.engine, "bulk", DAY)
    received = {f"+{m['recipient_id']}" for m in messages}
    by_status = statuses(rows)
    assert by_status["unknown"] > 0, "timeouts and dropped connections must surface as unknown"
    for row in rows:
        if row.status == "sent":
            assert row.recipient in received and row.message_id
        elif row.status == "failed":
            assert row.error_code == "131026" and not row.retryable, (row.reason, row.error_code)
        elif row.status == "unknown":
            # Accepted then the answer was lost, or never known: never resent either way.
            assert row.attempts >= 1
        else:
            assert row.status == "skipped", (row.status, row.reason)
    sent_or_unknown = {r.recipient for r in rows if r.status in ("sent", "unknown")}
    assert received <= sent_or_unknown
    calls = sandbox.stats()["graphql_calls"]
    assert sum(r.attempts for r in rows) >= len(received)
    assert calls >= sum(r.attempts for r in rows) - by_status["unknown"]

    # An operator may resend the unknown ones explicitly; that is recorded on the row.
    unknown = {r.delivery_key for r in rows if r.status == "unknown"}
    sandbox.configure(faults={"rate": 0})
    resend = deliveries_run_config("bulk", resend_unknown=True)
    # No fault now: the usual timeout, so a loaded machine's slow answer is not one more unknown.
    resources = {**resources_for(big, sandbox), "clock": resources["clock"]}
    assert materialize_campaign(config, "bulk", resources, run_config=resend).success
    after = {r.delivery_key: r for r in ledger_rows(big.engine, "bulk", DAY)}
    assert all(after[k].status == "sent" and after[k].resend_requested_by for k in unknown)


def test_two_concurrent_runs_of_one_partition_never_send_a_row_twice(big, sandbox) -> None:
    config = bulk_config(bulk_campaign("bulk", where=SMALL))
    # Slow enough calls that the two runs are sending at the same time.
    sandbox.configure(latency_ms=30)
    resources = resources_for(big, sandbox)
    run_config = deliveries_run_config("bulk", concurrency=4, batch_size=10)
    # The audience and its messages exist before the two runs race for the same pending rows.
    materialize_campaign(config, "bulk", resources, selection=["audience", "messages"])
    results: list[bool] = []

    def run() -> None:
        result = materialize_campaign(
            config,
            "bulk",
            resources,
            run_config=run_config,
            raise_on_error=False,
            selection=["deliveries", "report"],
        )
        results.append(result.success)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [True, True]
    assert_no_duplicate_messages(sandbox.messages())
    rows = assert_one_outcome_per_audience_row(big.engine, "bulk", DAY)
    assert statuses(rows)["sent"] == len(sandbox.messages())
    # Both runs did part of the work: the database, not one process, decided who owns a row.
    assert len({r.run_id for r in rows if r.status == "sent"}) == 2


def test_opt_out_written_while_sending_is_honoured(big, sandbox) -> None:
    config = bulk_config(bulk_campaign("bulk", where=SMALL))
    sandbox.configure(latency_ms=20)
    resources = resources_for(big, sandbox)
    run_config = deliveries_run_config("bulk", concurrency=2, batch_size=10)
    done: list[bool] = []
    runner = threading.Thread(
        target=lambda: done.append(
            materialize_campaign(config, "bulk", resources, run_config=run_config).success
        )
    )
    runner.start()
    deadline = time.monotonic() + 60
    while _sent_count(big.engine, "bulk") < 30:
        assert time.monotonic() < deadline, "the run did not start sending"
        time.sleep(0.05)
    with big.engine.begin() as conn:
        # Customers whose rows are not yet claimed: an opt-out now must stop their message.
        pending = conn.execute(
            sa.select(send_ledger.c.customer_id, send_ledger.c.recipient)
            .where(send_ledger.c.campaign_key == "bulk", send_ledger.c.status == "pending")
            .order_by(send_ledger.c.delivery_key.desc())
            .limit(15)
        ).all()
        conn.execute(
            sa.text(
                "INSERT INTO whatsapp_consents (customer_id, category, status, updated_at, source) "
                "VALUES (:c, 'order_updates', 'opted_out', :t, 'unsubscribe_link')"
            ),
            [
                {"c": row.customer_id, "t": dt.datetime.now(dt.UTC) + dt.timedelta(days=400)}
                for row in pending
            ],
        )
    runner.join()
    assert done == [True]
    assert len(pending) == 15
    opted_out = {row.recipient for row in pending}
    received = {f"+{m['recipient_id']}" for m in sandbox.messages()}
    assert not (opted_out & received)
    by_key = {r.recipient: r for r in ledger_rows(big.engine, "bulk", DAY)}
    assert {by_key[p].reason for p in opted_out} == {"consent_withdrawn_before_send"}


def test_a_retryable_failure_whose_phone_was_reformatted_keeps_one_outcome(big, sandbox) -> None:
    config = bulk_config(bulk_campaign("bulk", where="customer_id < 'C000100'"))
    resources = resources_for(big, sandbox)
    sandbox.configure(faults={"rate": 1.0, "kinds": ["http_500"]})
    materialize_campaign(
        config, "bulk", resources, run_config=deliveries_run_config("bulk", max_attempts=1)
    )
    failed = [r for r in ledger_rows(big.engine, "bulk", DAY) if r.status == "failed"]
    assert failed and all(r.retryable for r in failed)
    # The brand reformats one customer's phone: same number, so a new audience row for it.
    target = failed[0]
    spaced = f"{target.recipient[:3]} {target.recipient[3]} {target.recipient[4:6]} {target.recipient[6:8]} {target.recipient[8:10]} {target.recipient[10:]}"
    with big.engine.begin() as conn:
        conn.execute(
            sa.text("UPDATE customers SET phone = :p WHERE customer_id = :c"),
            {"p": spaced, "c": target.customer_id},
        )
    sandbox.configure(faults={"rate": 0})
    assert materialize_campaign(config, "bulk", resources).success
    rows = assert_one_outcome_per_audience_row(big.engine, "bulk", DAY)
    mine = [r for r in rows if r.customer_id == target.customer_id]
    assert [(r.status, r.recipient) for r in mine] == [("sent", target.recipient)]
    assert_no_duplicate_messages(sandbox.messages())


def test_a_customer_sent_on_one_phone_is_not_sent_on_another_when_a_rerun_reorders_the_query(
    big, sandbox
) -> None:
    where = "customer_id < 'C000100'"
    resources = resources_for(big, sandbox)
    materialize_campaign(
        bulk_config(bulk_campaign("bulk", where=where)), "bulk", resources, selection=["audience"]
    )
    with big.engine.connect() as conn:
        customer = conn.execute(
            sa.text(
                "SELECT customer_id FROM outbound_audience WHERE campaign_key = 'bulk' AND eligible ORDER BY row_number LIMIT 1"
            )
        ).scalar_one()
    other_phone = "+33699000001"

    def config_ordered(direction: str):  # type: ignore[no-untyped-def]
        # The customer comes back with a second phone; which row comes first decides which phone
        # is eligible (the other is duplicate_customer).
        sql = (
            "SELECT customer_id, phone, country, first_name FROM ("
            f"SELECT customer_id, phone, country, first_name, 1 AS pref FROM customers WHERE {where} "
            f"UNION ALL SELECT customer_id, '{other_phone}', country, first_name, 2 FROM customers WHERE customer_id = '{customer}'"
            f") q ORDER BY customer_id, pref {direction}"
        )
        return bulk_config(bulk_campaign("bulk", audience_sql=sql))

    assert materialize_campaign(config_ordered("ASC"), "bulk", resources).success
    first_phone = {
        r.recipient
        for r in ledger_rows(big.engine, "bulk", DAY)
        if r.customer_id == customer and r.status == "sent"
    }
    assert len(first_phone) == 1 and other_phone not in first_phone
    # The day is still open: one customer was not sent yet (deferred until tomorrow, say).
    # A re-run's query puts the other phone first.
    with big.engine.begin() as conn:
        conn.execute(
            sa.update(send_ledger)
            .where(
                send_ledger.c.campaign_key == "bulk",
                send_ledger.c.status == "sent",
                send_ledger.c.customer_id != customer,
            )
            .values(
                status="deferred",
                reason="marketing_cap",
                not_before=dt.datetime.now(dt.UTC) + dt.timedelta(days=1),
            )
        )
    sandbox.reset()
    assert materialize_campaign(config_ordered("DESC"), "bulk", resources).success
    assert sandbox.messages() == []
    rows = assert_one_outcome_per_audience_row(big.engine, "bulk", DAY)
    mine = {r.recipient: (r.status, r.reason) for r in rows if r.customer_id == customer}
    assert mine[next(iter(first_phone))][0] == "sent"
    assert mine[other_phone] == ("skipped", "duplicate_customer:already_handled_today")


def test_a_send_from_a_half_written_day_refuses_instead_of_dropping_the_rows_left_to_send(
    big, sandbox
) -> None:
    config = bulk_config(bulk_campaign("bulk", where="customer_id < 'C000100'"))
    resources = resources_for(big, sandbox)
    assert materialize_campaign(config, "bulk", resources).success
    later = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)
    with big.engine.begin() as conn:
        deferred = conn.execute(
            sa.select(send_ledger.c.row_key)
            .where(send_ledger.c.campaign_key == "bulk", send_ledger.c.status == "sent")
            .limit(1)
        ).scalar_one()
        conn.execute(
            sa.update(send_ledger)
            .where(send_ledger.c.row_key == deferred)
            .values(status="deferred", reason="pair_rate_limit", not_before=later)
        )
        # A messages step stopped after its delete and part of its writes: the deferred row's
        # message is among the missing.
        conn.execute(
            sa.delete(messages).where(
                messages.c.campaign_key == "bulk", messages.c.row_key <= deferred
            )
        )
    before = ledger_rows(big.engine, "bulk", DAY)
    sandbox.reset()

    # What the deferred-retry job runs: the send and the report only.
    result = materialize_campaign(
        config, "bulk", resources, raise_on_error=False, selection=["deliveries", "report"]
    )
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure)
    assert "audience and messages do not match" in failure.step_failure_data.error.to_string()
    assert sandbox.messages() == []
    assert sorted(map(tuple, ledger_rows(big.engine, "bulk", DAY))) == sorted(map(tuple, before))

    # The daily job writes the day again and sends the deferred row, and only it.
    assert materialize_campaign(config, "bulk", resources).success
    assert len(sandbox.messages()) == 1
    rows = assert_one_outcome_per_audience_row(big.engine, "bulk", DAY)
    assert next(r for r in rows if r.row_key == deferred).status == "sent"


ACME = {"scope": "portfolio", "portfolio": "acme", "tier": "250"}


def _two_campaigns_sharing_a_limit_of_250(first_where: str, *others: dict) -> OutboundConfig:
    return bulk_config(
        bulk_campaign("first", where=first_where, messaging_limit=ACME),
        bulk_campaign(
            "second",
            where="customer_id >= 'C001000' AND customer_id < 'C002000'",
            messaging_limit=ACME,
        ),
        *others,
    )


def test_messaging_limit_shared_by_two_campaigns_defers_the_rest_until_the_window_moves(
    big, sandbox
) -> None:
    config = _two_campaigns_sharing_a_limit_of_250("customer_id < 'C001000'")
    resources = resources_for(big, sandbox, frozen_at="2026-11-24T08:00:00+00:00")
    for key in ("first", "second"):
        assert materialize_campaign(config, key, resources).success
    rows = ledger_rows(big.engine, "first", DAY) + ledger_rows(big.engine, "second", DAY)
    eligible = [r for r in rows if r.status != "skipped"]
    assert len(eligible) > 250
    # The limit counts unique recipients: a phone shared by customers of both campaigns counts once.
    assert len(_recipients(sandbox.messages())) == 250
    assert len({r.recipient for r in rows if r.status == "sent"}) == 250
    deferred = [r for r in rows if r.status == "deferred"]
    assert len(deferred) == len(eligible) - statuses(rows)["sent"]
    assert {r.reason for r in deferred} == {"messaging_limit"}

    # Same day, an hour later: the window has not moved, nothing more goes out.
    resources["clock"] = ClockResource(frozen_at="2026-11-24T09:00:00+00:00")
    for key in ("first", "second"):
        assert materialize_campaign(config, key, resources).success
    assert len(_recipients(sandbox.messages())) == 250

    # A day later the first 250 left the window: the deferred rows go out, up to the limit again.
    resources["clock"] = ClockResource(frozen_at="2026-11-25T08:01:00+00:00")
    for key in ("first", "second"):
        assert materialize_campaign(config, key, resources).success
    messages = sandbox.messages()
    assert_no_duplicate_messages(messages)
    assert len(_recipients(messages)) == min(len({r.recipient for r in eligible}), 500)


def test_contacts_from_before_the_usage_counts_still_count_against_the_messaging_limit(
    big, sandbox
) -> None:
    # A claim far from the limit trusts the scope's hourly counts instead of counting the ledger. A
    # ledger written before those counts existed (or whose counts are gone) has contacts they lack:
    # the first claim must count them from the ledger, not take the scope for unused.
    config = _two_campaigns_sharing_a_limit_of_250("customer_id < 'C000400'")
    resources = resources_for(big, sandbox, frozen_at="2026-11-24T08:00:00+00:00")
    assert materialize_campaign(config, "first", resources).success
    first = {m["recipient_id"] for m in sandbox.messages()}
    assert 100 < len(first) < 250
    with big.engine.begin() as conn:
        assert conn.execute(sa.delete(quota_usage)).rowcount > 0
    resources["clock"] = ClockResource(frozen_at="2026-11-24T09:00:00+00:00")
    assert materialize_campaign(config, "second", resources).success
    assert len(_recipients(sandbox.messages())) == 250
    with big.engine.connect() as conn:
        counted = conn.execute(sa.select(sa.func.sum(quota_usage.c.claims))).scalar_one()
    assert counted >= 250


def test_a_clock_that_ran_ahead_then_came_back_does_not_lift_the_messaging_limit(
    big, sandbox
) -> None:
    # A run with its clock weeks ahead (a skewed host, a clock override) prunes the scope's real
    # hourly counts and counts in a future hour. Back on time, those counts must not be trusted.
    tiny = bulk_campaign(
        "tiny", where="customer_id >= 'C000400' AND customer_id < 'C000420'", messaging_limit=ACME
    )
    config = _two_campaigns_sharing_a_limit_of_250("customer_id < 'C000400'", tiny)
    resources = resources_for(big, sandbox, frozen_at="2026-11-24T08:00:00+00:00")
    assert materialize_campaign(config, "first", resources).success
    resources["clock"] = ClockResource(frozen_at="2027-01-05T08:00:00+00:00")
    assert materialize_campaign(config, "tiny", resources).success
    ahead = len(_recipients(sandbox.messages()))
    resources["clock"] = ClockResource(frozen_at="2026-11-24T09:00:00+00:00")
    assert materialize_campaign(config, "second", resources).success
    # Seen from 09:00, every one of those contacts is within the last 24 h: the limit is reached.
    assert ahead >= 250
    assert len(_recipients(sandbox.messages())) == ahead, "sent beyond the limit"


def test_contacts_an_older_version_made_without_counting_still_count_against_the_limit(
    big, sandbox
) -> None:
    # A run of a version from before the hourly counts (a rollback, a rolling deploy) contacts
    # recipients after the last counted claim: the counts no longer cover the window.
    config = _two_campaigns_sharing_a_limit_of_250("customer_id < 'C000100'")
    resources = resources_for(big, sandbox, frozen_at="2026-11-24T08:00:00+00:00")
    assert materialize_campaign(config, "first", resources).success
    first = len(_recipients(sandbox.messages()))
    # Few counted, so a batch of the second campaign would fit by the counts alone.
    assert 0 < first < 100
    uncounted = 250 - first + 10
    at = dt.datetime(2026, 11, 24, 8, 30, tzinfo=dt.UTC)
    with big.engine.begin() as conn:
        conn.execute(
            sa.insert(send_ledger),
            [
                {
                    "campaign_key": "legacy",
                    "partition_date": DAY,
                    "delivery_key": f"+3361000{n:04d}",
                    "row_key": f"legacy-{n}",
                    "recipient": f"+3361000{n:04d}",
                    "limit_scope": "portfolio:acme",
                    "status": "sent",
                    "reason": "accepted",
                    "attempts": 1,
                    "claimed_at": at,
                    "sent_at": at,
                }
                for n in range(uncounted)
            ],
        )
    resources["clock"] = ClockResource(frozen_at="2026-11-24T09:00:00+00:00")
    assert materialize_campaign(config, "second", resources).success
    assert len(_recipients(sandbox.messages())) == first, "the limit was already reached"


def test_a_claim_far_from_the_messaging_limit_does_not_count_the_days_contacts(
    big, sandbox
) -> None:
    # Counting the scope's distinct recipients reads every contact of the last 24 h: done at every
    # claim, a day of N sends costs N^2 / batch row reads. Far from the limit, it is done only once.
    config = bulk_config(
        bulk_campaign("bulk", where=SMALL, messaging_limit={"scope": "sender", "tier": "100K"})
    )
    statements: list[str] = []

    def record(conn, cursor, statement, parameters, context, executemany) -> None:  # type: ignore[no-untyped-def]
        statements.append(statement)

    # On the Engine class: the run opens its own engine on the warehouse.
    sa.event.listen(sa.Engine, "before_cursor_execute", record)
    try:
        run_config = deliveries_run_config("bulk", batch_size=20)
        assert materialize_campaign(
            config, "bulk", resources_for(big, sandbox), run_config=run_config
        ).success
    finally:
        sa.event.remove(sa.Engine, "before_cursor_execute", record)
    sent = statuses(ledger_rows(big.engine, "bulk", DAY))["sent"]
    claims = [s for s in statements if s.startswith("INSERT INTO outbound_quota_scopes")]
    counts = [s for s in statements if "count(DISTINCT outbound_ledger.recipient)" in s]
    assert sent > 200 and len(claims) >= sent / 20
    # The scope's first claim counts its contacts twice: to decide, and to start the hourly counts.
    assert len(counts) <= 2, len(counts)


def test_token_expiring_mid_run_triggers_exactly_one_relogin(big, sandbox) -> None:
    config = bulk_config(bulk_campaign("bulk", where=SMALL))
    sandbox.configure(latency_ms=10)
    resources = resources_for(big, sandbox)
    run_config = deliveries_run_config("bulk", concurrency=16)
    done: list[bool] = []
    runner = threading.Thread(
        target=lambda: done.append(
            materialize_campaign(config, "bulk", resources, run_config=run_config).success
        )
    )
    runner.start()
    deadline = time.monotonic() + 60
    while _sent_count(big.engine, "bulk") < 50:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    logins_before = sandbox.stats()["logins"]
    sandbox.expire_tokens()
    runner.join()
    assert done == [True]
    assert sandbox.stats()["logins"] == logins_before + 1
    rows = assert_one_outcome_per_audience_row(big.engine, "bulk", DAY)
    assert statuses(rows)["sent"] == len(sandbox.messages())
    assert not [r for r in rows if r.status == "failed"]
    assert login_count() >= 2


def test_a_halt_never_weakens_the_one_in_force(seeded) -> None:
    now = dt.datetime(2026, 11, 24, 8, tzinfo=dt.UTC)
    minutes = lambda n: now + dt.timedelta(minutes=n)  # noqa: E731
    with seeded.engine.begin() as conn:
        # A refusal (no end) then a pause: other workers' logins answered 429 meanwhile.
        set_halt(conn, "all", "account_blocked_or_locked (368)", "r1", now, None)
        set_halt(conn, "all", "iadvize_unavailable: login answered HTTP 429", "r1", now, minutes(5))
        assert (
            active_halt(conn, "any", minutes(60))
            == "all: account_blocked_or_locked (368) (until an operator clears it)"
        )
        clear_halt(conn, "all")
        # A longer pause stays; a stronger halt replaces it; so does any halt once it has ended.
        set_halt(conn, "all", "long pause", "r1", now, minutes(30))
        set_halt(conn, "all", "short pause", "r2", now, minutes(5))
        assert (
            active_halt(conn, "any", minutes(10))
            == "all: long pause (until 2026-11-24 08:30:00 UTC)"
        )
        set_halt(conn, "all", "refused", "r3", minutes(1), None)
        assert active_halt(conn, "any", minutes(60)) == "all: refused (until an operator clears it)"
        clear_halt(conn, "all")
        set_halt(conn, "all", "first pause", "r1", now, minutes(5))
        set_halt(conn, "all", "next pause", "r2", minutes(6), minutes(8))
        assert (
            active_halt(conn, "any", minutes(7))
            == "all: next pause (until 2026-11-24 08:08:00 UTC)"
        )


def test_account_blocked_stops_everything_and_fails_loudly(big, sandbox) -> None:
    config = bulk_config(bulk_campaign("bulk", where=SMALL))
    sandbox.configure(faults={"rate": 1.0, "kinds": ["wa_368"], "seed": 1})
    resources = resources_for(big, sandbox)
    result = materialize_campaign(config, "bulk", resources, raise_on_error=False)
    assert not result.success
    rows = ledger_rows(big.engine, "bulk", DAY)
    assert not sandbox.messages()
    assert statuses(rows)["sent"] == 0 and statuses(rows)["deferred"] > 0
    # Until an operator clears it, no run sends, even once the API is healthy again.
    sandbox.configure(faults={"rate": 0})
    calls = send_calls(sandbox)
    assert not materialize_campaign(config, "bulk", resources, raise_on_error=False).success
    assert send_calls(sandbox) == calls
    with big.engine.begin() as conn:
        clear_halt(conn, "all")
    assert materialize_campaign(config, "bulk", resources).success
    rows = assert_one_outcome_per_audience_row(big.engine, "bulk", DAY)
    received = {f"+{m['recipient_id']}" for m in sandbox.messages()}
    assert received and received <= {r.recipient for r in rows if r.status in ("sent", "unknown")}


CLI_CONCURRENCY = 4


# The campaign of the CLI runs, written to the configuration file the command reads and given to
# the reruns in this process.
CLI_CAMPAIGN = bulk_campaign("bulk", where=SMALL)


def _cli_run_config() -> dict[str, Any]:
    return deliveries_run_config("bulk", concurrency=CLI_CONCURRENCY, batch_size=10)


def _cli_materialize(big, sandbox, tmp_path: Path) -> tuple[list[str], dict[str, str]]:  # type: ignore[no-untyped-def]
    """The dagster CLI command and environment that materialise the bulk campaign's day."""
    config_path = write_config(tmp_path / "bulk.yaml", CLI_CAMPAIGN)
    return cli_materialize(
        "group:bulk", config_path, big, sandbox, tmp_path / "dagster_home", _cli_run_config()
    )


def _rerun(big, sandbox) -> None:  # type: ignore[no-untyped-def]
    """The same day's run again, in this process: only the run killed or interrupted needs a
    process of its own (a dagster process costs about 6 s of CPU)."""
    resources = resources_for(big, sandbox)
    run_config = _cli_run_config()
    assert materialize_campaign(
        bulk_config(CLI_CAMPAIGN), "bulk", resources, run_config=run_config
    ).success


def _signal_mid_send(
    big, command: list[str], env: dict[str, str], sig: signal.Signals, after_sent: int
) -> int:  # type: ignore[no-untyped-def]
    """Start the CLI run, send `sig` to its whole process group once it is sending; its exit code."""
    return signal_when(command, env, sig, lambda: _sent_count(big.engine, "bulk") >= after_sent)


# Faults the API answers before accepting the message (retried, deferred or failed for a rerun):
# only a kill can leave a row's outcome unknown here.
REFUSED_FAULTS = ["http_429", "http_500", "wa_131000", "wa_130429"]


@pytest.mark.cli
def test_cli_run_killed_mid_send_then_rerun_twice(big, sandbox, tmp_path: Path) -> None:
    sandbox.configure(
        latency_ms=25,
        faults={"rate": 0.15, "kinds": REFUSED_FAULTS, "seed": 3, "retry_after_seconds": 0.05},
    )
    command, env = _cli_materialize(big, sandbox, tmp_path)
    _signal_mid_send(big, command, env, signal.SIGKILL, after_sent=40)
    assert sandbox.messages()
    # Left in flight: the rows claimed ahead, and at most one marked dispatched per worker.
    in_flight = [r for r in ledger_rows(big.engine, "bulk", DAY) if r.status == "sending"]
    dispatched = [r for r in in_flight if r.dispatched_at is not None]
    assert len(dispatched) <= CLI_CONCURRENCY < len(in_flight), statuses(in_flight)

    sandbox.configure(faults={"rate": 0})
    for _ in range(2):
        _rerun(big, sandbox)
    messages = sandbox.messages()
    assert_no_duplicate_messages(messages)
    rows = assert_one_outcome_per_audience_row(big.engine, "bulk", DAY)
    received = {f"+{m['recipient_id']}" for m in messages}
    assert {r.recipient for r in rows if r.status == "sent"} <= received
    assert received <= {r.recipient for r in rows if r.status in ("sent", "unknown")}
    # Unknown only when truly unknown: at most the calls in flight, each of them marked.
    unknown = {r.recipient for r in rows if r.status == "unknown"}
    assert len(unknown) <= CLI_CONCURRENCY
    assert unknown <= {r.recipient for r in dispatched}
    # The rows claimed ahead and never dispatched were sent by the rerun, not left unknown. (A call
    # in flight at the kill is truly unknown: its answer, an acceptance or a refusal, was lost.)
    final = {r.recipient: r for r in rows}
    claimed_ahead = {r.recipient for r in in_flight if r.dispatched_at is None}
    assert claimed_ahead and {final[p].status for p in claimed_ahead} == {"sent"}
    assert not [r for r in rows if r.status in ("pending", "sending")]


@pytest.mark.cli
def test_cli_run_interrupted_mid_send_records_every_row_at_once_and_a_rerun_sends_the_rest(
    big, sandbox, tmp_path: Path
) -> None:
    # Ctrl-C in a terminal (SIGINT to the whole process group; Dagster's executor forwards another)
    # or a run terminated from the UI. The rows claimed ahead were left `sending`, then recorded
    # unknown a minute later though never called: never sent without an operator.
    sandbox.configure(latency_ms=100)
    command, env = _cli_materialize(big, sandbox, tmp_path)
    assert _signal_mid_send(big, command, env, signal.SIGINT, after_sent=30) != 0

    rows = ledger_rows(big.engine, "bulk", DAY)
    assert not [r for r in rows if r.status == "sending"], statuses(rows)
    unknown = {r.recipient for r in rows if r.status == "unknown"}
    deferred = {r.recipient for r in rows if r.status == "deferred"}
    # Only calls in flight are unknown (none when the interrupt fell while every worker waited for
    # its dispatch mark or its send slot); the rows claimed ahead are deferred, for the next run.
    assert len(unknown) <= CLI_CONCURRENCY and {
        r.reason for r in rows if r.status == "unknown"
    } <= {"interrupted_outcome_unknown"}
    assert unknown <= {r.recipient for r in rows if r.dispatched_at is not None}
    assert deferred and {r.reason for r in rows if r.status == "deferred"} == {
        "not_sent:interrupted"
    }
    received_before = _recipients(sandbox.messages())

    _rerun(big, sandbox)
    messages = sandbox.messages()
    assert_no_duplicate_messages(messages)
    rows = assert_one_outcome_per_audience_row(big.engine, "bulk", DAY)
    assert {r.recipient for r in rows if r.status == "unknown"} == unknown
    assert {r.recipient for r in rows if r.recipient in deferred} and {
        r.status for r in rows if r.recipient in deferred
    } == {"sent"}
    assert _recipients(messages) >= received_before


@pytest.mark.postgres
def test_rows_another_transaction_holds_for_a_moment_are_waited_for_not_left_pending(
    sandbox,
) -> None:
    """PostgreSQL's SKIP LOCKED hides rows a concurrent reconcile or claim holds: a run that read
    that as "nothing left" ended with those rows pending, for nobody to send until the next run."""
    with seeded_postgres_warehouse(customers=1200) as warehouse:
        engine = warehouse.engine
        config = bulk_config(bulk_campaign("bulk", where=SMALL))
        sandbox.configure(latency_ms=30)
        resources = resources_for(warehouse, sandbox)
        materialize_campaign(config, "bulk", resources, selection=["audience", "messages"])
        held: list[int] = []

        def hold_the_rest_for_a_moment() -> None:
            # Once the run is sending, take every pending row it has not claimed yet, as another
            # run's reconcile would, and let go a second and a half later.
            deadline = time.monotonic() + 30
            while _sent_count(engine, "bulk") < 20 and time.monotonic() < deadline:
                time.sleep(0.01)
            with engine.begin() as conn:
                d = send_ledger.c
                held.append(
                    len(
                        conn.execute(
                            sa.select(d.delivery_key)
                            .where(d.campaign_key == "bulk", d.status == "pending")
                            .with_for_update(skip_locked=True)
                        ).all()
                    )
                )
                time.sleep(1.5)

        holder = threading.Thread(target=hold_the_rest_for_a_moment)
        holder.start()
        result = materialize_campaign(
            config,
            "bulk",
            resources,
            selection=["deliveries"],
            run_config=deliveries_run_config("bulk", concurrency=4, batch_size=10),
        )
        holder.join()
        assert result.success
        assert held and held[0] > 50, f"the holder took {held} rows: the run was not caught mid-way"
        rows = assert_one_outcome_per_audience_row(engine, "bulk", DAY)
        assert "pending" not in statuses(rows), statuses(rows)
        assert statuses(rows)["sent"] == len(sandbox.messages())
        assert_no_duplicate_messages(sandbox.messages())
