"""What the send-loop fault tests share: a day prepared for sending, the real client with its first
answers scripted, the loop run in a thread that must return (a hang fails the test), and the rows and
messages it left.

The tests: test_iadvize_client_faults.py, test_send_loop_faults.py, test_send_loop_waits.py.
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
import pytest
import sqlalchemy as sa

from outbound_pipeline import ledger
from outbound_pipeline.config import OutboundConfig
from outbound_pipeline.iadvize import (
    IAdvizeClient,
    IAdvizeResource,
    OutboundMessage,
    SendResult,
    forget_tokens,
)
from outbound_pipeline.ledger import (
    CampaignPlan,
    plan_for,
)
from outbound_pipeline.sandbox import SandboxServer
from outbound_pipeline.sending import SendLoop, SendSettings, SendSummary
from outbound_pipeline_tests.bulk import (
    bulk_campaign,
    bulk_config,
    ledger_rows,
)
from outbound_pipeline_tests.conftest import DAY, materialize_campaign, resources_for
from outbound_pipeline_tests.stores import Warehouse, consent_for

# These tests' own sender: the runs of a process sending from one sender share its limiter.
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
    with ledger.read_snapshot(warehouse.engine, plan) as snapshot, warehouse.state.begin() as conn:
        ledger.reconcile(conn, snapshot, "setup", dt.datetime.now(dt.UTC))
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


def passthrough(real: IAdvizeClient, message: OutboundMessage) -> Awaitable[SendResult]:
    """A step that lets the call go to the real client."""
    return real.send(message)


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
                LOG,
                consent=consent_for(warehouse, plan),
                extra_checks=extra_checks,
            )  # type: ignore[arg-type]
            script.loop = loop
            return await loop.run()

    outcome = in_thread(lambda: asyncio.run(main()))
    return outcome, scripted[0]


LOG = dg.get_dagster_logger("send_loop_harness")


def rows_by_key(warehouse: Warehouse) -> dict[str, sa.Row[Any]]:
    return {r.delivery_key: r for r in ledger_rows(warehouse.engine, "faults", DAY)}


def received(sandbox: SandboxServer) -> set[str]:
    return {f"+{m['recipient_id']}" for m in sandbox.messages()}


# --- iAdvize on a socket of the test's own: its three endpoints answer what a test sets ---------

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
