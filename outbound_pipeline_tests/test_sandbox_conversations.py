"""The sandbox's simulated conversations: the shares and times it draws, its settings, and its
`conversations` query's answers to bad input, over a real socket."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from outbound_pipeline.sandbox import SandboxServer
from outbound_pipeline.sandbox.__main__ import _epilog
from outbound_pipeline.sandbox.conversations import (
    OTHER_CAMPAIGN_ID,
    ConversationSettings,
    ConversationSimulator,
)

CAMPAIGN = "5dd2be5a-6aeb-4ef2-8c8d-c78d51e21acf"
ACCEPTED = dt.datetime(2026, 11, 24, 9, tzinfo=dt.UTC)
QUERY = (
    "query Q($f: ConversationFilter!, $first: Int, $after: String) { "
    "conversations(filters: $f, first: $first, after: $after) { nodes { id } totalCount } }"
)


def simulate(count: int, **settings: Any) -> list[dict[str, Any]]:
    simulator = ConversationSimulator(ConversationSettings(**settings))
    for i in range(count):
        simulator.message_accepted(f"m{i}", f"3361234{i:05d}", CAMPAIGN, ACCEPTED)
    return simulator.records()


def test_the_shares_are_drawn_as_configured() -> None:
    records = simulate(6000, seed=1)  # the defaults: 30 % reply, 10 % late, 20 % convert, 3 % other
    window_end = ACCEPTED + dt.timedelta(hours=72)
    late = [r for r in records if dt.datetime.fromisoformat(r["startedAt"]) >= window_end]
    on_time = [r for r in records if r not in late]
    assert len(records) / 6000 == pytest.approx(0.3, abs=0.02)
    assert len(late) / len(records) == pytest.approx(0.1, abs=0.02)
    assert sum(r["converted"] for r in records) / len(records) == pytest.approx(0.2, abs=0.03)
    others = sum(r["campaignId"] == OTHER_CAMPAIGN_ID for r in on_time)
    assert others / len(on_time) == pytest.approx(0.03, abs=0.015)
    # Late replies are attached to no campaign, the others to theirs or another.
    assert {r["campaignId"] for r in late} == {None}
    assert {r["campaignId"] for r in on_time} == {CAMPAIGN, OTHER_CAMPAIGN_ID}
    assert all(dt.datetime.fromisoformat(r["startedAt"]) > ACCEPTED for r in records)


def test_one_seed_one_sequence_and_shares_of_zero_or_one() -> None:
    assert simulate(200, seed=4) == simulate(200, seed=4)
    assert simulate(200, seed=4) != simulate(200, seed=5)
    assert simulate(200, reply_share=0) == []
    everyone = simulate(50, reply_share=1, late_share=0, convert_share=1, other_campaign_share=0)
    assert len(everyone) == 50
    assert all(r["converted"] and r["campaignId"] == CAMPAIGN for r in everyone)


def test_the_time_scale_compresses_reply_delays() -> None:
    """With sandbox minutes of 1 ms, a 60-minute window lasts 60 ms and late replies come within
    another window after it."""
    records = simulate(
        300,
        seed=3,
        reply_share=1,
        late_share=0.5,
        attribution_window_minutes=60,
        minute_seconds=0.001,
    )
    delays = [
        (dt.datetime.fromisoformat(r["startedAt"]) - ACCEPTED).total_seconds() for r in records
    ]
    late = [d for d, r in zip(delays, records, strict=True) if r["campaignId"] is None]
    assert min(delays) > 0 and max(delays) <= 2.02 * 0.06
    assert late and min(late) > 0.06 and all(d < 0.06 for d in delays if d not in late)


@pytest.fixture
def served() -> Iterator[tuple[SandboxServer, httpx.Client]]:
    with SandboxServer([]) as sandbox, httpx.Client(base_url=sandbox.base_url, timeout=5) as http:
        yield sandbox, http


def _query(http: httpx.Client, token: str | None, **variables: Any) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return http.post("/graphql", json={"query": QUERY, "variables": variables}, headers=headers)


def test_the_query_refuses_bad_input_and_unauthenticated_callers(
    served: tuple[SandboxServer, httpx.Client],
) -> None:
    sandbox, http = served
    assert _query(http, None, f={}).status_code == 401
    token = http.post(
        "/oauth2/token", data={"username": "u", "password": "p", "grant_type": "password"}
    ).json()["access_token"]
    assert _query(http, token, f={}).json() == {
        "data": {"conversations": {"nodes": [], "totalCount": 0}}
    }

    def error(**variables: Any) -> dict[str, Any]:
        body = _query(http, token, **variables).json()
        assert body["data"] is None
        return {"message": body["errors"][0]["message"], **body["errors"][0]["extensions"]}

    assert _query(http, token, f={}, first=None).json()["data"]["conversations"]["totalCount"] == 0
    bad = {"name": "BAD_USER_INPUT", "retryPolicy": "NO_RETRY"}
    assert error(f={}, first=101) == {"message": "first must be between 1 and 100, got 101", **bad}
    assert error(f={}, after="nope") == {"message": "invalid cursor 'nope'", **bad}
    assert error(f={"from": "yesterday"}) == {
        "message": "filters.from is not an ISO-8601 date-time: 'yesterday'",
        **bad,
    }


def test_settings_are_validated_and_nothing_changes_when_refused(
    served: tuple[SandboxServer, httpx.Client],
) -> None:
    sandbox, http = served
    refused = http.post(
        "/_sandbox/config", json={"latency_ms": 50, "conversations": {"reply_share": 2}}
    )
    assert refused.status_code == 400
    assert refused.json()["error"] == (
        "invalid conversations.reply_share: Input should be less than or equal to 1"
    )
    unknown = http.post("/_sandbox/config", json={"conversations": {"read_faults": ["http_418"]}})
    assert "unknown read faults ['http_418']" in unknown.json()["error"]
    assert sandbox.state.latency_ms == 0
    assert sandbox.state.conversations.settings == ConversationSettings()

    sandbox.configure(conversations={"reply_share": 1, "seed": 9})
    assert sandbox.state.conversations.settings.reply_share == 1
    sandbox.state.conversations.message_accepted("m1", "33612345678", CAMPAIGN, ACCEPTED)
    sandbox.reset()
    assert http.get("/_sandbox/conversations").json() == []


def test_help_lists_the_conversation_settings() -> None:
    epilog = _epilog()
    for key in (
        "conversations (object or null",
        "reply_share",
        "late_share",
        "convert_share",
        "other_campaign_share",
        "attribution_window_minutes",
        "minute_seconds",
        "read_faults",
    ):
        assert key in epilog
    assert "GET /_sandbox/conversations" in epilog
