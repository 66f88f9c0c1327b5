"""Conversations over a real socket: the pipeline's client sends through the sandbox iAdvize, which
simulates the replies; the client reads them back page by page and they are matched to the sent
messages. Also the introspection check of the configured names, and retries of failed reads."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import httpx
import pytest

from outbound_pipeline.config import ConversationQuerySettings, OutboundConfig
from outbound_pipeline.iadvize import (
    Action,
    ConversationMatch,
    IAdvizeClient,
    IAdvizeError,
    IAdvizeResource,
    OutboundMessage,
    SentMessage,
    check_conversation_schema,
    conversation_counts,
    fetch_conversations,
    match_conversations,
)
from outbound_pipeline.sandbox import SandboxServer
from outbound_pipeline.sandbox.conversations import OTHER_CAMPAIGN_ID, Conversation

WINDOW = dt.timedelta(hours=72)  # the sandbox's default attribution period, 4320 minutes of 60 s
FAST = {"backoff_seconds": 0.01, "max_backoff_seconds": 0.05, "timeout_seconds": 5}
T = TypeVar("T")


def run(sandbox: SandboxServer, work: Callable[[IAdvizeClient], Awaitable[T]]) -> T:
    resource = IAdvizeResource(
        mode="sandbox",
        graphql_url=sandbox.graphql_url,
        token_url=sandbox.token_url,
        username="brand-admin",
        password="not-a-real-password",
    )

    async def main() -> T:
        async with resource.client() as client:
            return await work(client)

    return asyncio.run(main())


def send_all(
    sandbox: SandboxServer, config: OutboundConfig, count: int, **shares: float
) -> tuple[str, list[SentMessage], dt.datetime]:
    """Simulate replies with `shares`, then send `count` messages of order_ready to distinct
    phones: the campaign's iAdvize ID, the ledger rows the sends would make, when they began."""
    sandbox.configure(conversations=shares)
    campaign = config.campaign("order_ready")
    started = dt.datetime.now(dt.UTC)

    async def work(client: IAdvizeClient) -> list[SentMessage]:
        rows = []
        for i in range(count):
            recipient = f"+336123456{i:02d}"
            result = await client.send(
                OutboundMessage(
                    campaign.sender,
                    recipient,
                    "order_ready_v1",
                    "fr",
                    [],
                    ["Alice", f"A-{i}", "Lyon"],
                    campaign.campaign_id,
                )
            )
            assert result.verdict.action is Action.SENT, result
            sent_at = dt.datetime.now(dt.UTC)  # the ledger stamps the answer, after the sandbox
            rows.append(
                SentMessage(
                    "order_ready",
                    "2026-11-24",
                    f"c{i}",
                    recipient,
                    result.message_id,
                    sent_at,
                    sent_at + WINDOW,
                )
            )
        return rows

    return campaign.campaign_id, run(sandbox, work), started


def simulated(sandbox: SandboxServer) -> dict[str, dict[str, Any]]:
    """The sandbox's conversations by the message they answer."""
    conversations = httpx.get(f"{sandbox.base_url}/_sandbox/conversations", timeout=5).json()
    return {c["messageId"]: c for c in conversations if c["messageId"]}


def read_and_match(
    sandbox: SandboxServer,
    sent: list[SentMessage],
    start: dt.datetime,
    settings: ConversationQuerySettings,
    campaign_id: str,
) -> list[ConversationMatch]:
    end = start + 3 * WINDOW
    records = run(sandbox, lambda c: fetch_conversations(c, settings, None, start, end))
    return match_conversations(sent, records, campaign_id, WINDOW)


def test_conversations_are_matched_to_the_right_recipients(
    sandbox: SandboxServer, demo_config: OutboundConfig
) -> None:
    campaign_id, sent, start = send_all(
        sandbox, demo_config, 12, reply_share=0.5, late_share=0, convert_share=0.5, seed=11
    )
    # Noise: a stranger's reply, another channel, a conversation older than the message.
    noise = [
        Conversation(
            "noise-stranger", None, "33699999999", campaign_id, start + dt.timedelta(hours=1), True
        ),
        Conversation(
            "noise-web",
            None,
            "33612345600",
            campaign_id,
            start + dt.timedelta(hours=1),
            True,
            "WEB",
        ),
        Conversation(
            "noise-older", None, "33612345601", campaign_id, start - dt.timedelta(minutes=5), True
        ),
    ]
    for conversation in noise:
        sandbox.state.conversations.add(conversation)
    truth = simulated(sandbox)

    matches = read_and_match(
        sandbox,
        sent,
        start - dt.timedelta(hours=1),
        ConversationQuerySettings(page_size=3, **FAST),
        campaign_id,
    )

    assert [m.recipient for m in matches] == [row.recipient for row in sent]
    for match in matches:
        reply = truth.get(match.message_id or "")
        assert match.replied is (reply is not None), match
        assert match.conversation_id == (reply["id"] if reply else None)
        assert match.converted is bool(reply and reply["converted"])
        assert match.attached_to_campaign is (True if reply else None)
    counts = conversation_counts(matches)
    assert 0 < counts["replied"] < 12 and counts["converted"] > 0
    assert counts["wrong_campaign"] == counts["late_replies"] == 0


def test_replies_after_the_window_are_not_counted(
    sandbox: SandboxServer, demo_config: OutboundConfig
) -> None:
    campaign_id, sent, start = send_all(
        sandbox, demo_config, 10, reply_share=1, late_share=0.5, convert_share=1, seed=5
    )
    truth = simulated(sandbox)

    matches = read_and_match(sandbox, sent, start, ConversationQuerySettings(**FAST), campaign_id)

    for row, match in zip(sent, matches, strict=True):
        reply = truth[row.message_id or ""]
        late = dt.datetime.fromisoformat(reply["startedAt"]) >= row.sent_at + WINDOW
        assert match.conversation_id == reply["id"]
        assert match.replied is (not late) and match.within_window is (not late)
        assert match.converted is (not late), "a late reply's conversion is not the campaign's"
        # iAdvize attaches no late reply to the campaign.
        assert match.attached_campaign_id == (None if late else campaign_id)
    counts = conversation_counts(matches)
    assert counts["late_replies"] > 0 and counts["replied"] > 0
    assert counts["late_replies"] + counts["replied"] == 10


def test_replies_attached_to_another_campaign_are_counted_as_such(
    sandbox: SandboxServer, demo_config: OutboundConfig
) -> None:
    campaign_id, sent, start = send_all(
        sandbox, demo_config, 10, reply_share=1, late_share=0, other_campaign_share=0.5, seed=2
    )
    others = sum(c["campaignId"] == OTHER_CAMPAIGN_ID for c in simulated(sandbox).values())
    settings = ConversationQuerySettings(**FAST)

    matches = read_and_match(sandbox, sent, start, settings, campaign_id)
    assert 0 < conversation_counts(matches)["wrong_campaign"] == others < 10
    assert {m.attached_campaign_id for m in matches if m.wrong_campaign} == {OTHER_CAMPAIGN_ID}

    # Filtered by campaign, the read sees only the campaign's own conversations.
    end = start + WINDOW
    own = run(sandbox, lambda c: fetch_conversations(c, settings, campaign_id, start, end))
    assert len(own) == 10 - others and {r.campaign_id for r in own} == {campaign_id}


def test_paging_and_filters(sandbox: SandboxServer, demo_config: OutboundConfig) -> None:
    """Seven pages of one conversation; the channel and period [from, to) filters hold."""
    start = dt.datetime(2026, 11, 24, 9, tzinfo=dt.UTC)
    for i in range(10):
        sandbox.state.conversations.add(
            Conversation(
                f"c{i}",
                None,
                f"3361234560{i}",
                None,
                start + dt.timedelta(hours=i),
                False,
                "WEB" if i == 8 else "WHATSAPP",
            )
        )
    settings = ConversationQuerySettings(page_size=1, **FAST)
    period = (start + dt.timedelta(hours=1), start + dt.timedelta(hours=9))
    records = run(sandbox, lambda c: fetch_conversations(c, settings, None, *period))
    assert [r.conversation_id for r in records] == [f"c{i}" for i in range(1, 8)]
    assert sandbox.stats()["graphql_reads"] == 7

    web = settings.model_copy(update={"channel_value": "WEB", "page_size": 100})
    assert [
        r.conversation_id
        for r in run(sandbox, lambda c: fetch_conversations(c, web, None, *period))
    ] == ["c8"]

    bounded = settings.model_copy(update={"max_pages": 3})
    with pytest.raises(IAdvizeError, match="more than 3 pages of 1"):
        run(sandbox, lambda c: fetch_conversations(c, bounded, None, *period))


def test_a_failed_read_is_retried(sandbox: SandboxServer) -> None:
    start = dt.datetime(2026, 11, 24, tzinfo=dt.UTC)
    sandbox.state.conversations.add(Conversation("c1", None, "33612345600", None, start, False))
    sandbox.configure(conversations={"read_faults": ["http_500", "http_502"]})
    settings = ConversationQuerySettings(**FAST)
    end = start + WINDOW

    records = run(sandbox, lambda c: fetch_conversations(c, settings, None, start, end))
    assert [r.conversation_id for r in records] == ["c1"]
    assert sandbox.stats()["graphql_reads"] == 3

    sandbox.configure(conversations={"read_faults": ["http_500"] * 3})
    bounded = settings.model_copy(update={"max_attempts": 2})
    with pytest.raises(IAdvizeError, match="answered HTTP 500") as failed:
        run(sandbox, lambda c: fetch_conversations(c, bounded, None, start, end))
    assert failed.value.transient


def test_the_sandbox_matches_the_default_names(sandbox: SandboxServer) -> None:
    sandbox.configure(conversations={"read_faults": ["http_500"]})  # introspection is retried too
    assert (
        run(sandbox, lambda c: check_conversation_schema(c, ConversationQuerySettings(**FAST)))
        == []
    )


def test_a_configured_name_missing_from_the_schema_gives_a_clear_error(
    sandbox: SandboxServer,
) -> None:
    def problems(**names: str) -> list[str]:
        settings = ConversationQuerySettings(**FAST, **names)  # type: ignore[arg-type]
        return run(
            sandbox, lambda c: check_conversation_schema(c, settings, "iadvize.conversations")
        )

    assert problems(query="conversationSearch") == [
        "query 'conversationSearch' (iadvize.conversations: query) is not in the schema; it has: "
        "conversations, sandbox"
    ]
    assert problems(phone_field="visitor.phoneNumber", converted_field="isConverted") == [
        "field 'phoneNumber' of path 'visitor.phoneNumber' (iadvize.conversations: phone_field) is "
        "not in type Visitor; it has: phone",
        "field 'isConverted' of path 'isConverted' (iadvize.conversations: converted_field) is not "
        "in type Conversation; it has: campaignId, channel, converted, id, startedAt, visitor",
    ]
    assert problems(first_argument="limit", filter_type="ConversationFilter", from_key="since") == [
        "argument 'filters' of query 'conversations' has type 'ConversationFilter!' in the schema, "
        "not 'ConversationFilter' (iadvize.conversations: filter_type)",
        "argument 'limit' (iadvize.conversations: first_argument) is not an argument of query "
        "'conversations'; it has: after, filters, first",
        "filter key 'since' (iadvize.conversations: from_key) is not a field of input "
        "ConversationFilter; it has: campaignId, channel, from, to",
    ]
    assert problems(phone_field="visitor", end_cursor_path="pageInfo.cursor") == [
        "field 'cursor' of path 'pageInfo.cursor' (iadvize.conversations: end_cursor_path) is not "
        "in type PageInfo; it has: endCursor, hasNextPage",
        "'visitor' (iadvize.conversations: phone_field) ends on OBJECT Visitor, not on a value; "
        "name one of its fields: phone",
    ]


def test_an_unreadable_schema_is_a_problem_not_a_crash(sandbox: SandboxServer) -> None:
    sandbox.configure(conversations={"read_faults": ["http_504"] * 2})
    settings = ConversationQuerySettings(**{**FAST, "max_attempts": 2})
    assert run(sandbox, lambda c: check_conversation_schema(c, settings)) == [
        "could not read the API's schema to check the conversation query: introspection of the "
        f"query type at {sandbox.graphql_url} answered HTTP 504"
    ]


def test_a_read_is_bounded_in_time(sandbox: SandboxServer) -> None:
    start = dt.datetime(2026, 11, 24, tzinfo=dt.UTC)
    for i in range(5):
        sandbox.state.conversations.add(
            Conversation(f"c{i}", None, "33612345600", None, start, False)
        )
    sandbox.configure(latency_ms=200)
    end = start + WINDOW
    slow_pages = ConversationQuerySettings(**{**FAST, "page_size": 1, "deadline_seconds": 0.5})
    with pytest.raises(IAdvizeError, match=r"took longer than 0.5 s \(setting deadline_seconds\)"):
        run(sandbox, lambda c: fetch_conversations(c, slow_pages, None, start, end))
    slow_request = ConversationQuerySettings(**{**FAST, "timeout_seconds": 0.05, "max_attempts": 2})
    with pytest.raises(IAdvizeError, match="failed: (ReadTimeout|TimeoutError)") as failed:
        run(sandbox, lambda c: fetch_conversations(c, slow_request, None, start, end))
    assert failed.value.transient


def test_a_refused_token_means_one_new_login(sandbox: SandboxServer) -> None:
    start = dt.datetime(2026, 11, 24, tzinfo=dt.UTC)
    sandbox.state.conversations.add(Conversation("c1", None, "33612345600", None, start, False))
    settings = ConversationQuerySettings(**FAST)

    async def twice(client: IAdvizeClient) -> list[int]:
        sizes = []
        for _ in range(2):
            sizes.append(
                len(await fetch_conversations(client, settings, None, start, start + WINDOW))
            )
            sandbox.state.expire_tokens()
        return sizes

    assert run(sandbox, twice) == [1, 1]
    assert (sandbox.stats()["logins"], sandbox.stats()["unauthenticated"]) == (2, 1)
