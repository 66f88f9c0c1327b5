"""The send loop when something goes wrong mid-run: it stops, records every row, and never hangs.

- An error no one planned for (a bug in a worker, the ledger refusing a write) stops the loop and
  fails the step: the row in hand is `unknown` if its call may have gone out, else `deferred`;
  nothing is left `sending` by a live process; no row is sent twice. A lost introspection fails the
  step too, with nothing sent.
- A login the API fails stops this run only; one it refuses halts every send; a ledger connection
  lost while idle is replaced.

The client's own faults: test_iadvize_client_faults.py; waits, retries and stops:
test_send_loop_waits.py.
"""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from outbound_pipeline import ledger
from outbound_pipeline.config import OutboundConfig
from outbound_pipeline.iadvize import (
    IAdvizeClient,
    OutboundMessage,
    SendResult,
)
from outbound_pipeline.ledger import (
    halts,
    send_ledger,
)
from outbound_pipeline.sandbox import SandboxServer
from outbound_pipeline.sending import SendLoopError, SendSettings, SendSummary
from outbound_pipeline.whatsapp import mask
from outbound_pipeline_tests.bulk import (
    assert_no_duplicate_messages,
    assert_one_outcome_per_audience_row,
    bulk_campaign,
    bulk_config,
    ledger_rows,
    statuses,
)
from outbound_pipeline_tests.conftest import (
    DAY,
    deliveries_run_config,
    materialize_campaign,
    resources_for,
)
from outbound_pipeline_tests.send_loop_harness import (
    PASSWORD,
    SENDER,
    FakeAPI,
    Reply,
    fake_api,
    in_thread,
    passthrough,
    prepared_day,
    received,
    rows_by_key,
    run_loop,
)
from outbound_pipeline_tests.stores import Warehouse, seeded_postgres_warehouse

__all__ = ["fake_api"]  # a fixture


def test_an_error_in_a_worker_during_a_call_records_unknown_stops_and_fails(
    small: Warehouse, sandbox: SandboxServer
) -> None:
    _, plan = prepared_day(small, sandbox, "customer_id <= 'C000150'")
    broken: list[str] = []

    async def bug(real: IAdvizeClient, message: OutboundMessage) -> SendResult:
        broken.append(message.recipient)
        await real.send(message)  # the message is out; then the worker breaks
        # The text names the phone, as an exception's text may: it must reach no log unmasked.
        raise KeyError(f"no route for {message.recipient}")

    settings = SendSettings(concurrency=4, batch_size=20, rate_per_second=None)
    outcome, _ = run_loop(small, sandbox, plan, [bug], settings)

    assert isinstance(outcome, SendLoopError), outcome
    assert (
        "KeyError" in str(outcome)
        and broken[0] not in str(outcome)
        and mask(broken[0]) in str(outcome)
    )
    rows = rows_by_key(small)
    crashed = rows[broken[0]]
    # The call may have been accepted (it was): unknown, never resent automatically.
    assert broken[0] in received(sandbox)
    assert (crashed.status, crashed.reason, crashed.retryable) == (
        "unknown",
        "unexpected_error:KeyError",
        False,
    )
    _assert_stopped_at_once(small, sandbox, broken[0], "KeyError")


def test_an_error_in_a_worker_before_its_call_defers_the_row_stops_and_fails(
    small: Warehouse, sandbox: SandboxServer
) -> None:
    _, plan = prepared_day(small, sandbox, "customer_id <= 'C000150'")
    with small.engine.begin() as conn:
        # One row's stored parameters are not JSON any more: its worker fails building the message.
        first = conn.execute(
            sa.select(sa.func.min(send_ledger.c.delivery_key)).where(
                plan.where(send_ledger), send_ledger.c.status == "pending"
            )
        ).scalar_one()
        conn.execute(
            sa.update(send_ledger)
            .where(plan.where(send_ledger), send_ledger.c.delivery_key == first)
            .values(body_params_json='["cut')
        )
    settings = SendSettings(concurrency=4, batch_size=20, rate_per_second=None)
    outcome, _ = run_loop(small, sandbox, plan, [], settings)

    assert isinstance(outcome, SendLoopError) and "JSONDecodeError" in str(outcome), outcome
    crashed = rows_by_key(small)[first]
    # No call was made for it: it waits for the next run, like the rows the stop left unsent.
    assert first not in received(sandbox)
    assert (crashed.status, crashed.reason, crashed.attempts) == (
        "deferred",
        "unexpected_error:JSONDecodeError",
        0,
    )
    _assert_stopped_at_once(small, sandbox, first, "JSONDecodeError")


def _assert_stopped_at_once(
    warehouse: Warehouse, sandbox: SandboxServer, broken: str, error: str
) -> None:
    """Every other claimed row is sent (its call was under way) or deferred; none is left `sending`."""
    rows = rows_by_key(warehouse)
    others = [
        r for key, r in rows.items() if key != broken and r.status not in ("pending", "skipped")
    ]
    assert others and {r.status for r in others} <= {"sent", "deferred"}, statuses(others)
    assert {r.reason for r in others if r.status == "deferred"} == {
        f"not_sent:unexpected_error:{error}"
    }
    assert {r.recipient for r in others if r.status == "sent"} == received(sandbox) - {broken}


REFUSE_SENT = {
    "sqlite": [
        "CREATE TRIGGER refuse_sent BEFORE UPDATE OF status ON outbound_ledger "
        "WHEN NEW.status = 'sent' BEGIN SELECT RAISE(ABORT, 'ledger write refused'); END"
    ],
    "postgres": [
        "CREATE FUNCTION refuse_sent() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        "IF NEW.status = 'sent' THEN RAISE EXCEPTION 'ledger write refused'; END IF; RETURN NEW; END $$",
        "CREATE TRIGGER refuse_sent BEFORE UPDATE OF status ON outbound_ledger "
        "FOR EACH ROW EXECUTE FUNCTION refuse_sent()",
    ],
}


def test_a_database_error_that_quotes_a_row_fails_the_step_without_the_phone(
    small: Warehouse, sandbox: SandboxServer
) -> None:
    # PostgreSQL's DETAIL lines quote keys and rows (a ledger key is a phone number); SQLite's own
    # messages name constraints only, and its RAISE takes a fixed text.
    if small.kind != "postgres":
        pytest.skip("only PostgreSQL's error messages quote row values")
    config = bulk_config(bulk_campaign("faults", where="customer_id <= 'C000050'", sender=SENDER))
    resources = resources_for(small, sandbox)
    assert materialize_campaign(
        config, "faults", resources, selection=["audience", "messages"]
    ).success
    with small.engine.begin() as conn:
        conn.exec_driver_sql(
            "CREATE FUNCTION refuse_row() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            "RAISE EXCEPTION 'ledger row refused' USING DETAIL = 'recipient ' || NEW.recipient || ' customer ' || NEW.customer_id; "
            "END $$"
        )
        conn.exec_driver_sql(
            "CREATE TRIGGER refuse_row BEFORE INSERT ON outbound_ledger FOR EACH ROW EXECUTE FUNCTION refuse_row()"
        )
        phones = list(
            conn.exec_driver_sql(
                "SELECT recipient FROM outbound_audience WHERE recipient IS NOT NULL"
            ).scalars()
        )
    result = materialize_campaign(
        config,
        "faults",
        resources,
        run_config=deliveries_run_config("faults"),
        selection=["deliveries"],
        raise_on_error=False,
    )
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure)
    shown = failure.step_failure_data.error.to_string()
    assert "ledger row refused" in shown and "RaiseException" in shown
    assert phones and not [p for p in phones if p in shown or p.lstrip("+") in shown], shown
    assert not received(sandbox)


def test_a_ledger_that_refuses_outcomes_fails_the_step_and_the_next_run_settles_it(
    small: Warehouse, sandbox: SandboxServer
) -> None:
    config = bulk_config(bulk_campaign("faults", where="customer_id <= 'C000150'", sender=SENDER))
    resources = resources_for(small, sandbox)
    assert materialize_campaign(
        config, "faults", resources, selection=["audience", "messages"]
    ).success
    with small.engine.begin() as conn:
        # The database refuses to record a `sent` outcome (a full disk, a lost connection...).
        for statement in REFUSE_SENT[small.kind]:
            conn.exec_driver_sql(statement)
    run_config = deliveries_run_config("faults", concurrency=4, batch_size=10)
    first = in_thread(
        lambda: materialize_campaign(
            config,
            "faults",
            resources,
            run_config=run_config,
            selection=["deliveries"],
            raise_on_error=False,
        )
    )
    assert not first.success
    failure = next(e for e in first.all_events if e.is_step_failure)
    assert "ledger write refused" in failure.step_failure_data.error.to_string()
    accepted = received(sandbox)
    assert accepted, "the run should have sent before its first write"

    with small.engine.begin() as conn:
        conn.exec_driver_sql(
            "DROP TRIGGER refuse_sent" + (" ON outbound_ledger" if small.kind == "postgres" else "")
        )
    assert materialize_campaign(
        config, "faults", resources, run_config=run_config, selection=["deliveries"]
    ).success
    # The rows whose outcome was lost are unknown (their messages went out), never sent twice;
    # every row has its one outcome, none is left `sending` by the failed run.
    rows = assert_one_outcome_per_audience_row(small.engine, "faults", DAY)
    assert_no_duplicate_messages(sandbox.messages())
    by_recipient = {
        r.recipient: r for r in rows if not r.delivery_key.startswith(ledger.SKIP_PREFIX)
    }
    assert {by_recipient[p].status for p in accepted} == {"unknown"}
    assert received(sandbox) - accepted == {
        p for p, r in by_recipient.items() if r.status == "sent"
    }


def test_a_connection_lost_during_introspection_fails_the_step_instead_of_hanging(
    small: Warehouse, sandbox: SandboxServer, fake_api: FakeAPI
) -> None:
    config, _ = prepared_day(small, sandbox, "customer_id <= 'C000100'")
    fake_api.introspection = None
    text = _failed_deliveries(small, sandbox, fake_api, config)
    assert "introspection" in text and PASSWORD not in text
    # No message can have gone out: every claimed row waits for the next run, none is unknown.
    rows = ledger_rows(small.engine, "faults", DAY)
    assert {r.status for r in rows} <= {"pending", "deferred", "skipped"}, statuses(rows)
    assert any(r.status == "deferred" for r in rows)
    # A read the API kept failing (after its retries) stops this run alone: no halt, other runs
    # go on, the next run of the day sends the rest.
    assert "this run stopped" in text and "No halt" in text
    _assert_no_halt(small)
    introspections = [p for p, _, body in fake_api.requests if b"MutationArgument" in body]
    assert len(introspections) == 4  # ReadPolicy.max_attempts


def _failed_deliveries(
    warehouse: Warehouse,
    sandbox: SandboxServer,
    fake_api: FakeAPI,
    config: OutboundConfig,
    login_wait_seconds: float = 600,
) -> str:
    """The deliveries step of the prepared day against the fake API, which must fail: its error."""
    iadvize = fake_api.resource(login_wait_seconds=login_wait_seconds)
    resources = {**resources_for(warehouse, sandbox), "iadvize": iadvize}
    result = in_thread(
        lambda: materialize_campaign(
            config,
            "faults",
            resources,
            run_config=deliveries_run_config("faults", concurrency=4, batch_size=10),
            selection=["deliveries"],
            raise_on_error=False,
        )
    )
    assert not result.success
    return next(
        e for e in result.all_events if e.is_step_failure
    ).step_failure_data.error.to_string()


def _assert_no_halt(warehouse: Warehouse) -> None:
    with warehouse.state.connect() as conn:
        assert conn.execute(sa.select(halts)).all() == []


@pytest.mark.parametrize(
    ("login", "refused"),
    [
        ((503, b"upstream unavailable"), False),
        ((429, b""), False),
        ((401, b'{"error": "invalid_grant"}'), True),
    ],
)
def test_a_login_the_api_fails_stops_this_run_only_and_a_login_it_refuses_halts_every_send(
    small: Warehouse, sandbox: SandboxServer, fake_api: FakeAPI, login: Reply, refused: bool
) -> None:
    config, _ = prepared_day(small, sandbox, "customer_id <= 'C000060'")
    fake_api.login = login
    text = _failed_deliveries(small, sandbox, fake_api, config, login_wait_seconds=2.5)
    assert ("this run stopped" in text) == (not refused)
    assert ("clear the halt" in text) == refused
    if refused:
        # Bad credentials fail at once, naming what to fix; four workers, one login.
        assert "IADVIZE_USERNAME and IADVIZE_PASSWORD" in text
        assert fake_api.logins == 1
        with small.state.connect() as conn:
            halt = conn.execute(sa.select(halts)).one()
        assert halt.scope == "all" and halt.until is None
        assert halt.reason.startswith("iadvize_unusable")
    else:
        # Tried again with backoff within the bound (2.5 s here, 10 min by default), then this run
        # fails alone: no halt, runs holding a valid token go on. The workers share the attempts.
        assert "no login succeeded within 2.5 s" in text
        assert 2 <= fake_api.logins <= 4
        _assert_no_halt(small)
    rows = ledger_rows(small.engine, "faults", DAY)
    assert {r.status for r in rows} <= {"pending", "deferred", "skipped"}, statuses(rows)


@pytest.mark.postgres
def test_a_ledger_connection_lost_while_idle_is_replaced_and_the_run_goes_on(
    sandbox: SandboxServer,
) -> None:
    # The send loop keeps one connection between its transactions. A server restart or an idle
    # timeout closes it: the next transaction must open a new one rather than stop the run.
    with seeded_postgres_warehouse(customers=300) as warehouse:
        _, plan = prepared_day(warehouse, sandbox, "customer_id <= 'C000150'")
        terminated: list[int] = []

        async def cut_the_ledgers_connection(
            real: IAdvizeClient, message: OutboundMessage
        ) -> SendResult:
            with warehouse.engine.connect() as conn:
                terminated.extend(
                    conn.execute(
                        sa.text(
                            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                        )
                    ).scalars()
                )
            return await real.send(message)

        settings = SendSettings(concurrency=2, batch_size=10, rate_per_second=None)
        outcome, script = run_loop(
            warehouse, sandbox, plan, [passthrough] * 20 + [cut_the_ledgers_connection], settings
        )

        assert terminated and all(terminated)
        assert isinstance(outcome, SendSummary), outcome
        rows = rows_by_key(warehouse)
        assert not [r for r in rows.values() if r.status in ("pending", "sending", "deferred")], (
            statuses(list(rows.values()))
        )
        assert {r.recipient for r in rows.values() if r.status == "sent"} == received(sandbox)
        assert_no_duplicate_messages(sandbox.messages())
