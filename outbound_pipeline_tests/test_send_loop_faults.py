"""The send loop when something goes wrong mid-run: it stops, records every row, and never hangs.

- The iAdvize client turns a connection lost or a malformed answer during login or introspection
  into its own error (naming no secret), and a mutation answer of the wrong shape into `unknown`.
- An error no one planned for (a bug in a worker, the ledger refusing a write) stops the loop and
  fails the step: the row in hand is `unknown` if its call may have gone out, else `deferred`;
  nothing is left `sending` by a live process; no row is sent twice. A lost introspection fails the
  step too, with nothing sent.
- A call that follows a wait (a 429's Retry-After, a retry's backoff, a slow limiter) checks consent
  again first: an opt-out written during the wait is honoured (invariant 1). The producer claims no
  more rows than the queue takes.
- A stop (error 368) also holds the workers asleep in a retry or waiting for the limiter.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import http.server
import json
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import dagster as dg
import httpx
import pytest
import sqlalchemy as sa

from outbound_pipeline import ledger
from outbound_pipeline import sending as send_loop
from outbound_pipeline.clock import as_utc
from outbound_pipeline.config import OutboundConfig
from outbound_pipeline.iadvize import (
    Action,
    IAdvizeClient,
    IAdvizeError,
    IAdvizeResource,
    OutboundMessage,
    SendResult,
    classify_code,
    classify_http,
    forget_tokens,
)
from outbound_pipeline.ledger import (
    CampaignPlan,
    extra_checks_for,
    halts,
    plan_for,
    send_ledger,
    sender_pace,
)
from outbound_pipeline.sandbox import SandboxServer
from outbound_pipeline.sending import SendLoop, SendLoopError, SendSettings, SendSummary
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
    Warehouse,
    consent_for,
    deliveries_run_config,
    materialize_campaign,
    resources_for,
    seeded_postgres_warehouse,
)

# This file's own sender: the runs of a process sending from one sender share its limiter.
SENDER = "+33644646097"
# A loop that has not returned by then is hung (the bug these tests guard against).
HANG_SECONDS = 60.0


def in_thread(fn: Callable[[], Any], timeout: float = HANG_SECONDS) -> Any:
    """fn() in a daemon thread: its result or exception, or a test failure if it never returns."""
    box: list[Any] = []

    def target() -> None:
        try:
            box.append(fn())
        except BaseException as exc:  # handed back to the test
            box.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(timeout)
    assert not thread.is_alive(), f"still running after {timeout:g} s: the send loop hangs"
    return box[0]


def prepared_day(
    warehouse: Warehouse, sandbox: SandboxServer, where: str, **campaign: Any
) -> tuple[OutboundConfig, CampaignPlan]:
    """A campaign's audience and messages for DAY, reconciled into ledger rows, nothing sent yet."""
    config = bulk_config(bulk_campaign("faults", where=where, sender=SENDER, **campaign))
    resources = resources_for(warehouse, sandbox)
    assert materialize_campaign(
        config, "faults", resources, selection=["audience", "messages"]
    ).success
    plan = plan_for(config.campaign("faults"), config, DAY)
    with warehouse.engine.begin() as conn:
        ledger.reconcile(conn, warehouse.engine, plan, "setup", dt.datetime.now(dt.UTC))
    return config, plan


Step = Callable[[IAdvizeClient, OutboundMessage], Awaitable[SendResult]]


class Scripted:
    """The real client, with the answers of the first calls scripted (in call order)."""

    def __init__(self, real: IAdvizeClient, steps: list[Step]) -> None:
        self.real = real
        self.steps = list(steps)
        self.calls: list[str] = []
        self.loop: SendLoop | None = None
        self.claimed_ahead: list[int] = []  # rows claimed and not yet called, at each call

    async def prepare(self) -> None:
        await self.real.prepare()

    async def send(self, message: OutboundMessage) -> SendResult:
        self.calls.append(message.recipient)
        if self.loop is not None:
            self.claimed_ahead.append(self.loop.summary.claimed - len(self.calls))
        if self.steps:
            return await self.steps.pop(0)(self.real, message)
        return await self.real.send(message)


def answer(result: SendResult, after: float = 0.0) -> Step:
    async def step(real: IAdvizeClient, message: OutboundMessage) -> SendResult:
        await asyncio.sleep(after)
        return result

    return step


def run_loop(
    warehouse: Warehouse,
    sandbox: SandboxServer,
    plan: CampaignPlan,
    steps: list[Step],
    settings: SendSettings,
    now: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    extra_checks: tuple[Any, ...] = (),
) -> tuple[SendSummary | BaseException, Scripted]:
    resource = resources_for(warehouse, sandbox)["iadvize"]
    scripted: list[Scripted] = []

    async def main() -> SendSummary:
        async with resource.client(max_connections=settings.concurrency) as client:
            script = Scripted(client, steps)
            scripted.append(script)
            loop = SendLoop(
                warehouse.engine,
                plan,
                script,
                now,
                "run-1",
                settings,
                _LOG,
                consent=consent_for(warehouse, plan),
                extra_checks=extra_checks,
            )  # type: ignore[arg-type]
            script.loop = loop
            return await loop.run()

    outcome = in_thread(lambda: asyncio.run(main()))
    return outcome, scripted[0]


_LOG = dg.get_dagster_logger("test_send_loop_faults")


def rows_by_key(warehouse: Warehouse) -> dict[str, sa.Row[Any]]:
    return {r.delivery_key: r for r in ledger_rows(warehouse.engine, "faults", DAY)}


def received(sandbox: SandboxServer) -> set[str]:
    return {f"+{m['recipient_id']}" for m in sandbox.messages()}


# --- 1. the client: a lost connection or a malformed answer around login is the API's error ------

PASSWORD = "pw-never-shown-7341"
TOKEN = "token-never-shown-5512"
SCHEMA = {
    "data": {
        "__type": {
            "fields": [
                {
                    "name": "whatsAppOutboundMessageSend",
                    "args": [
                        {
                            "name": "whatsAppOutboundMessageSendInput",
                            "type": {
                                "kind": "NON_NULL",
                                "name": None,
                                "ofType": {
                                    "kind": "INPUT_OBJECT",
                                    "name": "WhatsAppOutboundMessageSendInput",
                                },
                            },
                        }
                    ],
                }
            ]
        }
    }
}
# (status, body) answered after reading the request, or None: the connection is dropped instead.
Reply = tuple[int, bytes] | None


@dataclass
class FakeAPI:
    """iAdvize's three endpoints on a real loopback socket, each answering what a test sets."""

    login: Reply = (200, json.dumps({"access_token": TOKEN, "expires_in": 86400}).encode())
    introspection: Reply = (200, json.dumps(SCHEMA).encode())
    mutation: Reply = (
        200,
        json.dumps(
            {"data": {"whatsAppOutboundMessageSend": {"messageId": "m1", "messageText": "t"}}}
        ).encode(),
    )
    base_url: str = ""
    logins: int = 0
    login_seconds: float = 0.0  # how long a login takes to answer
    set_cookie: str | None = None  # a Set-Cookie header on every answer
    requests: list[tuple[str, dict[str, str], bytes]] = field(
        default_factory=list
    )  # (path, headers, body)

    def resource(
        self, transport: str = "aiohttp", login_wait_seconds: float = 600
    ) -> IAdvizeResource:
        return IAdvizeResource(
            mode="sandbox",
            graphql_url=f"{self.base_url}/graphql",
            token_url=f"{self.base_url}/oauth2/token",
            username="brand-admin",
            password=PASSWORD,
            transport=transport,  # type: ignore[arg-type]
            login_wait_seconds=login_wait_seconds,
        )


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length") or 0))
        api: FakeAPI = self.server.api  # type: ignore[attr-defined]
        api.requests.append((self.path, {k.lower(): v for k, v in self.headers.items()}, body))
        if self.path.startswith("/oauth2/token"):
            api.logins += 1
            time.sleep(api.login_seconds)
            reply = api.login
        else:
            reply = api.introspection if b"MutationArgument" in body else api.mutation
        if reply is None:
            # The request was read, then the connection is gone: what a proxy or a crash does.
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        status, content = reply
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(content)))
        if api.set_cookie:
            self.send_header("set-cookie", api.set_cookie)
        self.end_headers()
        self.wfile.write(content)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def fake_api() -> Iterator[FakeAPI]:
    forget_tokens()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    api = FakeAPI(base_url=f"http://127.0.0.1:{server.server_address[1]}")
    server.api = api  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield api
    server.shutdown()
    server.server_close()
    forget_tokens()


async def _document(resource: IAdvizeResource) -> str:
    async with resource.client() as client:
        return await client.document()


def _assert_names_no_secret(exc: BaseException) -> None:
    assert PASSWORD not in str(exc) and TOKEN not in str(exc)


@pytest.mark.parametrize("transport", ["aiohttp", "httpx"])
def test_a_connection_lost_during_introspection_is_an_iadvize_error(
    fake_api: FakeAPI, transport: str
) -> None:
    fake_api.introspection = None
    with pytest.raises(IAdvizeError, match="introspection") as info:
        asyncio.run(_document(fake_api.resource(transport)))
    _assert_names_no_secret(info.value)


@pytest.mark.parametrize(
    ("endpoint", "body"),
    [
        ("login", b"<html>maintenance</html>"),
        ("login", b"[]"),
        ("login", b'{"token": "' + TOKEN.encode() + b'"}'),
        ("introspection", b"<html>maintenance</html>"),
        ("introspection", b'"schema"'),
        ("introspection", b'{"data": {"__type": {"fields": [{"args": []}]}}}'),
    ],
)
def test_a_malformed_login_or_introspection_answer_is_an_iadvize_error(
    fake_api: FakeAPI, endpoint: str, body: bytes
) -> None:
    setattr(fake_api, endpoint, (200, body))
    with pytest.raises(
        IAdvizeError, match="login" if endpoint == "login" else "introspection"
    ) as info:
        asyncio.run(_document(fake_api.resource()))
    _assert_names_no_secret(info.value)


@pytest.mark.parametrize(
    "body",
    [
        b"[]",
        b'"accepted"',
        b'{"data": {"whatsAppOutboundMessageSend": "m1"}}',
        b'{"errors": ["boom"]}',
        b'{"errors": [{"extensions": "x"}]}',
    ],
)
def test_a_mutation_answer_that_is_not_an_object_is_an_unknown_outcome(
    fake_api: FakeAPI, body: bytes
) -> None:
    # HTTP 200 and the request went out: it may have been accepted, so unknown, never an exception.
    fake_api.mutation = (200, body)
    message = OutboundMessage(
        SENDER, "+33612345678", "order_ready_v1", "fr", [], ["a", "b", "c"], "c-1"
    )

    async def send() -> SendResult:
        async with fake_api.resource().client() as client:
            return await client.send(message)

    assert asyncio.run(send()).verdict.action is Action.UNKNOWN


@pytest.mark.parametrize("transport", ["aiohttp", "httpx"])
def test_the_mutation_goes_out_as_json_with_the_token_and_no_cookie_the_api_set(
    fake_api: FakeAPI, transport: str
) -> None:
    # The request is built by hand for speed: it must still be what the API expects, and a cookie
    # (a load balancer's, say) must not become session state sent back with every message.
    fake_api.set_cookie = "lb=node-7; Path=/"
    message = OutboundMessage(
        SENDER, "+33612345678", "order_ready_v1", "fr", [], ["Zoé", "Lyon 2e", "12 €"], "c-1"
    )

    async def send_twice() -> list[SendResult]:
        async with fake_api.resource(transport).client() as client:
            return [await client.send(message), await client.send(message)]

    assert [r.verdict.action for r in asyncio.run(send_twice())] == [Action.SENT, Action.SENT]
    mutations = [
        (headers, body)
        for path, headers, body in fake_api.requests
        if path == "/graphql" and b"SendWhatsAppTemplate" in body
    ]
    assert len(mutations) == 2
    for headers, body in mutations:
        assert headers["authorization"] == f"Bearer {TOKEN}"
        assert headers["content-type"] == "application/json"
        assert "cookie" not in headers
        sent = json.loads(body)
        assert sent["operationName"] == "SendWhatsAppTemplate"
        assert sent["variables"]["input"]["recipientId"] == "33612345678"
        assert [v["value"] for v in sent["variables"]["input"]["bodyVariables"]] == [
            "Zoé",
            "Lyon 2e",
            "12 €",
        ]
    assert all("cookie" not in headers for _, headers, _ in fake_api.requests)


def test_the_workers_of_a_run_introspect_the_api_once(
    small: Warehouse, sandbox: SandboxServer
) -> None:
    # Sixteen workers start together: one asks the API for the mutation's input type, the others
    # wait for its answer (each used to ask the same question).
    config, _ = prepared_day(small, sandbox, "customer_id <= 'C000040'")
    resources = resources_for(small, sandbox)
    run_config = deliveries_run_config("faults", concurrency=16, batch_size=10)
    assert materialize_campaign(
        config, "faults", resources, run_config=run_config, selection=["deliveries"]
    ).success
    stats = sandbox.stats()
    assert stats["accepted"] >= 16
    assert (stats["graphql_reads"], stats["logins"]) == (1, 1)


# --- 2. an unexpected error stops the loop and fails it; it never hangs --------------------------


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

        def passthrough(real: IAdvizeClient, message: OutboundMessage) -> Awaitable[SendResult]:
            return real.send(message)

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

    def passthrough(real: IAdvizeClient, message: OutboundMessage) -> Awaitable[SendResult]:
        return real.send(message)

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
                _LOG,
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


# --- 4. a stop holds the workers that were waiting ------------------------------------------------


def _after_a_stop(
    warehouse: Warehouse, sandbox: SandboxServer, script: Scripted, outcome: Any
) -> dict[str, sa.Row[Any]]:
    assert isinstance(outcome, SendSummary) and outcome.stop_all, outcome
    assert sandbox.messages() == [], "a call went out after the account was blocked"
    with warehouse.engine.connect() as conn:
        assert conn.execute(sa.select(halts.c.scope)).scalars().all() == ["all"]
    rows = rows_by_key(warehouse)
    assert not [r for r in rows.values() if r.status in ("sending", "sent", "unknown")]
    return rows


def test_a_stop_holds_a_worker_asleep_in_a_retry(small: Warehouse, sandbox: SandboxServer) -> None:
    _, plan = prepared_day(small, sandbox, "customer_id <= 'C000040'")
    steps: list[Step] = [
        # The first row: a 500 with Retry-After 0.5 s; its worker sleeps. (Shorter than the wait
        # after which consent is checked again: the stop alone must hold the call.)
        answer(SendResult(classify_http(500, httpx.Headers({"retry-after": "0.5"})))),  # type: ignore[arg-type]
        # Meanwhile the second row's call says the account is blocked.
        answer(SendResult(classify_code("368")), after=0.2),  # type: ignore[arg-type]
    ]
    settings = SendSettings(concurrency=2, batch_size=10, rate_per_second=None)
    outcome, script = run_loop(small, sandbox, plan, steps, settings)

    rows = _after_a_stop(small, sandbox, script, outcome)
    assert len(script.calls) == 2, "the sleeping worker called after the stop"
    first, second = (rows[r] for r in script.calls)
    # The sleeper's row gets what every unsent row gets on a stop, with its one call counted.
    assert (first.status, first.reason, first.attempts) == (
        "deferred",
        "not_sent:account_blocked_or_locked (368)",
        1,
    )
    assert (second.status, second.reason) == ("deferred", "stopped:account_blocked_or_locked")


def test_a_stop_holds_a_worker_waiting_for_the_limiter(
    small: Warehouse, sandbox: SandboxServer
) -> None:
    _, plan = prepared_day(small, sandbox, "customer_id <= 'C000040'")
    # Two calls per second: the second worker waits half a second for its slot (under the wait
    # after which consent is checked again: the stop alone must hold the call).
    settings = SendSettings(concurrency=2, batch_size=10, rate_per_second=2.0)
    steps: list[Step] = [answer(SendResult(classify_code("368")), after=0.1)]  # type: ignore[arg-type]
    outcome, script = run_loop(small, sandbox, plan, steps, settings)

    rows = _after_a_stop(small, sandbox, script, outcome)
    assert len(script.calls) == 1, "the worker waiting for the limiter called after the stop"
    reasons = {r.reason for r in rows.values() if r.status == "deferred"}
    assert reasons == {
        "stopped:account_blocked_or_locked",
        "not_sent:account_blocked_or_locked (368)",
    }
