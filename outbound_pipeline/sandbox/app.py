"""The sandbox iAdvize: token login, `/_authenticated`, and the GraphQL outbound mutation.

It validates every request against the GraphQL schema, knows the configured templates (renders the
`messageText` with the pipeline's own rendering, refuses unknown templates, wrong variable counts and
parameters WhatsApp would refuse), records every message it accepts, and can inject the faults of the
reference table (see `faults.py`). Admin endpoints under `/_sandbox/` let tests read and steer it.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import random
import re
import secrets
import string
import threading
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import httpx
from graphql import (
    DocumentNode,
    FieldNode,
    GraphQLError,
    OperationDefinitionNode,
    OperationType,
    VariableNode,
    build_schema,
    execute,
    get_operation_ast,
    parse,
    print_ast,
    validate,
)
from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from outbound_pipeline.config import Template
from outbound_pipeline.sandbox.faults import (
    DROP_AFTER_ACCEPT,
    EXPIRED_TOKEN,
    GATEWAY_TIMEOUT,
    HTTP_STATUS,
    PAIR_RATE_LIMIT,
    TIMEOUT_AFTER_RECEIVE,
    WHATSAPP_ERRORS,
    FaultConfig,
    FaultPicker,
    retry_after_header,
)
from outbound_pipeline.whatsapp import (
    parameter_violation,
    params_from_payload,
    placeholders,
    preview_text,
)

SCHEMA = build_schema((Path(__file__).parent / "schema.graphql").read_text(encoding="utf-8"))
MUTATION = "whatsAppOutboundMessageSend"
INPUT_ARGUMENT = "whatsAppOutboundMessageSendInput"

_ID_ALPHABET = string.ascii_letters + string.digits
# Message ids must be unique, not secret: a urandom-seeded PRNG is ~10x cheaper than `secrets` here.
_IDS = random.Random()
_PHONE_DIGITS = re.compile(r"[0-9]{8,15}")  # E.164 without '+': country code included
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_DOCUMENT_CACHE_MAX = 1024  # the pipeline sends one query text; a bound keeps stray clients harmless


class SandboxConnectionDrop(httpx.RemoteProtocolError):
    """Raised by the app to cut a response half-way (fault `drop_after_accept`).

    Over a socket, uvicorn closes the connection and the client sees a truncated body. In process
    (httpx.ASGITransport re-raises app exceptions) the client gets this httpx error directly, so it is
    handled exactly like the network failure it stands for.
    """


def _error(message: str, name: str, retry_policy: str = "NO_RETRY", code: int | None = None) -> GraphQLError:
    extensions: dict[str, Any] = {"name": name, "retryPolicy": retry_policy}
    if code is not None:
        extensions["whatsappCode"] = code
    return GraphQLError(message, extensions=extensions)


def _named(errors: Iterable[GraphQLError], name: str) -> list[dict[str, Any]]:
    """Errors of the document itself (syntax, validation), with a stable extensions.name."""
    out = []
    for error in errors:
        formatted = dict(error.formatted)
        formatted["extensions"] = {"name": name, "retryPolicy": "NO_RETRY"}
        out.append(formatted)
    return out


def _now_iso() -> str:
    return dt.datetime.now(dt.UTC).isoformat()


@dataclass(frozen=True)
class _FastPlan:
    """How to answer a document that is exactly `mutation($v: WhatsAppOutboundMessageSendInput!)
    { whatsAppOutboundMessageSend(whatsAppOutboundMessageSendInput: $v) { <scalar fields> } }`
    without graphql-core's executor, whose variable coercion is most of a call's cost."""

    operation_name: str | None
    variable: str
    response_key: str
    field_node: FieldNode
    fields: tuple[tuple[str, str], ...]  # (response key, field name)


@dataclass(frozen=True)
class _Parsed:
    document: DocumentNode | None
    errors: list[dict[str, Any]]  # parse or validation errors, already formatted
    fast: _FastPlan | None


_PAYLOAD_FIELDS = frozenset({"messageText", "messageId", "__typename"})
_REQUIRED_STRINGS = ("senderId", "recipientId", "templateName", "language", "campaignId")
_VARIABLE_LISTS = ("headerVariables", "bodyVariables")


def _fast_plan(document: DocumentNode) -> _FastPlan | None:
    """The plan when the (already validated) document has the pipeline's shape; None otherwise, and
    the call goes through graphql-core's executor."""
    if len(document.definitions) != 1 or not isinstance(document.definitions[0], OperationDefinitionNode):
        return None
    operation = document.definitions[0]
    if operation.operation != OperationType.MUTATION or operation.directives:
        return None
    definitions = operation.variable_definitions or ()
    selections = operation.selection_set.selections
    if len(definitions) != 1 or len(selections) != 1 or not isinstance(selections[0], FieldNode):
        return None
    definition, field = definitions[0], selections[0]
    if (
        definition.default_value is not None
        or definition.directives
        or print_ast(definition.type) != "WhatsAppOutboundMessageSendInput!"
        or field.name.value != MUTATION
        or field.directives
        or len(field.arguments) != 1
        or field.arguments[0].name.value != INPUT_ARGUMENT
        or not isinstance(field.arguments[0].value, VariableNode)
        or field.arguments[0].value.name.value != definition.variable.name.value
        or field.selection_set is None
    ):
        return None
    fields = []
    for selection in field.selection_set.selections:
        if (
            not isinstance(selection, FieldNode)
            or selection.name.value not in _PAYLOAD_FIELDS
            or selection.directives
            or selection.arguments
            or selection.selection_set
        ):
            return None
        fields.append(((selection.alias or selection.name).value, selection.name.value))
    return _FastPlan(
        operation_name=operation.name.value if operation.name else None,
        variable=definition.variable.name.value,
        response_key=(field.alias or field.name).value,
        field_node=field,
        fields=tuple(fields),
    )


def _is_plain_input(value: Any) -> bool:
    """True when graphql-core would coerce `value` to itself: exact types, no extra keys, no
    single-item-to-list or int-to-ID conversion. Anything else takes the executor's path."""
    if type(value) is not dict:
        return False
    for key, item in value.items():
        if key in _REQUIRED_STRINGS:
            if type(item) is not str:
                return False
        elif key in _VARIABLE_LISTS:
            if item is None:
                continue
            if type(item) is not list:
                return False
            for pair in item:
                if (
                    type(pair) is not dict
                    or len(pair) != 2
                    or type(pair.get("key")) is not str
                    or type(pair.get("value")) is not str
                ):
                    return False
        else:
            return False
    return all(key in value for key in _REQUIRED_STRINGS)


class SandboxState:
    """Everything one sandbox knows; shared by all requests of its app, safe across threads."""

    def __init__(
        self,
        templates: Iterable[Template],
        *,
        latency_ms: float = 0.0,
        faults: FaultConfig | None = None,
        token_ttl_seconds: int = 86400,
        enforce_pair_rate_seconds: float = 0.0,
    ) -> None:
        self.templates: dict[tuple[str, str], Template] = {(t.name, t.language): t for t in templates}
        self.latency_ms = latency_ms
        self.token_ttl_seconds = token_ttl_seconds
        self.enforce_pair_rate_seconds = enforce_pair_rate_seconds
        self.tokens: dict[str, float] = {}  # token -> monotonic expiry
        self._issued: dict[str, float] = {}  # token -> monotonic issue time
        self.messages: list[dict[str, Any]] = []
        self.counters: Counter[str] = Counter()
        self.faults_by_kind: Counter[str] = Counter()
        self._last_to_recipient: dict[str, float] = {}
        self._documents: dict[str, _Parsed] = {}
        self._lock = threading.Lock()
        self.faults = faults or FaultConfig()
        self._picker = FaultPicker(self.faults)

    # --- configuration -------------------------------------------------------------------------

    def set_faults(self, faults: FaultConfig | None) -> None:
        with self._lock:
            self.faults = faults or FaultConfig()
            self._picker = FaultPicker(self.faults)

    def configure(self, settings: Mapping[str, Any]) -> None:
        """Apply `{latency_ms?, faults?, token_ttl_seconds?, enforce_pair_rate_seconds?}`."""
        unknown = set(settings) - {"latency_ms", "faults", "token_ttl_seconds", "enforce_pair_rate_seconds"}
        if unknown:
            raise ValueError(f"unknown settings {sorted(unknown)}")
        # Validate everything before changing anything.
        faults = FaultConfig.model_validate(settings["faults"]) if settings.get("faults") is not None else None
        latency = float(settings.get("latency_ms", self.latency_ms))
        ttl = int(settings.get("token_ttl_seconds", self.token_ttl_seconds))
        pair = float(settings.get("enforce_pair_rate_seconds", self.enforce_pair_rate_seconds))
        if latency < 0 or ttl < 0 or pair < 0:
            raise ValueError("latency_ms, token_ttl_seconds and enforce_pair_rate_seconds must be >= 0")
        if "faults" in settings:
            self.set_faults(faults)
        self.latency_ms, self.token_ttl_seconds, self.enforce_pair_rate_seconds = latency, ttl, pair

    def reset(self) -> None:
        """Forget messages, counters and pair-rate history; tokens stay valid. Faults restart their
        seeded sequence, so a test that resets gets the same draws as a fresh sandbox."""
        with self._lock:
            self.messages.clear()
            self.counters.clear()
            self.faults_by_kind.clear()
            self._last_to_recipient.clear()
            self._picker = FaultPicker(self.faults)

    def count(self, name: str, n: int = 1) -> None:
        with self._lock:
            self.counters[name] += n

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {
                "logins": self.counters["logins"],
                "login_failures": self.counters["login_failures"],
                "graphql_calls": self.counters["graphql_calls"],
                "graphql_reads": self.counters["graphql_reads"],  # queries: introspection, ...
                "unauthenticated": self.counters["unauthenticated"],
                "accepted": self.counters["accepted"],
                "rejected": self.counters["rejected"],
                "pair_rate_limited": self.counters["pair_rate_limited"],
                "faults_total": sum(self.faults_by_kind.values()),
                "faults": dict(self.faults_by_kind),
            }

    def records(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self.messages)

    # --- tokens --------------------------------------------------------------------------------

    def issue_token(self) -> str:
        token = secrets.token_urlsafe(32)
        with self._lock:
            now = time.monotonic()
            self.tokens[token] = now + self.token_ttl_seconds
            self._issued[token] = now
            self.counters["logins"] += 1
        return token

    def bearer(self, authorization: str | None) -> str | None:
        """The caller's token when it is one we issued and it has not expired."""
        if not authorization or not authorization.startswith("Bearer "):
            return None
        token = authorization[len("Bearer ") :].strip()
        expiry = self.tokens.get(token)
        return token if expiry is not None and expiry > time.monotonic() else None

    def revoke(self, token: str) -> None:
        with self._lock:
            self.tokens.pop(token, None)
            self._issued.pop(token, None)

    def expire_tokens(self) -> None:
        with self._lock:
            self.tokens.clear()
            self._issued.clear()

    def token_age(self, token: str) -> float:
        return time.monotonic() - self._issued.get(token, float("-inf"))

    # --- GraphQL -------------------------------------------------------------------------------

    def document(self, query: str) -> _Parsed:
        """The parsed and validated document, or its errors; cached by query text because the same
        query arrives thousands of times and validation costs far more than the rest of a call."""
        cached = self._documents.get(query)
        if cached is not None:
            return cached
        try:
            document = parse(query)
        except GraphQLError as exc:
            parsed = _Parsed(None, _named([exc], "GRAPHQL_PARSE_FAILED"), None)
        else:
            errors = validate(SCHEMA, document)
            if errors:
                parsed = _Parsed(None, _named(errors, "GRAPHQL_VALIDATION_FAILED"), None)
            else:
                parsed = _Parsed(document, [], _fast_plan(document))
        with self._lock:
            if len(self._documents) >= _DOCUMENT_CACHE_MAX:
                self._documents.clear()
            self._documents[query] = parsed
        return parsed

    def draw_fault(self, token: str) -> str | None:
        """This call's fault, if any. Every call consumes its draw, so a seed gives the same sequence
        whatever happens to each call."""
        fault = self._picker.pick()
        if fault == EXPIRED_TOKEN and self.token_age(token) < self.faults.min_token_age_seconds:
            # A token the server has just issued does not expire: without this, the retry that
            # follows a re-login could be refused again, which on the real API means bad credentials.
            return None
        if fault is not None:
            with self._lock:
                self.faults_by_kind[fault] += 1
        return fault

    def send(self, data: Mapping[str, Any]) -> dict[str, str]:
        """The mutation's resolver: check the input as iAdvize and WhatsApp would, then record it."""
        name, language = data["templateName"], data["language"]
        template = self.templates.get((name, language))
        if template is None:
            raise _error(
                f"(#132001) Template name does not exist in the translation: {name} ({language})",
                "TEMPLATE_NOT_FOUND",
                code=132001,
            )
        try:
            header = params_from_payload(data.get("headerVariables"))
            body = params_from_payload(data.get("bodyVariables"))
        except ValueError as exc:
            raise _error(
                f"(#132000) Number of parameters does not match the expected number of params: {exc}",
                "INVALID_TEMPLATE_PARAMETERS",
                code=132000,
            ) from None
        expected_header = len(placeholders(template.header or ""))
        expected_body = len(placeholders(template.body))
        if (len(header), len(body)) != (expected_header, expected_body):
            raise _error(
                "(#132000) Number of parameters does not match the expected number of params: "
                f"header expects {expected_header}, got {len(header)}; "
                f"body expects {expected_body}, got {len(body)}",
                "INVALID_TEMPLATE_PARAMETERS",
                code=132000,
            )
        body_only = template.header is None
        for component, params in (("header", header), ("body", body)):
            for number, value in enumerate(params, start=1):
                rule = parameter_violation(value, component, body_only)
                if rule is not None:
                    # The rule, never the value: parameters are customer data.
                    raise _error(
                        f"(#132018) There was an issue with the parameters in your template: "
                        f"{component} {{{{{number}}}}} {rule}",
                        "INVALID_TEMPLATE_PARAMETERS",
                        code=132018,
                    )
        for field in ("senderId", "recipientId"):
            if not _PHONE_DIGITS.fullmatch(data[field]):
                raise _error(
                    f"{field} must be the phone number's 8 to 15 digits with the country code, no '+'",
                    "BAD_USER_INPUT",
                )
        if not _UUID.fullmatch(data["campaignId"]):
            raise _error("campaignId must be a UUID", "BAD_USER_INPUT")

        recipient = data["recipientId"]
        text = preview_text(template.header, template.body, header, body)
        message_id = "".join(_IDS.choices(_ID_ALPHABET, k=27))
        with self._lock:
            if self.enforce_pair_rate_seconds > 0:
                now = time.monotonic()
                last = self._last_to_recipient.get(recipient)
                if last is not None and now - last < self.enforce_pair_rate_seconds:
                    self.counters["pair_rate_limited"] += 1
                    raise _error(
                        f"(#{PAIR_RATE_LIMIT.code}) {PAIR_RATE_LIMIT.message}",
                        "WHATSAPP_ERROR",
                        PAIR_RATE_LIMIT.retry_policy,
                        PAIR_RATE_LIMIT.code,
                    )
                self._last_to_recipient[recipient] = now
            self.messages.append(
                {
                    "message_id": message_id,
                    "sender_id": data["senderId"],
                    "recipient_id": recipient,
                    "template_name": template.name,
                    "language": template.language,
                    "header_variables": header,
                    "body_variables": body,
                    "campaign_id": data["campaignId"],
                    "message_text": text,
                    "received_at": _now_iso(),
                }
            )
            self.counters["accepted"] += 1
        return {"messageText": text, "messageId": message_id}


def _unauthenticated(state: SandboxState) -> JSONResponse:
    state.count("unauthenticated")
    return JSONResponse(
        {
            "errors": [
                {
                    "message": "Invalid or expired token",
                    "extensions": {"name": "UNAUTHENTICATED", "retryPolicy": "NO_RETRY"},
                }
            ]
        },
        status_code=401,
        headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
    )


def _bad_request(message: str) -> JSONResponse:
    return JSONResponse(
        {"errors": [{"message": message, "extensions": {"name": "BAD_REQUEST", "retryPolicy": "NO_RETRY"}}]},
        status_code=400,
    )


def _http_fault(kind: str, faults: FaultConfig) -> Response:
    status = HTTP_STATUS[kind]
    if status == 429:
        return JSONResponse(
            {"errors": [{"message": "Too many requests", "extensions": {"name": "RATE_LIMITED", "retryPolicy": "RETRY"}}]},
            status_code=429,
            headers={"Retry-After": retry_after_header(faults.retry_after_seconds)},
        )
    if status == 500:
        return JSONResponse(
            {"errors": [{"message": "Internal server error", "extensions": {"name": "INTERNAL_SERVER_ERROR", "retryPolicy": "RETRY"}}]},
            status_code=500,
        )
    # A gateway answers 502/504 itself, in plain text: clients must not expect JSON there.
    return PlainTextResponse(f"{status} {'Bad Gateway' if status == 502 else 'Gateway Timeout'}", status_code=status)


class _CutResponse(Response):
    """Announces a body it never finishes: the message was accepted, then the connection is lost."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", b"4096")],
            }
        )
        await send({"type": "http.response.body", "body": b'{"data":{"whatsAppOutbound', "more_body": True})
        raise SandboxConnectionDrop("sandbox fault drop_after_accept: connection cut mid-response")


async def _hang(request: Request, seconds: float) -> None:
    """Hold the answer `seconds`, or until the client gives up and disconnects (so a timed-out
    client does not keep a task alive until the server stops)."""

    async def disconnected() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(disconnected(), timeout=seconds)


def _execution_errors(errors: Iterable[GraphQLError]) -> list[dict[str, Any]]:
    """Resolver errors keep their extensions; variable coercion errors get BAD_USER_INPUT and any
    other exception INTERNAL_SERVER_ERROR, so every error has a name like iAdvize's."""
    out = []
    for error in errors:
        formatted = dict(error.formatted)
        if not (error.extensions or {}).get("name"):
            internal = error.original_error is not None and not isinstance(error.original_error, GraphQLError)
            name = "INTERNAL_SERVER_ERROR" if internal else "BAD_USER_INPUT"
            formatted["extensions"] = {"name": name, "retryPolicy": "NO_RETRY"}
        out.append(formatted)
    return out


def _run_fast(plan: _FastPlan, state: SandboxState, data: dict[str, Any]) -> dict[str, Any]:
    """What graphql-core's executor answers for the plan's document, without running it."""
    try:
        payload = state.send(data)
    except GraphQLError as exc:
        located = GraphQLError(
            exc.message, nodes=[plan.field_node], path=[plan.response_key], extensions=exc.extensions
        )
        return {"data": {plan.response_key: None}, "errors": [located.formatted]}
    values = {**payload, "__typename": "WhatsAppOutboundMessageSendPayload"}
    return {"data": {plan.response_key: {key: values[name] for key, name in plan.fields}}}


def create_app(
    templates: Iterable[Template],
    *,
    latency_ms: float = 0,
    faults: FaultConfig | None = None,
    token_ttl_seconds: int = 86400,
    enforce_pair_rate_seconds: float = 0,
) -> Starlette:
    """The sandbox as an ASGI app; its state is `app.state.sandbox` (a SandboxState)."""
    state = SandboxState(
        templates,
        latency_ms=latency_ms,
        faults=faults,
        token_ttl_seconds=token_ttl_seconds,
        enforce_pair_rate_seconds=enforce_pair_rate_seconds,
    )

    async def token(request: Request) -> Response:
        # Form-encoded as OAuth2 wants; parsed by hand so the sandbox needs no multipart package.
        raw = (await request.body()).decode("utf-8", "replace")
        form = {key: values[0] for key, values in parse_qs(raw, keep_blank_values=True).items()}
        if form.get("grant_type") != "password":
            state.count("login_failures")
            return JSONResponse(
                {"error": "unsupported_grant_type", "error_description": "grant_type must be 'password'"},
                status_code=400,
            )
        if not form.get("username") or not form.get("password"):
            state.count("login_failures")
            return JSONResponse(
                {"error": "invalid_grant", "error_description": "Invalid username and password combination"},
                status_code=401,
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
        if state.bearer(request.headers.get("authorization")) is None:
            return _unauthenticated(state)
        return JSONResponse({"authenticated": True})

    async def graphql(request: Request) -> Response:
        state.count("graphql_calls")
        if state.latency_ms > 0:
            await asyncio.sleep(state.latency_ms / 1000)
        if request.headers.get("content-type", "").split(";")[0].strip().lower() != "application/json":
            return JSONResponse(
                {"errors": [{"message": "Content-Type must be application/json", "extensions": {"name": "UNSUPPORTED_MEDIA_TYPE", "retryPolicy": "NO_RETRY"}}]},
                status_code=415,
            )
        token = state.bearer(request.headers.get("authorization"))
        if token is None:
            return _unauthenticated(state)
        try:
            payload = await request.json()
        except ValueError:
            return _bad_request("the body is not valid JSON")
        if not isinstance(payload, dict) or not isinstance(payload.get("query"), str):
            return _bad_request("the body must be a JSON object with a 'query' string")
        variables = payload.get("variables")
        operation_name = payload.get("operationName")
        if variables is not None and not isinstance(variables, dict):
            return _bad_request("'variables' must be a JSON object")
        if operation_name is not None and not isinstance(operation_name, str):
            return _bad_request("'operationName' must be a string")

        parsed = state.document(payload["query"])
        if parsed.document is None:
            return JSONResponse({"errors": parsed.errors})
        document, fast = parsed.document, parsed.fast

        # Faults hit the sending mutation only: introspection and other reads always answer.
        operation = get_operation_ast(document, operation_name)
        is_mutation = operation is not None and operation.operation == OperationType.MUTATION
        if not is_mutation:
            state.count("graphql_reads")
        fault = state.draw_fault(token) if is_mutation else None
        if fault in HTTP_STATUS and fault != GATEWAY_TIMEOUT:
            return _http_fault(fault, state.faults)
        if fault == EXPIRED_TOKEN:
            state.revoke(token)
            return _unauthenticated(state)
        if fault in WHATSAPP_ERRORS:
            state.count("rejected")
            key = fast.response_key if fast else MUTATION
            return JSONResponse({"data": {key: None}, "errors": [WHATSAPP_ERRORS[fault].graphql_error(key)]})

        if (
            fast is not None
            and operation_name in (None, fast.operation_name)
            and variables is not None
            and _is_plain_input(variables.get(fast.variable))
        ):
            body = _run_fast(fast, state, variables[fast.variable])
        else:
            result = execute(
                SCHEMA,
                document,
                root_value={MUTATION: lambda _info, **args: state.send(args[INPUT_ARGUMENT])},
                variable_values=variables,
                operation_name=operation_name,
            )
            body = {"data": result.data}
            if result.errors:
                body["errors"] = _execution_errors(result.errors)
        if "errors" in body:
            if is_mutation:
                state.count("rejected")
        elif fault == TIMEOUT_AFTER_RECEIVE:
            # Recorded above; the client times out without knowing it was accepted.
            await _hang(request, state.faults.hang_seconds)
        elif fault == DROP_AFTER_ACCEPT:
            return _CutResponse()
        elif fault == GATEWAY_TIMEOUT:
            # Recorded above; the gateway in front gave up waiting and answers for the server.
            return _http_fault(fault, state.faults)
        return JSONResponse(body)

    async def messages(request: Request) -> Response:
        return JSONResponse(state.records())

    async def stats(request: Request) -> Response:
        return JSONResponse(state.stats())

    async def configure(request: Request) -> Response:
        try:
            settings = await request.json()
            if not isinstance(settings, dict):
                raise ValueError("expected a JSON object")
            state.configure(settings)
        except ValidationError as exc:
            return JSONResponse({"error": "invalid faults", "detail": exc.errors(include_url=False, include_context=False)}, status_code=400)
        except (ValueError, TypeError) as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        return JSONResponse({"ok": True})

    async def reset(request: Request) -> Response:
        state.reset()
        return JSONResponse({"ok": True})

    async def expire_tokens(request: Request) -> Response:
        state.expire_tokens()
        return JSONResponse({"ok": True})

    app = Starlette(
        routes=[
            Route("/oauth2/token", token, methods=["POST"]),
            Route("/_authenticated", authenticated, methods=["GET"]),
            Route("/graphql", graphql, methods=["POST"]),
            Route("/_sandbox/messages", messages, methods=["GET"]),
            Route("/_sandbox/stats", stats, methods=["GET"]),
            Route("/_sandbox/config", configure, methods=["POST"]),
            Route("/_sandbox/reset", reset, methods=["POST"]),
            Route("/_sandbox/expire-tokens", expire_tokens, methods=["POST"]),
        ]
    )
    app.state.sandbox = state
    return app
