"""The iAdvize resource: password-grant login, one cached token, the outbound WhatsApp mutation.

`IAdvizeResource` is what Dagster configures; `IAdvizeClient` is the async client a send loop opens
with it. In sandbox mode without URLs the client talks to the bundled sandbox in process; with URLs
it talks to whatever serves them (a sandbox on a loopback port, or the real API in live mode).
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import urlsplit

import dagster as dg
import httpx
from pydantic import Field

from outbound_pipeline.iadvize.errors import (
    Action,
    Verdict,
    classify_exception,
    classify_graphql_errors,
    classify_http,
)
from outbound_pipeline.whatsapp import variables_payload, wire_format

MUTATION_FIELD = "whatsAppOutboundMessageSend"
SANDBOX_BASE_URL = "http://sandbox.invalid"
LIVE_SETTINGS = ("IADVIZE_GRAPHQL_URL", "IADVIZE_TOKEN_URL", "IADVIZE_USERNAME", "IADVIZE_PASSWORD")

_INTROSPECTION = """
query MutationArgument {
  __type(name: "Mutation") {
    fields { name args { name type { kind name ofType { kind name } } } }
  }
}
"""


class IAdvizeError(RuntimeError):
    """The API refused the credentials or answered something the pipeline cannot use.

    `transient`: it could not be reached or failed on its side (a network error, HTTP 429 or 5xx
    on login or introspection), so trying again later may work, unlike refused credentials or a
    schema without the mutation.
    """

    def __init__(self, message: str, *, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient


def _failed_on_its_side(status: int) -> bool:
    return status == 429 or status >= 500


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


@dataclass
class _Token:
    value: str
    expires_at: float  # time.monotonic()


@dataclass
class _TokenCache:
    """Tokens shared by every client of the process: one login per token lifetime."""

    tokens: dict[tuple[str, str], _Token] = field(default_factory=dict)
    logins: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


_TOKEN_CACHE = _TokenCache()
_INPUT_TYPES: dict[str, tuple[str, str]] = {}


def missing_live_settings(env: dict[str, str] | None = None) -> list[str]:
    env = dict(os.environ) if env is None else env
    return [name for name in LIVE_SETTINGS if not env.get(name)]


class IAdvizeResource(dg.ConfigurableResource):
    """iAdvize GraphQL API (or its bundled sandbox): token login and whatsAppOutboundMessageSend."""

    mode: Literal["sandbox", "live"] = Field(
        default="sandbox", description="sandbox: the bundled fake API, no real message; live: iAdvize."
    )
    graphql_url: str | None = Field(default=None, description="GraphQL endpoint; empty in sandbox mode: in process.")
    token_url: str | None = Field(default=None, description="OAuth2 token endpoint.")
    username: str | None = None
    password: str | None = Field(default=None, description="Set with dg.EnvVar; never logged.")
    input_type_name: str | None = Field(
        default=None, description="GraphQL input type of the mutation; read by introspection when empty."
    )
    config_path: str | None = Field(default=None, description="Templates for the in-process sandbox.")
    timeout_seconds: float = Field(default=15.0, gt=0, description="Read timeout of one call.")
    connect_timeout_seconds: float = Field(default=5.0, gt=0)
    token_renew_margin_seconds: float = Field(default=300.0, ge=0)
    transport: Literal["aiohttp", "httpx"] = Field(
        default="aiohttp", description="aiohttp sustains several times the call rate of httpx's own."
    )

    @property
    def is_sandbox(self) -> bool:
        return self.mode == "sandbox"

    @property
    def in_process(self) -> bool:
        return self.is_sandbox and not self.graphql_url

    def describe(self) -> str:
        if self.in_process:
            return "sandbox (in process): no real message is sent"
        if self.is_sandbox:
            return f"sandbox at {self.graphql_url}: no real message is sent"
        return f"LIVE iAdvize at {self.graphql_url}"

    def validate_settings(self) -> None:
        if self.mode == "live":
            missing = [
                name
                for name, value in (
                    ("IADVIZE_GRAPHQL_URL", self.graphql_url),
                    ("IADVIZE_TOKEN_URL", self.token_url),
                    ("IADVIZE_USERNAME", self.username),
                    ("IADVIZE_PASSWORD", self.password),
                )
                if not value
            ]
            if missing:
                raise IAdvizeError(
                    "IADVIZE_MODE=live needs " + ", ".join(missing) + "; set them, or unset IADVIZE_MODE "
                    "to use the sandbox (live mode never falls back to it)"
                )
        elif bool(self.graphql_url) != bool(self.token_url):
            raise IAdvizeError("set both IADVIZE_GRAPHQL_URL and IADVIZE_TOKEN_URL, or neither")

    def client(self, max_connections: int = 64) -> IAdvizeClient:
        """An async client for one event loop; use it as `async with`."""
        self.validate_settings()
        return IAdvizeClient(self, max_connections=max_connections)


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


class IAdvizeClient:
    """Async client of one event loop. Tokens and the introspected input type are per process."""

    def __init__(self, resource: IAdvizeResource, max_connections: int = 64) -> None:
        self.resource = resource
        self._max_connections = max_connections
        self._http: httpx.AsyncClient | None = None
        self._transport: httpx.AsyncBaseTransport | None = None
        self._login_lock = asyncio.Lock()
        # A failed login is not tried again by this client: its run stops on the first failure, and
        # each attempt with a refused password counts toward the API's 10 logins a minute.
        self._login_failed: IAdvizeError | None = None
        if resource.in_process:
            self.graphql_url = f"{SANDBOX_BASE_URL}/graphql"
            self.token_url = f"{SANDBOX_BASE_URL}/oauth2/token"
            self._credentials = ("sandbox", "sandbox")
        else:
            self.graphql_url = str(resource.graphql_url)
            self.token_url = str(resource.token_url)
            self._credentials = (resource.username or "sandbox", resource.password or "sandbox")
        self._cache_key = (self.token_url, self._credentials[0])
        self._document: str | None = None
        # The first call introspects; the workers that start beside it wait for its answer instead
        # of each asking the API the same question.
        self._document_lock = asyncio.Lock()

    async def __aenter__(self) -> IAdvizeClient:
        timeout = httpx.Timeout(
            self.resource.timeout_seconds, connect=self.resource.connect_timeout_seconds, pool=None
        )
        limits = httpx.Limits(
            max_connections=self._max_connections, max_keepalive_connections=self._max_connections
        )
        if self.resource.in_process:
            from outbound_pipeline.sandbox import in_process_app

            transport: httpx.AsyncBaseTransport = httpx.ASGITransport(
                app=in_process_app(self.resource.config_path)
            )
        elif self.resource.transport == "aiohttp":
            from httpx_aiohttp import AiohttpTransport

            transport = AiohttpTransport(limits=limits)
        else:
            transport = httpx.AsyncHTTPTransport(limits=limits)
        self._http = _TokenClient(transport=transport, timeout=timeout)
        self._transport = transport
        # The mutation's request is built from these once per call (see _post).
        self._graphql_request_url = httpx.URL(self.graphql_url)
        self._graphql_headers = {**self._http.headers, "Content-Type": "application/json"}
        self._request_extensions = {"timeout": timeout.as_dict()}
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._http is not None:
            await self._http.aclose()
            self._http = None
            self._transport = None

    @property
    def http(self) -> httpx.AsyncClient:
        if self._http is None:
            raise RuntimeError("use the client as `async with resource.client() as client`")
        return self._http

    # -- token -------------------------------------------------------------------------------

    def _cached_token(self) -> str | None:
        with _TOKEN_CACHE.lock:
            token = _TOKEN_CACHE.tokens.get(self._cache_key)
        if token and token.expires_at - self.resource.token_renew_margin_seconds > time.monotonic():
            return token.value
        return None

    async def token(self, refused: str | None = None) -> str:
        """The shared token; log in when there is none, it nears expiry, or `refused` was it."""
        current = self._cached_token()
        if current is not None and current != refused:
            return current
        async with self._login_lock:
            # Another task may have logged in while this one waited: one 401 storm, one login.
            current = self._cached_token()
            if current is not None and current != refused:
                return current
            if self._login_failed is not None:
                failed = self._login_failed
                raise IAdvizeError(str(failed), transient=failed.transient)
            try:
                return await self._login()
            except IAdvizeError as exc:
                self._login_failed = exc
                raise

    async def _login(self) -> str:
        username, password = self._credentials
        try:
            response = await self.http.post(
                self.token_url,
                data={"username": username, "password": password, "grant_type": "password"},
            )
        except httpx.HTTPError as exc:
            raise IAdvizeError(f"login to {self.token_url} failed: {type(exc).__name__}", transient=True) from None
        if _failed_on_its_side(response.status_code):
            raise IAdvizeError(f"login to {self.token_url} answered HTTP {response.status_code}", transient=True)
        if response.status_code != 200:
            raise IAdvizeError(
                f"login to {self.token_url} refused with HTTP {response.status_code}; check "
                "IADVIZE_USERNAME / IADVIZE_PASSWORD (logins are limited to 10 per minute)"
            )
        # The error quotes nothing of the body: a body half readable may still hold the token.
        try:
            body = response.json()
            value, lifetime = body["access_token"], float(body.get("expires_in", 3600))
        except (ValueError, TypeError, KeyError, AttributeError):
            raise IAdvizeError(
                f"login to {self.token_url} answered HTTP 200 without a readable access_token "
                f"({response.headers.get('content-type') or 'no content type'})"
            ) from None
        if not isinstance(value, str) or not value:
            raise IAdvizeError(f"login to {self.token_url} answered HTTP 200 without a readable access_token")
        token = _Token(value, time.monotonic() + lifetime)
        with _TOKEN_CACHE.lock:
            _TOKEN_CACHE.tokens[self._cache_key] = token
            _TOKEN_CACHE.logins += 1
        return token.value

    async def token_is_valid(self) -> bool:
        """GET /_authenticated with the current token."""
        parts = urlsplit(self.graphql_url)
        url = f"{parts.scheme}://{parts.netloc}/_authenticated"
        token = await self.token()
        response = await self.http.get(url, headers={"Authorization": f"Bearer {token}"})
        return response.status_code == 200

    # -- mutation ----------------------------------------------------------------------------

    async def _post(self, payload: dict[str, Any], token: str) -> httpx.Response:
        request = httpx.Request(
            "POST",
            self._graphql_request_url,
            headers={**self._graphql_headers, "Authorization": f"Bearer {token}"},
            content=json.dumps(payload, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode(),
            extensions=self._request_extensions,
        )
        # Straight to the transport, the client's settings already in the request: its per-request
        # layers (URL and header merging, auth, redirects, cookies, hooks) do nothing for this call
        # and cost as much as the rest of the call's own work, 0.1 ms a call at 1,000 calls a second.
        if self._transport is None:
            raise RuntimeError("use the client as `async with resource.client() as client`")
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
            if self.graphql_url not in _INPUT_TYPES:
                if self.resource.input_type_name:
                    _INPUT_TYPES[self.graphql_url] = (
                        "whatsAppOutboundMessageSendInput",
                        self.resource.input_type_name,
                    )
                else:
                    _INPUT_TYPES[self.graphql_url] = await self._introspect()
            argument, type_name = _INPUT_TYPES[self.graphql_url]
            self._document = (
                f"mutation SendWhatsAppTemplate($input: {type_name}!) {{ "
                f"{MUTATION_FIELD}({argument}: $input) {{ messageText messageId }} }}"
            )
            return self._document

    async def _introspect(self) -> tuple[str, str]:
        token = await self.token()
        response = await self._introspection_post(token)
        if response.status_code == 401:
            token = await self.token(refused=token)
            response = await self._introspection_post(token)
        if _failed_on_its_side(response.status_code):
            raise IAdvizeError(f"introspection of {MUTATION_FIELD} answered HTTP {response.status_code}", transient=True)
        if response.status_code != 200:
            raise IAdvizeError(
                f"introspection of {MUTATION_FIELD} answered HTTP {response.status_code}; set "
                "input_type_name on the iadvize resource if introspection is disabled"
            )
        try:
            found = _mutation_argument(response.json())
        except (ValueError, TypeError, KeyError, AttributeError, IndexError):
            raise IAdvizeError(
                f"introspection of {MUTATION_FIELD} answered HTTP 200 with a body that is not a GraphQL "
                "schema; set input_type_name on the iadvize resource to skip introspection"
            ) from None
        if found is None:
            raise IAdvizeError(f"the API schema has no {MUTATION_FIELD} mutation with an input argument")
        return found

    async def _introspection_post(self, token: str) -> httpx.Response:
        # No message goes with introspection: a lost connection here sent nothing, and the send
        # loop must hear of it as the API's failure, not as an unexpected crash of a worker.
        try:
            return await self._post({"query": _INTROSPECTION, "operationName": "MutationArgument"}, token)
        except httpx.HTTPError as exc:
            raise IAdvizeError(
                f"introspection of {MUTATION_FIELD} at {self.graphql_url} failed: {type(exc).__name__}",
                transient=True,
            ) from None

    async def prepare(self) -> None:
        """Log in and learn the mutation's input type, when not done yet: no message goes with them."""
        await self.document()
        await self.token()

    async def send(self, message: OutboundMessage) -> SendResult:
        """One call; a refused token triggers one shared re-login and one more try."""
        variables = {
            "input": {
                "senderId": wire_format(message.sender),
                "recipientId": wire_format(message.recipient),
                "templateName": message.template_name,
                "language": message.language,
                "headerVariables": variables_payload(message.header_params),
                "bodyVariables": variables_payload(message.body_params),
                "campaignId": message.campaign_id,
            }
        }
        payload = {"query": await self.document(), "variables": variables, "operationName": "SendWhatsAppTemplate"}
        token = await self.token()
        result = await self._send_once(payload, token)
        if result.verdict.action is Action.RELOGIN:
            token = await self.token(refused=token)
            result = await self._send_once(payload, token)
            if result.verdict.action is Action.RELOGIN:
                return SendResult(Verdict(Action.STOP_ALL, "token_refused_after_relogin", result.verdict.code))
        return result

    async def _send_once(self, payload: dict[str, Any], token: str) -> SendResult:
        try:
            response = await self._post(payload, token)
        except httpx.HTTPError as exc:
            return SendResult(classify_exception(exc))
        verdict = classify_http(response.status_code, response.headers)
        if verdict is not None:
            return SendResult(verdict)
        try:
            body = response.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            # A 200 whose body is unreadable may still be an accepted message.
            return SendResult(Verdict(Action.UNKNOWN, "unreadable_response", "200"))
        data = body.get("data")
        data = data.get(MUTATION_FIELD) if isinstance(data, dict) else None
        if isinstance(data, dict) and data.get("messageId"):
            text = data.get("messageText")
            return SendResult(
                Verdict(Action.SENT, "accepted"), str(data["messageId"]), text if isinstance(text, str) else None
            )
        errors = body.get("errors")
        if not isinstance(errors, list) or not errors or not isinstance(errors[0], dict):
            return SendResult(Verdict(Action.UNKNOWN, "empty_response" if not errors else "unreadable_response", "200"))
        try:
            return SendResult(classify_graphql_errors(errors))
        except (TypeError, AttributeError, ValueError):
            # An error entry of an unknown shape: nothing says the message was refused.
            return SendResult(Verdict(Action.UNKNOWN, "unreadable_response", "200"))


def _mutation_argument(body: Any) -> tuple[str, str] | None:
    """(argument name, input type name) of the mutation in an introspection answer, or None.

    Raises TypeError/KeyError/AttributeError on a body of the wrong shape.
    """
    if not isinstance(body, dict):
        raise TypeError("not a JSON object")
    fields = (((body.get("data") or {}).get("__type") or {}).get("fields")) or []
    for item in fields:
        if item["name"] == MUTATION_FIELD and item["args"]:
            arg = item["args"][0]
            type_ = arg["type"]
            name = type_.get("name") or (type_.get("ofType") or {}).get("name")
            if name:
                return str(arg["name"]), str(name)
    return None


def login_count() -> int:
    """Logins made by this process (tests and metadata)."""
    return _TOKEN_CACHE.logins


def forget_tokens() -> None:
    """Drop cached tokens (tests that start a fresh sandbox)."""
    with _TOKEN_CACHE.lock:
        _TOKEN_CACHE.tokens.clear()
    _INPUT_TYPES.clear()
