"""The error vocabulary against the reference's table: what each answer makes the pipeline do."""

from __future__ import annotations

import httpx
import pytest

from outbound_pipeline.errors import Action, classify_code, classify_graphql_errors, classify_http


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
    verdict = classify_graphql_errors([{"message": "(#131050) User stopped marketing", "extensions": {}}])
    assert verdict.action == Action.FAIL and verdict.suppress
