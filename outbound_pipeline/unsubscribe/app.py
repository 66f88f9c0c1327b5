"""The unsubscribe endpoint, an ASGI app (starlette): `GET /u/<token>` shows a confirm button and
records nothing (link previews and mail scanners fetch GETs); `POST /u/<token>` records the opt-out
and answers once it is committed.

It faces the internet, so: a bounded rate per client before anything else; a bounded body read
under a deadline; the signature checked in constant time (itsdangerous); the same fixed page for
every phone (it only inserts, never reads, so nothing tells a known phone from another); and a log
line per request that holds the method, a fixed path template and the status, never the token.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import math
from collections.abc import Callable, Sequence

import sqlalchemy as sa
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

import outbound_pipeline.unsubscribe.pages as pages
from outbound_pipeline.clock import utcnow
from outbound_pipeline.unsubscribe.links import LINK_PATH, InvalidToken, check_secret, read_token
from outbound_pipeline.unsubscribe.ratelimit import ClientBuckets, RateLimit, client_key
from outbound_pipeline.unsubscribe.suppressions import SuppressionSource, suppress
from outbound_pipeline.whatsapp import mask_phones_in

log = logging.getLogger("outbound_pipeline.unsubscribe")

# RFC 8058's body is 26 bytes; a form post of the confirm button the same.
MAX_BODY_BYTES = 1024
# A link is about 70 bytes of path; room for a query a mail scanner or a proxy may add.
MAX_TARGET_BYTES = 2048
MAX_HEADER_BYTES = 8192
BODY_TIMEOUT_SECONDS = 5.0
_ALLOWED = "GET, HEAD, POST"
_LOGGED_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def page_response(page: pages.Page, headers: dict[str, str] | None = None) -> Response:
    """One of the fixed pages, with the security headers (and any extra ones)."""
    response = Response(page.body, status_code=page.status)
    for name, value in (*pages.SECURITY_HEADERS, *(headers or {}).items()):
        response.headers[name] = value
    return response


def path_template(path: str) -> str:
    """What the log shows of a path: the route, never the token."""
    return LINK_PATH + "<token>" if path.startswith(LINK_PATH) else "<other>"


class _AccessLog:
    """One redacted line per request: method, path template, status."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 0

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            # A method is the client's text; no status: the app raised, and starlette answers 500.
            method = scope["method"] if scope["method"] in _LOGGED_METHODS else "OTHER"
            log.info("%s %s %s", method, path_template(scope["path"]), status or 500)


def _oversized_head(scope: Scope) -> pages.Page | None:
    """h11 bounds a request head that arrives in pieces, not one that comes in a single read."""
    if len(scope["raw_path"]) + len(scope["query_string"]) > MAX_TARGET_BYTES:
        return pages.INVALID_LINK  # an oversized token, for whoever follows it
    if sum(len(name) + len(value) for name, value in scope["headers"]) > MAX_HEADER_BYTES:
        return pages.HEAD_TOO_LARGE
    return None


class _Guard:
    """HTTP 429 beyond the client's rate, then a bound on the request head, before anything else."""

    def __init__(self, app: ASGIApp, buckets: ClientBuckets) -> None:
        self.app = app
        self.buckets = buckets

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            allowed, wait = self.buckets.allow(client_key(scope.get("client")))
            if not allowed:
                retry = {"retry-after": str(max(1, math.ceil(wait)))}
                await page_response(pages.TOO_MANY, retry)(scope, receive, send)
                return
            if (refused := _oversized_head(scope)) is not None:
                await page_response(refused)(scope, receive, send)
                return
        await self.app(scope, receive, send)


async def _read_bounded_body(request: Request, max_bytes: int, timeout: float) -> pages.Page | None:
    """Read (and drop) the body, refusing it once over `max_bytes` or `timeout`: None when fine."""
    declared = request.headers.get("content-length", "0")
    if not declared.isdigit() or int(declared) > max_bytes:
        return pages.TOO_LARGE  # refused before reading a byte of it
    size = 0
    try:
        async with asyncio.timeout(timeout):
            async for chunk in request.stream():
                size += len(chunk)
                if size > max_bytes:
                    return pages.TOO_LARGE
    except TimeoutError:
        return pages.TIMED_OUT
    except ClientDisconnect:
        # Nobody is left to read the answer; what matters is that nothing is recorded.
        return pages.TIMED_OUT
    return None


class _Links:
    """The /u/<token> route."""

    def __init__(
        self,
        secrets: Sequence[str],
        engine: sa.Engine,
        now: Callable[[], dt.datetime],
        max_body_bytes: int,
        body_timeout: float,
    ) -> None:
        self.secrets = tuple(check_secret(s) for s in secrets)
        self.engine = engine
        self.now = now
        self.max_body_bytes = max_body_bytes
        self.body_timeout = body_timeout

    async def handle(self, request: Request) -> Response:
        if request.method == "POST":
            refused = await _read_bounded_body(request, self.max_body_bytes, self.body_timeout)
            if refused is not None:
                return page_response(refused)
        try:
            phone = read_token(request.path_params["token"], self.secrets)
        except InvalidToken:
            return page_response(pages.INVALID_LINK)
        if request.method != "POST":
            return page_response(pages.CONFIRM)
        recorded = await run_in_threadpool(self._record, phone)
        return page_response(pages.DONE if recorded else pages.UNAVAILABLE)

    def _record(self, phone: str) -> bool:
        try:
            with self.engine.begin() as conn:
                suppress(conn, phone, SuppressionSource.LINK, self.now())
        except sa.exc.SQLAlchemyError as exc:
            # The engine hides statement parameters; the driver's own words are masked anyway.
            detail = mask_phones_in(str(getattr(exc, "orig", None) or type(exc).__name__))
            log.error("could not record an opt-out: %s", detail.splitlines()[0][:300])
            return False
        return True


async def _not_found(request: Request, exc: Exception) -> Response:
    return page_response(pages.NOT_FOUND)


async def _wrong_method(request: Request, exc: Exception) -> Response:
    return page_response(pages.WRONG_METHOD, {"allow": _ALLOWED})


def create_app(
    secrets: str | Sequence[str],
    engine: sa.Engine,
    *,
    rate_limit: RateLimit | None = None,
    now: Callable[[], dt.datetime] = utcnow,
    max_body_bytes: int = MAX_BODY_BYTES,
    body_timeout: float = BODY_TIMEOUT_SECONDS,
) -> Starlette:
    """The endpoint, recording into `outbound_suppressions` through `engine` (which needs only
    INSERT on it). `secrets`: the signing secret, or every accepted one, the current one last."""
    buckets = ClientBuckets(rate_limit or RateLimit())
    links = _Links(
        [secrets] if isinstance(secrets, str) else secrets,
        engine,
        now,
        max_body_bytes,
        body_timeout,
    )
    app = Starlette(
        routes=[Route(LINK_PATH + "{token:path}", links.handle, methods=["GET", "POST"])],
        middleware=[Middleware(_AccessLog), Middleware(_Guard, buckets=buckets)],
        exception_handlers={404: _not_found, 405: _wrong_method},
    )
    app.state.buckets = buckets
    return app
