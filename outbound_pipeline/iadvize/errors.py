"""The iAdvize / WhatsApp error vocabulary, mapped to what the pipeline does with each.

Pure functions over what came back (HTTP status, GraphQL errors, transport exceptions), following the
table of the reference: retry, defer the row, fail it, stop the campaign, stop everything, or record
an unknown outcome that is never resent automatically. `IAdvizeError` is what the client raises when
the API cannot be used at all (login, introspection, settings).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import email.utils
import enum
import re
from dataclasses import dataclass
from typing import Any

import httpx

from outbound_pipeline.outcomes import Reason, with_detail
from outbound_pipeline.whatsapp import MARKETING_STOPPED


class IAdvizeError(RuntimeError):
    """The API refused the credentials or answered something the pipeline cannot use.

    `transient`: it could not be reached or failed on its side (a network error, HTTP 429 or 5xx
    on login or introspection), so trying again later may work, unlike refused credentials or a
    schema without the mutation.
    """

    def __init__(self, message: str, *, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient


def failed_on_its_side(status: int) -> bool:
    """An HTTP status that says the API failed (or is busy), not that it refused the request."""
    return status == 429 or status >= 500


class Action(enum.StrEnum):
    SENT = "sent"
    RETRY = "retry"  # not accepted; try this row again in this run after `delay`
    DEFER = "defer"  # not accepted; leave the row for a later run (not before `defer_seconds`)
    FAIL = "fail"  # not accepted and never will be as it stands
    UNKNOWN = "unknown"  # may have been accepted: never resend automatically
    RELOGIN = "relogin"  # token refused: log in again once, then retry
    STOP_CAMPAIGN = "stop_campaign"  # template paused/disabled, spam limit
    STOP_ALL = "stop_all"  # account blocked, locked, token or permission refused
    STOP_RUN = "stop_run"  # this run cannot use the API for now (no login within its bound)


@dataclass(frozen=True)
class Verdict:
    action: Action
    reason: str
    code: str | None = None
    delay: float | None = None  # seconds before the retry (Retry-After when given)
    defer_seconds: float | None = (
        None  # for DEFER and the stops: how long to wait (stops: None = until cleared)
    )
    throttle: bool = False  # slow the whole sender down (throughput limits)
    suppress: bool = False  # treat the recipient like an opt-out from now on (131050)


# iAdvize's stable identifiers (extensions.name) that mean the token or its rights are refused.
_AUTH_NAMES = {"UNAUTHENTICATED", "UNAUTHORIZED", "INVALID_TOKEN", "TOKEN_EXPIRED"}
_PERMISSION_NAMES = {"PERMISSION_DENIED", "FORBIDDEN"}

_CODE_IN_MESSAGE = re.compile(r"\(#(\d+)\)")

PAIR_RATE_SECONDS = 6.0
TEMPLATE_PAUSE_SECONDS = 3 * 3600.0
SPAM_PAUSE_SECONDS = 3600.0
MARKETING_CAP_SECONDS = 24 * 3600.0
MAINTENANCE_SECONDS = 60.0
# The longest Retry-After a run waits out with its rows claimed; a longer one stops the campaign until
# then (its rows deferred, the halt ending by itself) instead of holding the run for hours.
LONGEST_RETRY_WAIT_SECONDS = 300.0

# The reference's table of WhatsApp codes: which codes mean what, and what the pipeline does.
CODE_VERDICTS: tuple[tuple[frozenset[str], Verdict], ...] = (
    (
        frozenset({"130429", "4", "80007"}),
        Verdict(Action.RETRY, Reason.THROUGHPUT_LIMIT, throttle=True),
    ),
    # Only this recipient is limited: leave it for a later run and go on with the others.
    (
        frozenset({"131056"}),
        Verdict(Action.DEFER, Reason.PAIR_RATE_LIMIT, defer_seconds=PAIR_RATE_SECONDS),
    ),
    (
        frozenset({"1", "2", "131000", "131016", "133004"}),
        Verdict(Action.RETRY, Reason.TEMPORARY_ERROR),
    ),
    (frozenset({"131057"}), Verdict(Action.RETRY, Reason.MAINTENANCE, delay=MAINTENANCE_SECONDS)),
    (frozenset({"131026"}), Verdict(Action.FAIL, Reason.UNDELIVERABLE)),
    (
        frozenset({MARKETING_STOPPED}),
        Verdict(Action.FAIL, Reason.USER_STOPPED_MARKETING, suppress=True),
    ),
    (
        frozenset({"131049"}),
        Verdict(Action.DEFER, Reason.MARKETING_CAP, defer_seconds=MARKETING_CAP_SECONDS),
    ),
    (
        frozenset(
            {"132000", "132001", "132005", "132007", "132012", "132018", "131008", "131009", "100"}
        ),
        Verdict(Action.FAIL, Reason.INVALID_PAYLOAD_OR_TEMPLATE),
    ),
    (
        frozenset({"132015"}),
        Verdict(Action.STOP_CAMPAIGN, Reason.TEMPLATE_PAUSED, defer_seconds=TEMPLATE_PAUSE_SECONDS),
    ),
    (frozenset({"132016"}), Verdict(Action.STOP_CAMPAIGN, Reason.TEMPLATE_DISABLED)),
    (
        frozenset({"131048"}),
        Verdict(Action.STOP_CAMPAIGN, Reason.SPAM_RATE_LIMIT, defer_seconds=SPAM_PAUSE_SECONDS),
    ),
    (
        frozenset({"368", "131031", "131042", "133010", "190", "0"}),
        Verdict(Action.STOP_ALL, Reason.ACCOUNT_BLOCKED_OR_LOCKED),
    ),
)


def whatsapp_code(error: dict[str, Any]) -> str | None:
    """The WhatsApp code of a GraphQL error: extensions first, then '(#code)' in the message."""
    ext = error.get("extensions") or {}
    for field in ("whatsappCode", "whatsAppCode", "errorCode"):
        if ext.get(field) is not None:
            return str(ext[field])
    match = _CODE_IN_MESSAGE.search(str(error.get("message", "")))
    return match.group(1) if match else None


def classify_code(code: str) -> Verdict | None:
    """A WhatsApp code -> what to do, or None when the code is not in the reference."""
    for codes, verdict in CODE_VERDICTS:
        if code in codes:
            return dataclasses.replace(verdict, code=code)
    return None


def classify_graphql_errors(errors: list[dict[str, Any]]) -> Verdict:
    """Field errors (HTTP 200, data null): the message was not accepted."""
    first = errors[0] if errors else {}
    ext = first.get("extensions") or {}
    name = str(ext.get("name") or ext.get("code") or "")
    code = whatsapp_code(first)
    if code is not None:
        verdict = classify_code(code)
        if verdict is not None:
            return verdict
    if name in _AUTH_NAMES:
        return Verdict(Action.RELOGIN, Reason.TOKEN_REFUSED, name)
    if name in _PERMISSION_NAMES:
        return Verdict(Action.STOP_ALL, Reason.PERMISSION_DENIED, name)
    label = code or name or "graphql_error"
    if str(ext.get("retryPolicy", "")).upper() in ("RETRY", "RETRYABLE"):
        return Verdict(Action.RETRY, with_detail(Reason.RETRYABLE_ERROR, label), label)
    return Verdict(Action.FAIL, with_detail(Reason.REJECTED, label), label)


def retry_after_seconds(headers: httpx.Headers) -> float | None:
    """Seconds to wait: Retry-After as seconds or as an HTTP date (RFC 9110); None if absent or unreadable."""
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)  # HTTP dates are GMT
    return max(0.0, (when - dt.datetime.now(dt.UTC)).total_seconds())


def _retry(reason: Reason, code: str, delay: float | None, throttle: bool = False) -> Verdict:
    if delay is not None and delay > LONGEST_RETRY_WAIT_SECONDS:
        return Verdict(Action.STOP_CAMPAIGN, f"{reason}_retry_after", code, defer_seconds=delay)
    return Verdict(Action.RETRY, reason, code, delay=delay, throttle=throttle)


def classify_http(status: int, headers: httpx.Headers) -> Verdict | None:
    """A non-200 answer -> what to do; None for 200 (read the body)."""
    if status == 200:
        return None
    if status == 401:
        return Verdict(Action.RELOGIN, Reason.TOKEN_REFUSED, "401")
    if status == 403:
        return Verdict(Action.STOP_ALL, Reason.PERMISSION_DENIED, "403")
    if status == 429:
        return _retry(Reason.RATE_LIMITED, "429", retry_after_seconds(headers), throttle=True)
    if status in (502, 504):
        # A gateway answered for a server it passed the request to, which may have sent the message
        # before failing or timing out: a resend could be a second message.
        return Verdict(Action.UNKNOWN, Reason.OUTCOME_UNKNOWN, str(status))
    if status in (500, 503):
        # iAdvize itself answered with an error: the message was not accepted.
        return _retry(Reason.SERVER_ERROR, str(status), retry_after_seconds(headers))
    return Verdict(Action.FAIL, Reason.BAD_REQUEST, str(status))


def request_never_left(exc: BaseException) -> bool:
    """True only when the request certainly did not reach the server (safe to retry).

    httpx-aiohttp maps every aiohttp connection error to httpx.ConnectTimeout, including a server
    that hung up after reading the request, so the original aiohttp exception decides.
    """
    cause = exc.__cause__
    try:
        import aiohttp
    except ImportError:  # pragma: no cover - aiohttp is a dependency
        aiohttp = None  # type: ignore[assignment]
    if aiohttp is not None and isinstance(cause, aiohttp.ClientError | TimeoutError):
        return isinstance(cause, aiohttp.ClientConnectorError | aiohttp.ConnectionTimeoutError)
    return isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout)


def classify_exception(exc: BaseException) -> Verdict:
    if request_never_left(exc):
        return Verdict(Action.RETRY, Reason.CONNECTION_FAILED, type(exc).__name__)
    return Verdict(Action.UNKNOWN, Reason.OUTCOME_UNKNOWN, type(exc).__name__)
