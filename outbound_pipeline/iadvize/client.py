"""The async iAdvize client: the outbound WhatsApp mutation, one call at a time, over the transport
it is given.

A send loop opens it with `async with resource.client() as client`. It knows nothing of sandbox or
live mode: the resource (resource.py) chooses the URLs, the credentials and the transport.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx

from outbound_pipeline.iadvize.auth import (
    LOGIN_WAIT_SECONDS,
    RENEW_MARGIN_SECONDS,
    LoginPolicy,
    LoginSlots,
    TokenKeeper,
    repeat_failure,
)
from outbound_pipeline.iadvize.errors import (
    Action,
    IAdvizeError,
    Verdict,
    classify_exception,
    classify_graphql_errors,
    classify_http,
    failed_on_its_side,
    retry_after_seconds,
)
from outbound_pipeline.iadvize.graphql_reads import TransientReadError, retry_read
from outbound_pipeline.iadvize.schema import (
    DEFAULT_ARGUMENT,
    INTROSPECTION,
    INTROSPECTION_OPERATION,
    MUTATION_FIELD,
    known_input_type,
    mutation_document,
    read_introspection,
    remember_input_type,
)
from outbound_pipeline.outcomes import Reason
from outbound_pipeline.whatsapp import variables_payload, wire_format

_NOT_OPEN = "use the client as `async with resource.client() as client`"


@dataclass(frozen=True)
class OutboundMessage:
    sender: str  # E.164
    recipient: str  # E.164
    template_name: str
    language: str
    header_params: list[str]
    body_params: list[str]
    campaign_id: str


@dataclass(frozen=True)
class SendResult:
    verdict: Verdict
    message_id: str | None = None
    message_text: str | None = None


@dataclass(frozen=True)
class ClientSettings:
    """Where and as whom a client calls the API, and how long it waits on it."""

    graphql_url: str
    token_url: str
    username: str
    password: str = field(repr=False)  # never in a repr, so never in a log line or an error
    timeout: httpx.Timeout = field(default_factory=lambda: httpx.Timeout(15.0))
    input_type_name: str | None = None  # None: read by introspection
    token_renew_margin_seconds: float = RENEW_MARGIN_SECONDS  # at most; a fifth of the lifetime
    login_wait_seconds: float = LOGIN_WAIT_SECONDS  # the longest wait for a login


class _NoCookies(httpx.Cookies):
    """A cookie jar that keeps nothing: iAdvize authenticates by bearer token."""

    def extract_cookies(self, response: httpx.Response) -> None:
        return None


class _TokenClient(httpx.AsyncClient):
    """httpx's AsyncClient without cookies: iAdvize needs no session state beyond the token, and a
    cookie some proxy sets must not ride along with every later request."""

    @property  # type: ignore[override]
    def cookies(self) -> httpx.Cookies:
        return _NoCookies()

    @cookies.setter
    def cookies(self, value: Any) -> None:
        return None


# A re-login that waited longer than this (for a login slot) gives the row back to its caller to
# re-check before the call, instead of calling at once with a consent check that aged meanwhile.
LONG_LOGIN_WAIT_SECONDS = 1.0


class IAdvizeClient:
    """Async client of one event loop. Tokens and the introspected input type are per process.

    `login_slots`: where logins take their slot (the state store's, shared by every process);
    None: this process's own budget."""

    def __init__(
        self,
        settings: ClientSettings,
        transport: httpx.AsyncBaseTransport,
        login_slots: LoginSlots | None = None,
    ) -> None:
        self.settings = settings
        self.graphql_url = settings.graphql_url
        self.token_url = settings.token_url
        self._transport = transport
        self._http: httpx.AsyncClient | None = None
        policy = LoginPolicy(
            settings.token_renew_margin_seconds, settings.login_wait_seconds, login_slots
        )
        self._tokens = TokenKeeper(settings.token_url, settings.username, settings.password, policy)
        self._document: str | None = None
        # The first call introspects; the workers that start beside it wait for its answer instead
        # of each asking the API the same question.
        self._document_lock = asyncio.Lock()
        # Introspection already tried within its bound: the workers waiting behind it fail at once.
        self._document_failed: IAdvizeError | None = None

    async def __aenter__(self) -> IAdvizeClient:
        timeout = self.settings.timeout
        self._http = _TokenClient(transport=self._transport, timeout=timeout)
        # The mutation's request is built from these once per call (see _post).
        self._graphql_request_url = httpx.URL(self.graphql_url)
        self._graphql_headers = {**self._http.headers, "Content-Type": "application/json"}
        self._request_extensions = {"timeout": timeout.as_dict()}
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._tokens.close()
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    @property
    def http(self) -> httpx.AsyncClient:
        if self._http is None:
            raise RuntimeError(_NOT_OPEN)
        return self._http

    # -- token -------------------------------------------------------------------------------

    async def token(self, refused: str | None = None) -> str:
        """The shared token; log in when there is none, it nears expiry, or `refused` was it."""
        return await self._tokens.token(self.http, refused)

    async def token_is_valid(self) -> bool:
        """GET /_authenticated with the current token; retried when the API fails (a read)."""
        parts = urlsplit(self.graphql_url)
        url = f"{parts.scheme}://{parts.netloc}/_authenticated"

        async def check() -> bool:
            token = await self.token()
            try:
                response = await self.http.get(url, headers={"Authorization": f"Bearer {token}"})
            except httpx.HTTPError as exc:
                raise TransientReadError(
                    f"token check at {url} failed: {type(exc).__name__}"
                ) from None
            if failed_on_its_side(response.status_code):
                raise TransientReadError(
                    f"token check at {url} answered HTTP {response.status_code}",
                    retry_after_seconds(response.headers),
                )
            return response.status_code == 200

        return await retry_read(check)

    # -- mutation ----------------------------------------------------------------------------

    async def _post(self, payload: dict[str, Any], token: str) -> httpx.Response:
        if self._http is None:
            raise RuntimeError(_NOT_OPEN)
        request = httpx.Request(
            "POST",
            self._graphql_request_url,
            headers={**self._graphql_headers, "Authorization": f"Bearer {token}"},
            content=json.dumps(
                payload, ensure_ascii=False, separators=(",", ":"), allow_nan=False
            ).encode(),
            extensions=self._request_extensions,
        )
        # Straight to the transport, the client's settings already in the request: its per-request
        # layers (URL and header merging, auth, redirects, cookies, hooks) do nothing for this call
        # and cost as much as the rest of the call's own work, 0.1 ms a call at 1,000 calls a second.
        response = await self._transport.handle_async_request(request)
        response.request = request
        try:
            await response.aread()
        finally:
            await response.aclose()
        return response

    async def document(self) -> str:
        """The mutation text, declared with the input type the API itself names."""
        if self._document is not None:
            return self._document
        async with self._document_lock:
            if self._document is not None:
                return self._document
            if (failed := self._document_failed) is not None:
                raise repeat_failure(failed)
            found = known_input_type(self.graphql_url)
            if found is None:
                if self.settings.input_type_name:
                    found = (DEFAULT_ARGUMENT, self.settings.input_type_name)
                else:
                    try:
                        found = await self._introspect()
                    except IAdvizeError as exc:
                        self._document_failed = exc
                        raise
                remember_input_type(self.graphql_url, found)
            self._document = mutation_document(*found)
            return self._document

    async def _introspect(self) -> tuple[str, str]:
        """A read: tried again when the API fails or cannot be reached, within a bound."""
        return await retry_read(self._introspect_once)

    async def _introspect_once(self) -> tuple[str, str]:
        token = await self.token()
        response = await self._introspection_post(token)
        if response.status_code == 401:
            token = await self.token(refused=token)
            response = await self._introspection_post(token)
        return read_introspection(response)

    async def _introspection_post(self, token: str) -> httpx.Response:
        # No message goes with introspection: a lost connection here sent nothing, and the send
        # loop must hear of it as the API's failure, not as an unexpected crash of a worker.
        try:
            return await self._post(
                {"query": INTROSPECTION, "operationName": INTROSPECTION_OPERATION}, token
            )
        except httpx.HTTPError as exc:
            raise IAdvizeError(
                f"introspection of {MUTATION_FIELD} at {self.graphql_url} failed: "
                f"{type(exc).__name__}",
                transient=True,
            ) from None

    async def prepare(self) -> None:
        """Log in and learn the mutation's input type, when not done yet: no message goes with
        them (a login may wait for its slot)."""
        await self.document()
        await self.token()

    async def send(self, message: OutboundMessage) -> SendResult:
        """One call; a refused token triggers one shared re-login and one more try."""
        payload = {
            "query": await self.document(),
            "variables": {"input": _mutation_input(message)},
            "operationName": "SendWhatsAppTemplate",
        }
        token = await self.token()
        result = await self._send_once(payload, token)
        if result.verdict.action is Action.RELOGIN:
            started = time.monotonic()
            token = await self.token(refused=token)
            if time.monotonic() - started > LONG_LOGIN_WAIT_SECONDS:
                return SendResult(Verdict(Action.RETRY, Reason.WAITED_FOR_LOGIN, "401", delay=0))
            result = await self._send_once(payload, token)
            if result.verdict.action is Action.RELOGIN:
                return SendResult(
                    Verdict(
                        Action.STOP_ALL, Reason.TOKEN_REFUSED_AFTER_RELOGIN, result.verdict.code
                    )
                )
        return result

    async def _send_once(self, payload: dict[str, Any], token: str) -> SendResult:
        try:
            response = await self._post(payload, token)
        except httpx.HTTPError as exc:
            return SendResult(classify_exception(exc))
        verdict = classify_http(response.status_code, response.headers)
        if verdict is not None:
            return SendResult(verdict)
        return _read_send_answer(response)


def _mutation_input(message: OutboundMessage) -> dict[str, Any]:
    """The mutation's input object, phones in the API's wire format."""
    return {
        "senderId": wire_format(message.sender),
        "recipientId": wire_format(message.recipient),
        "templateName": message.template_name,
        "language": message.language,
        "headerVariables": variables_payload(message.header_params),
        "bodyVariables": variables_payload(message.body_params),
        "campaignId": message.campaign_id,
    }


def _read_send_answer(response: httpx.Response) -> SendResult:
    """The result of an HTTP 200 answer to the mutation: accepted, refused, or unknown."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        # A 200 whose body is unreadable may still be an accepted message.
        return SendResult(Verdict(Action.UNKNOWN, Reason.UNREADABLE_RESPONSE, "200"))
    data = body.get("data")
    data = data.get(MUTATION_FIELD) if isinstance(data, dict) else None
    if isinstance(data, dict) and data.get("messageId"):
        text = data.get("messageText")
        return SendResult(
            Verdict(Action.SENT, Reason.ACCEPTED),
            str(data["messageId"]),
            text if isinstance(text, str) else None,
        )
    errors = body.get("errors")
    if not isinstance(errors, list) or not errors or not isinstance(errors[0], dict):
        reason = Reason.EMPTY_RESPONSE if not errors else Reason.UNREADABLE_RESPONSE
        return SendResult(Verdict(Action.UNKNOWN, reason, "200"))
    try:
        return SendResult(classify_graphql_errors(errors))
    except (TypeError, AttributeError, ValueError):
        # An error entry of an unknown shape: nothing says the message was refused.
        return SendResult(Verdict(Action.UNKNOWN, Reason.UNREADABLE_RESPONSE, "200"))
