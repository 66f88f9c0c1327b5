"""The send loop when something goes wrong mid-run: it stops, records every row, and never hangs.

- The iAdvize client turns a connection lost or a malformed answer during login or introspection
  into its own error (naming no secret), and a mutation answer of the wrong shape into `unknown`.
"""

from __future__ import annotations

import asyncio
import http.server
import json
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from outbound_pipeline.errors import Action
from outbound_pipeline.iadvize import (
    IAdvizeError,
    IAdvizeResource,
    OutboundMessage,
    SendResult,
    forget_tokens,
)

SENDER = "+33644646097"


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
                            "type": {"kind": "NON_NULL", "name": None, "ofType": {"kind": "INPUT_OBJECT", "name": "WhatsAppOutboundMessageSendInput"}},
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
    mutation: Reply = (200, json.dumps({"data": {"whatsAppOutboundMessageSend": {"messageId": "m1", "messageText": "t"}}}).encode())
    base_url: str = ""

    def resource(self, transport: str = "aiohttp") -> IAdvizeResource:
        return IAdvizeResource(
            mode="sandbox", graphql_url=f"{self.base_url}/graphql", token_url=f"{self.base_url}/oauth2/token",
            username="brand-admin", password=PASSWORD, transport=transport,  # type: ignore[arg-type]
        )


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length") or 0))
        api: FakeAPI = self.server.api  # type: ignore[attr-defined]
        if self.path.startswith("/oauth2/token"):
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
def test_a_connection_lost_during_introspection_is_an_iadvize_error(fake_api: FakeAPI, transport: str) -> None:
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
def test_a_malformed_login_or_introspection_answer_is_an_iadvize_error(fake_api: FakeAPI, endpoint: str, body: bytes) -> None:
    setattr(fake_api, endpoint, (200, body))
    with pytest.raises(IAdvizeError, match="login" if endpoint == "login" else "introspection") as info:
        asyncio.run(_document(fake_api.resource()))
    _assert_names_no_secret(info.value)


@pytest.mark.parametrize(
    "body",
    [b"[]", b'"accepted"', b'{"data": {"whatsAppOutboundMessageSend": "m1"}}', b'{"errors": ["boom"]}', b'{"errors": [{"extensions": "x"}]}'],
)
def test_a_mutation_answer_that_is_not_an_object_is_an_unknown_outcome(fake_api: FakeAPI, body: bytes) -> None:
    # HTTP 200 and the request went out: it may have been accepted, so unknown, never an exception.
    fake_api.mutation = (200, body)
    message = OutboundMessage(SENDER, "+33612345678", "order_ready_v1", "fr", [], ["a", "b", "c"], "c-1")

    async def send() -> SendResult:
        async with fake_api.resource().client() as client:
            return await client.send(message)

    assert asyncio.run(send()).verdict.action is Action.UNKNOWN
