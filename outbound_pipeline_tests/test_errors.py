"""The error vocabulary against the reference's table: what each answer makes the pipeline do."""

from __future__ import annotations

import datetime as dt
import email.utils

import httpx
import pytest

from outbound_pipeline.iadvize import (
    LONGEST_RETRY_WAIT_SECONDS,
    Action,
    classify_code,
    classify_graphql_errors,
    classify_http,
)


@pytest.mark.parametrize(
    ("status", "action"),
    [
        (200, None),
        (401, Action.RELOGIN),
        (403, Action.STOP_ALL),
        (429, Action.RETRY),
        (500, Action.RETRY),
        (503, Action.RETRY),
        # A gateway answers for a server that may have sent the message: never resent on its own.
        (502, Action.UNKNOWN),
        (504, Action.UNKNOWN),
        (400, Action.FAIL),
    ],
)
def test_http_status_maps_to_the_reference(status: int, action: Action | None) -> None:
    verdict = classify_http(status, httpx.Headers())
    assert (verdict.action if verdict else None) == action


def test_retry_after_is_honoured_on_429() -> None:
    verdict = classify_http(429, httpx.Headers({"Retry-After": "2.5"}))
    assert verdict is not None and verdict.delay == 2.5 and verdict.throttle


def test_retry_after_as_an_http_date_is_read() -> None:
    when = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=90)
    verdict = classify_http(
        503, httpx.Headers({"Retry-After": email.utils.format_datetime(when, usegmt=True)})
    )
    assert verdict is not None and verdict.action == Action.RETRY
    assert verdict.delay is not None and 85 <= verdict.delay <= 90
    # A date already past: retry at once; an unreadable value: the loop's own backoff.
    assert (
        classify_http(503, httpx.Headers({"Retry-After": "Mon, 01 Jan 2024 00:00:00 GMT"})).delay
        == 0.0
    )  # type: ignore[union-attr]
    assert classify_http(503, httpx.Headers({"Retry-After": "soon"})).delay is None  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("status", "reason"), [(429, "rate_limited_retry_after"), (503, "server_error_retry_after")]
)
def test_a_retry_after_longer_than_a_run_should_wait_stops_the_campaign_until_then(
    status: int, reason: str
) -> None:
    verdict = classify_http(status, httpx.Headers({"Retry-After": "3600"}))
    assert verdict is not None
    assert (verdict.action, verdict.reason, verdict.code, verdict.defer_seconds) == (
        Action.STOP_CAMPAIGN,
        reason,
        str(status),
        3600.0,
    )
    assert (
        classify_http(
            status, httpx.Headers({"Retry-After": str(LONGEST_RETRY_WAIT_SECONDS)})
        ).action
        == Action.RETRY
    )  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("code", "action"),
    [
        ("130429", Action.RETRY),
        ("131056", Action.DEFER),
        ("131026", Action.FAIL),
        ("131049", Action.DEFER),
        ("132015", Action.STOP_CAMPAIGN),
        ("368", Action.STOP_ALL),
    ],
)
def test_whatsapp_codes_map_to_the_reference(code: str, action: Action) -> None:
    verdict = classify_code(code)
    assert verdict is not None and verdict.action == action and verdict.code == code


def test_a_code_in_the_message_is_read_when_extensions_lack_it() -> None:
    verdict = classify_graphql_errors(
        [{"message": "(#131050) User stopped marketing", "extensions": {}}]
    )
    assert verdict.action == Action.FAIL and verdict.suppress
