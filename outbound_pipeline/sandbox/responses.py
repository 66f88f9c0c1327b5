"""The sandbox's HTTP answers outside a GraphQL result: a refused token, a malformed request, the
HTTP faults (429, 500, a gateway's 502/504), a response cut half-way, an answer that never comes."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import httpx
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.types import Receive, Scope, Send

from outbound_pipeline.sandbox.faults import HTTP_STATUS, FaultConfig, retry_after_header


class SandboxConnectionDrop(httpx.RemoteProtocolError):
    """Raised by the app to cut a response half-way (fault `drop_after_accept`).

    Over a socket, uvicorn closes the connection and the client sees a truncated body. In process
    (httpx.ASGITransport re-raises app exceptions) the client gets this httpx error directly, so it is
    handled exactly like the network failure it stands for.
    """


def graphql_errors(message: str, name: str, retry_policy: str = "NO_RETRY") -> dict[str, Any]:
    """A body of one error, named as iAdvize names its errors."""
    return {
        "errors": [{"message": message, "extensions": {"name": name, "retryPolicy": retry_policy}}]
    }


def unauthenticated() -> JSONResponse:
    return JSONResponse(
        graphql_errors("Invalid or expired token", "UNAUTHENTICATED"),
        status_code=401,
        headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
    )


def bad_request(message: str) -> JSONResponse:
    return JSONResponse(graphql_errors(message, "BAD_REQUEST"), status_code=400)


def http_fault(kind: str, faults: FaultConfig) -> Response:
    status = HTTP_STATUS[kind]
    if status == 429:
        return JSONResponse(
            graphql_errors("Too many requests", "RATE_LIMITED", "RETRY"),
            status_code=429,
            headers={"Retry-After": retry_after_header(faults.retry_after_seconds)},
        )
    if status == 500:
        return JSONResponse(
            graphql_errors("Internal server error", "INTERNAL_SERVER_ERROR", "RETRY"),
            status_code=500,
        )
    # A gateway answers 502/504 itself, in plain text: clients must not expect JSON there.
    return PlainTextResponse(
        f"{status} {'Bad Gateway' if status == 502 else 'Gateway Timeout'}", status_code=status
    )


class CutResponse(Response):
    """Announces a body it never finishes: the message was accepted, then the connection is lost."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", b"4096")],
            }
        )
        await send(
            {"type": "http.response.body", "body": b'{"data":{"whatsAppOutbound', "more_body": True}
        )
        raise SandboxConnectionDrop("sandbox fault drop_after_accept: connection cut mid-response")


async def hang(request: Request, seconds: float) -> None:
    """Hold the answer `seconds`, or until the client gives up and disconnects (so a timed-out
    client does not keep a task alive until the server stops)."""

    async def disconnected() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(disconnected(), timeout=seconds)
