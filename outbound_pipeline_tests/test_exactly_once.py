"""At most once, nothing lost, consent at the last moment: under faults, crashes and races.

Limits and halts: test_limits_and_halts.py; a CLI run killed or interrupted: test_cli_signals.py.
"""

from __future__ import annotations

import datetime as dt
import threading
import time

import pytest
import sqlalchemy as sa

from outbound_pipeline.clock import ClockResource
from outbound_pipeline.ledger import send_ledger
from outbound_pipeline.warehouse import messages
from outbound_pipeline_tests.bulk import (
    SMALL,
    assert_no_duplicate_messages,
    assert_one_outcome_per_audience_row,
    bulk_campaign,
    bulk_config,
    ledger_rows,
    sent_count,
    started_in_thread,
    statuses,
    wait_until_sent,
)
from outbound_pipeline_tests.conftest import (
    DAY,
    deliveries_run_config,
    materialize_campaign,
    resources_for,
)
from outbound_pipeline_tests.stores import seeded_postgres_warehouse

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
    runner, done = started_in_thread(
        lambda: materialize_campaign(config, "bulk", resources, run_config=run_config).success
    )
    wait_until_sent(big.engine, "bulk", 30)
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
            while sent_count(engine, "bulk") < 20 and time.monotonic() < deadline:
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
