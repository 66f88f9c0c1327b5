"""The sandbox iAdvize: token login, `/_authenticated`, and the GraphQL outbound mutation.

It validates every request against the GraphQL schema, knows the configured templates (renders the
`messageText` with the pipeline's own rendering, refuses unknown templates, wrong variable counts and
parameters WhatsApp would refuse), records every message it accepts, and can inject the faults of the
reference table (see `faults.py`). Admin endpoints under `/_sandbox/` let tests read and steer it.

This module holds the endpoints; what the sandbox knows is in state.py, its GraphQL in graphql.py,
the rules a message must pass in message_rules.py, its non-GraphQL answers in responses.py.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Iterable
from functools import lru_cache
from typing import Any
from urllib.parse import parse_qs

from graphql import OperationType, get_operation_ast
from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from outbound_pipeline.config import Template
from outbound_pipeline.sandbox.faults import (
    DROP_AFTER_ACCEPT,
    EXPIRED_TOKEN,
    GATEWAY_TIMEOUT,
    HTTP_STATUS,
    TIMEOUT_AFTER_RECEIVE,
    WHATSAPP_ERRORS,
    FaultConfig,
)
from outbound_pipeline.sandbox.graphql import MUTATION, FastPlan, execute_document
from outbound_pipeline.sandbox.logins import USER_LOGINS_PER_MINUTE
from outbound_pipeline.sandbox.responses import (
    CutResponse,
    bad_request,
    graphql_errors,
    hang,
    http_fault,
    unauthenticated,
)
from outbound_pipeline.sandbox.state import SandboxState


def create_app(
    templates: Iterable[Template],
    *,
    latency_ms: float = 0,
    faults: FaultConfig | None = None,
    token_ttl_seconds: int = 86400,
    enforce_pair_rate_seconds: float = 0,
    login_limit_per_minute: int = USER_LOGINS_PER_MINUTE,
) -> Starlette:
    """The sandbox as an ASGI app; its state is `app.state.sandbox` (a SandboxState).

    The keyword arguments are its starting settings, which `POST /_sandbox/config` changes while it
    runs, with a JSON object of any of these keys (state.CONFIG_KEYS lists them with their types
    and defaults; `python -m outbound_pipeline.sandbox --help` prints that list):

    - `latency_ms`: delay before each GraphQL answer, in milliseconds (default 0);
    - `faults`: the faults a mutation may get (a FaultConfig: `rate`, `kinds`, `seed`,
      `retry_after_seconds`, `hang_seconds`, `min_token_age_seconds`), replacing the current ones;
      null or {} for none (the default);
    - `token_ttl_seconds`: lifetime of the tokens issued from then on (default 86400);
    - `enforce_pair_rate_seconds`: answer WhatsApp error 131056 to a second message to one
      recipient within this delay (default 0: off).
    - `login_limit_per_minute`, `ip_login_limit_per_minute`: iAdvize's login policy, 10 logins a
      minute per username and 100 per IP address, HTTP 429 with Retry-After beyond (0: off).
    - `conversations`: how accepted messages get simulated replies (conversations.py), and
      HTTP faults for the next GraphQL reads.

    Any other key is refused with HTTP 400 and an error that lists the accepted ones.
    """
    state = SandboxState(
        templates,
        latency_ms=latency_ms,
        faults=faults,
        token_ttl_seconds=token_ttl_seconds,
        enforce_pair_rate_seconds=enforce_pair_rate_seconds,
        login_limit_per_minute=login_limit_per_minute,
    )
    app = Starlette(
        routes=[
            Route("/oauth2/token", token, methods=["POST"]),
            Route("/_authenticated", authenticated, methods=["GET"]),
            Route("/graphql", graphql, methods=["POST"]),
            Route("/_sandbox/messages", messages, methods=["GET"]),
            Route("/_sandbox/conversations", conversations, methods=["GET"]),
            Route("/_sandbox/stats", stats, methods=["GET"]),
            Route("/_sandbox/config", configure, methods=["POST"]),
            Route("/_sandbox/reset", reset, methods=["POST"]),
            Route("/_sandbox/expire-tokens", expire_tokens, methods=["POST"]),
        ]
    )
    app.state.sandbox = state
    return app


@lru_cache(maxsize=8)
def in_process_app(config_path: str | None = None) -> Starlette:
    """One sandbox per process and configuration (for httpx.ASGITransport): its tokens outlive a
    single client, as a real server's would."""
    from outbound_pipeline.config import load_config

    return create_app(load_config(config_path).templates)


def _sandbox(request: Request) -> SandboxState:
    return request.app.state.sandbox


def _unauthenticated(state: SandboxState) -> Response:
    state.count("unauthenticated")
    return unauthenticated()


# --- the API -----------------------------------------------------------------------------------


async def token(request: Request) -> Response:
    """POST /oauth2/token: the password grant; any non-empty username and password log in."""
    state = _sandbox(request)
    # Form-encoded as OAuth2 wants; parsed by hand so the sandbox needs no multipart package.
    raw = (await request.body()).decode("utf-8", "replace")
    form = {key: values[0] for key, values in parse_qs(raw, keep_blank_values=True).items()}
    if form.get("grant_type") != "password":
        state.count("login_failures")
        return JSONResponse(
            {
                "error": "unsupported_grant_type",
                "error_description": "grant_type must be 'password'",
            },
            status_code=400,
        )
    if not form.get("username") or not form.get("password"):
        state.count("login_failures")
        return JSONResponse(
            {
                "error": "invalid_grant",
                "error_description": "Invalid username and password combination",
            },
            status_code=401,
        )
    if (fault := state.draw_call_fault("login")) is not None:
        return http_fault(fault, state.faults)
    client = request.client.host if request.client else "unknown"
    if (wait := state.login_policy.admit(form["username"], client)) is not None:
        return JSONResponse(
            {"error": "too_many_requests", "error_description": "Too many logins, retry later"},
            status_code=429,
            headers={"Retry-After": str(max(1, math.ceil(wait)))},
        )
    return JSONResponse(
        {
            "access_token": state.issue_token(),
            "expires_in": state.token_ttl_seconds,
            "token_type": "Bearer",
            "refresh_token": "none",
        }
    )


async def authenticated(request: Request) -> Response:
    """GET /_authenticated: 200 when the bearer token is valid."""
    state = _sandbox(request)
    if (fault := state.draw_call_fault("token_check")) is not None:
        return http_fault(fault, state.faults)
    if state.bearer(request.headers.get("authorization")) is None:
        return _unauthenticated(state)
    return JSONResponse({"authenticated": True})


async def graphql(request: Request) -> Response:
    """POST /graphql: the schema's queries and the outbound mutation, faults included."""
    state = _sandbox(request)
    state.count("graphql_calls")
    if state.latency_ms > 0:
        # The request read first: one that arrived whole is answered, and its message recorded,
        # even when its client is gone by then (killed mid-call), as a real server would.
        await request.body()
        await asyncio.sleep(state.latency_ms / 1000)
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "application/json":
        return JSONResponse(
            graphql_errors("Content-Type must be application/json", "UNSUPPORTED_MEDIA_TYPE"),
            status_code=415,
        )
    token = state.bearer(request.headers.get("authorization"))
    if token is None:
        return _unauthenticated(state)
    read = await _read_graphql_request(request)
    if isinstance(read, Response):
        return read
    query, variables, operation_name = read

    parsed = state.document(query)
    if parsed.document is None:
        return JSONResponse({"errors": parsed.errors})
    # Faults hit the sending mutation only: introspection and other reads always answer.
    operation = get_operation_ast(parsed.document, operation_name)
    is_mutation = operation is not None and operation.operation == OperationType.MUTATION
    if not is_mutation:
        state.count("graphql_reads")
        if (read_fault := _read_fault(state)) is not None:
            return read_fault
        if (fault := state.draw_call_fault("read")) is not None:
            return http_fault(fault, state.faults)
    fault = state.draw_fault(token) if is_mutation else None
    refused = _refused_by_fault(state, fault, token, parsed.fast)
    if refused is not None:
        return refused
    body = execute_document(
        parsed.document, parsed.fast, variables, operation_name, state.send, state.read_queries()
    )
    return await _answer(request, state, body, is_mutation, fault)


async def _read_graphql_request(
    request: Request,
) -> tuple[str, dict[str, Any] | None, str | None] | Response:
    """(query, variables, operationName) of the request's JSON body, or the 400 that says why not."""
    try:
        payload = await request.json()
    except ValueError:
        return bad_request("the body is not valid JSON")
    if not isinstance(payload, dict) or not isinstance(payload.get("query"), str):
        return bad_request("the body must be a JSON object with a 'query' string")
    variables = payload.get("variables")
    operation_name = payload.get("operationName")
    if variables is not None and not isinstance(variables, dict):
        return bad_request("'variables' must be a JSON object")
    if operation_name is not None and not isinstance(operation_name, str):
        return bad_request("'operationName' must be a string")
    return payload["query"], variables, operation_name


def _read_fault(state: SandboxState) -> Response | None:
    """The HTTP fault queued for this read (`conversations.read_faults`), if any."""
    kind = state.conversations.take_read_fault()
    return None if kind is None else http_fault(kind, state.faults)


def _refused_by_fault(
    state: SandboxState, fault: str | None, token: str, fast: FastPlan | None
) -> Response | None:
    """The answer of a fault that refuses the call before it is accepted; None for the others."""
    if fault in HTTP_STATUS and fault != GATEWAY_TIMEOUT:
        return http_fault(fault, state.faults)
    if fault == EXPIRED_TOKEN:
        state.revoke(token)
        return _unauthenticated(state)
    if fault in WHATSAPP_ERRORS:
        state.count("rejected")
        key = fast.response_key if fast else MUTATION
        return JSONResponse(
            {"data": {key: None}, "errors": [WHATSAPP_ERRORS[fault].graphql_error(key)]}
        )
    return None


async def _answer(
    request: Request,
    state: SandboxState,
    body: dict[str, Any],
    is_mutation: bool,
    fault: str | None,
) -> Response:
    """The executed call's answer, unless a fault loses it after the message was accepted."""
    if "errors" in body:
        if is_mutation:
            state.count("rejected")
    elif fault == TIMEOUT_AFTER_RECEIVE:
        # Recorded above; the client times out without knowing it was accepted.
        await hang(request, state.faults.hang_seconds)
    elif fault == DROP_AFTER_ACCEPT:
        return CutResponse()
    elif fault == GATEWAY_TIMEOUT:
        # Recorded above; the gateway in front gave up waiting and answers for the server.
        return http_fault(fault, state.faults)
    return JSONResponse(body)


# --- admin: /_sandbox/ -------------------------------------------------------------------------


async def messages(request: Request) -> Response:
    """GET /_sandbox/messages: every message accepted, oldest first."""
    return JSONResponse(_sandbox(request).records())


async def conversations(request: Request) -> Response:
    """GET /_sandbox/conversations: every simulated conversation, with the message it answers."""
    return JSONResponse(_sandbox(request).conversations.records())


async def stats(request: Request) -> Response:
    """GET /_sandbox/stats: logins, calls, accepted and rejected messages, faults drawn."""
    return JSONResponse(_sandbox(request).stats())


async def configure(request: Request) -> Response:
    """POST /_sandbox/config: change the running sandbox's settings with a JSON object of any of
    latency_ms, faults, token_ttl_seconds, enforce_pair_rate_seconds, conversations (see
    create_app); HTTP 400
    and nothing changed when a key or a value is refused."""
    try:
        settings = await request.json()
        if not isinstance(settings, dict):
            raise ValueError("expected a JSON object")
        _sandbox(request).configure(settings)
    except ValidationError as exc:
        return JSONResponse(
            {
                "error": "invalid faults",
                "detail": exc.errors(include_url=False, include_context=False),
            },
            status_code=400,
        )
    except (ValueError, TypeError) as exc:
        return JSONResponse({"error": str(exc)}, status_code=400)
    return JSONResponse({"ok": True})


async def reset(request: Request) -> Response:
    """POST /_sandbox/reset: forget messages, counters and pair-rate history; tokens stay."""
    _sandbox(request).reset()
    return JSONResponse({"ok": True})


async def expire_tokens(request: Request) -> Response:
    """POST /_sandbox/expire-tokens: every token issued so far is refused from now on."""
    _sandbox(request).expire_tokens()
    return JSONResponse({"ok": True})
