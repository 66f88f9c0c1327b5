"""Matching conversations to sent messages (pure, with a property test against a plain oracle), the
conversation query's settings and text, and the outbound_conversations table on real SQLite."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from outbound_pipeline.config import ConversationQuerySettings
from outbound_pipeline.conversations import table_rows as conversation_table_rows
from outbound_pipeline.iadvize import (
    ConversationRecord,
    SentMessage,
    conversation_counts,
    match_conversations,
    visitor_e164,
)
from outbound_pipeline.iadvize.conversation_query import (
    parse_timestamp,
    query_document,
    query_variables,
)
from outbound_pipeline.warehouse import conversations as conversations_table

CAMPAIGN = "5dd2be5a-6aeb-4ef2-8c8d-c78d51e21acf"
OTHER = "0b6f3c1e-4a7d-4f0e-9a39-2c8e5d71b4a2"
T0 = dt.datetime(2026, 11, 24, 9, tzinfo=dt.UTC)
WINDOW = dt.timedelta(minutes=100)
PHONES = ("+33612345678", "+33612345679", "+447911123456")


def minutes(n: float) -> dt.datetime:
    return T0 + dt.timedelta(minutes=n)


def sent(
    recipient: str, at: float, expires: float | None = 100.0, day: str = "2026-11-24"
) -> SentMessage:
    expiry = None if expires is None else minutes(at + expires)
    return SentMessage(
        "order_ready", day, "c1", recipient, f"m-{recipient}-{at}", minutes(at), expiry
    )


def conversation(
    cid: str, phone: str, at: float, campaign: str | None = CAMPAIGN, converted: bool = False
) -> ConversationRecord:
    return ConversationRecord(cid, "WHATSAPP", phone, campaign, minutes(at), converted)


def test_the_api_phone_is_compared_in_e164() -> None:
    assert visitor_e164("33612345678") == visitor_e164("+33612345678") == "+33612345678"
    assert visitor_e164(" 0033612345678 ") == "+33612345678"
    assert (
        visitor_e164("0612345678") is None
        and visitor_e164("") is None
        and visitor_e164(None) is None
    )


def test_a_reply_in_the_window_counts_and_one_after_it_does_not() -> None:
    rows = [sent(PHONES[0], 0), sent(PHONES[1], 0), sent(PHONES[2], 0)]
    found = [
        conversation("in", "33612345678", 99.9, converted=True),
        conversation("at-expiry", "33612345679", 100, campaign=None, converted=True),
        conversation("before-send", "447911123456", -1),
        conversation("stranger", "33600000000", 5),
    ]
    first, late, silent = match_conversations(rows, found, CAMPAIGN, WINDOW)
    assert (first.replied, first.conversation_id, first.replied_at, first.converted) == (
        True,
        "in",
        minutes(99.9),
        True,
    )
    assert (first.within_window, first.attached_to_campaign, first.wrong_campaign) == (
        True,
        True,
        False,
    )
    assert (late.replied, late.within_window, late.conversation_id, late.converted) == (
        False,
        False,
        "at-expiry",
        False,
    )
    assert (
        silent.replied,
        silent.conversation_id,
        silent.within_window,
        silent.attached_to_campaign,
    ) == (False, None, None, None)
    assert conversation_counts([first, late, silent]) == {
        "sent": 3,
        "replied": 1,
        "late_replies": 1,
        "wrong_campaign": 0,
        "unattached": 0,
        "converted": 1,
    }


def test_the_campaigns_own_conversation_is_preferred_and_others_are_counted() -> None:
    rows = [sent(PHONES[0], 0), sent(PHONES[1], 0), sent(PHONES[2], 0)]
    found = [
        conversation("other-early", PHONES[0], 1, campaign=OTHER),
        conversation("own-later", PHONES[0], 2),
        conversation("other-only", PHONES[1], 3, campaign=OTHER, converted=True),
        conversation("none", PHONES[2], 3, campaign=None),
    ]
    own, other, unattached = match_conversations(rows, found, CAMPAIGN, WINDOW)
    assert (own.conversation_id, own.wrong_campaign) == ("own-later", False)
    assert (other.conversation_id, other.attached_campaign_id, other.wrong_campaign) == (
        "other-only",
        OTHER,
        True,
    )
    assert other.converted, "the conversion is reported; the wrong campaign is reported beside it"
    assert (unattached.attached_to_campaign, unattached.wrong_campaign) == (False, False)
    counts = conversation_counts([own, other, unattached])
    assert (counts["wrong_campaign"], counts["unattached"], counts["replied"]) == (1, 1, 3)


def test_a_conversation_belongs_to_the_latest_message_before_it() -> None:
    rows = [sent(PHONES[0], 0, day="2026-11-24"), sent(PHONES[0], 50, day="2026-11-25")]
    first, second = match_conversations(rows, [conversation("c", PHONES[0], 60)], CAMPAIGN, WINDOW)
    assert (first.replied, second.replied, second.conversation_id) == (False, True, "c")


def test_the_window_stands_in_for_a_missing_expiry_and_naive_times_are_utc() -> None:
    naive = SentMessage("k", "2026-11-24", None, PHONES[0], "m", T0.replace(tzinfo=None), None)
    found = [conversation("c", PHONES[0], 30)]
    assert match_conversations([naive], found, CAMPAIGN, dt.timedelta(minutes=31))[0].replied
    assert not match_conversations([naive], found, CAMPAIGN, dt.timedelta(minutes=30))[0].replied


def _oracle(rows: list[SentMessage], found: list[ConversationRecord]) -> list[set[str]]:
    """For each row, the ids of the conversations that are replies to it, the slow obvious way."""
    replies = []
    for row in rows:
        expiry = row.attribution_expires_at or row.sent_at + WINDOW
        later = [
            r.sent_at for r in rows if r.recipient == row.recipient and r.sent_at > row.sent_at
        ]
        replies.append(
            {
                c.conversation_id or ""
                for c in found
                if visitor_e164(c.visitor_phone) == row.recipient
                and c.started_at is not None
                and row.sent_at <= c.started_at < expiry
                and not any(t <= c.started_at for t in later)
            }
        )
    return replies


phone_as_written = st.sampled_from(PHONES).flatmap(
    lambda p: st.sampled_from([p, p[1:], "00" + p[1:], "+1 555 0100"])
)


@given(
    sends=st.lists(
        st.tuples(
            st.sampled_from(PHONES), st.integers(0, 600), st.one_of(st.none(), st.integers(1, 300))
        ),
        max_size=8,
        unique_by=lambda s: (s[0], s[1]),
    ),
    replies=st.lists(
        st.tuples(
            phone_as_written,
            st.integers(-50, 1000),
            st.sampled_from([CAMPAIGN, OTHER, None]),
            st.booleans(),
        ),
        max_size=15,
    ),
)
@settings(max_examples=300, deadline=None)
def test_matching_agrees_with_the_obvious_rule(sends: list[Any], replies: list[Any]) -> None:
    rows = [sent(phone, at, expires) for phone, at, expires in sends]
    found = [conversation(f"c{i}", *reply) for i, reply in enumerate(replies)]
    matches = match_conversations(rows, found, CAMPAIGN, WINDOW)
    expected = _oracle(rows, found)
    by_id = {c.conversation_id: c for c in found}
    assert [m.message_id for m in matches] == [r.message_id for r in rows]
    for row, match, ids in zip(rows, matches, expected, strict=True):
        assert match.replied is bool(ids)
        if match.replied:
            assert match.conversation_id in ids
            chosen = by_id[match.conversation_id]
            # The campaign's own reply when there is one, else the earliest.
            own = [by_id[i] for i in ids if by_id[i].campaign_id == CAMPAIGN]
            assert (chosen.campaign_id == CAMPAIGN) is bool(own)
            pool = own or [by_id[i] for i in ids]
            assert chosen.started_at == min(c.started_at for c in pool)  # type: ignore[type-var]
            assert match.converted is chosen.converted
        else:
            assert not match.converted and match.within_window is not True
            if match.conversation_id is not None:
                expiry = row.attribution_expires_at or row.sent_at + WINDOW
                assert match.replied_at is not None and match.replied_at >= expiry
    # No conversation is a reply to two messages.
    counted = [m.conversation_id for m in matches if m.replied]
    assert len(counted) == len(set(counted))


# --- the query's settings and text ------------------------------------------------------------


@pytest.mark.parametrize(
    ("names", "message"),
    [
        ({"query": "conversation search"}, "'conversation search' is not a GraphQL name"),
        ({"phone_field": "visitor..phone"}, "'visitor..phone' is not a field path"),
        ({"filter_type": "Filter{x}"}, "'Filter{x}' is not a GraphQL type"),
        (
            {"to_key": "from"},
            "channel_key, campaign_key, from_key, to_key must name different keys",
        ),
        (
            {"phone_field": "visitor", "campaign_field": "visitor.campaignId"},
            "'visitor' is both a field read and a parent",
        ),
        ({"page_size": 0}, "greater than or equal to 1"),
        ({"queyr": "x"}, "Extra inputs are not permitted"),
    ],
)
def test_settings_refuse_what_cannot_be_a_query(names: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        ConversationQuerySettings(**names)


def test_values_travel_as_variables_never_in_the_text() -> None:
    query = ConversationQuerySettings(
        query="conversationSearch", filter_argument="where", nodes_path="edges.node"
    )
    start, end = T0, T0 + dt.timedelta(days=3)
    document = query_document(query)
    assert document == (
        "query OutboundConversations($where: ConversationFilter!, $first: Int, $after: String) { "
        "conversationSearch(where: $where, first: $first, after: $after) { pageInfo { hasNextPage "
        "endCursor } edges { node { id channel visitor { phone } campaignId startedAt converted } } } }"
    )
    assert CAMPAIGN not in document and "2026" not in document
    assert query_variables(query, CAMPAIGN, start, end, "cursor-1") == {
        "where": {
            "channel": "WHATSAPP",
            "campaignId": CAMPAIGN,
            "from": start.isoformat(),
            "to": end.isoformat(),
        },
        "first": 100,
        "after": "cursor-1",
    }
    assert "campaignId" not in query_variables(query, None, start, end, None)["where"]


def test_timestamps_are_read_as_utc() -> None:
    assert parse_timestamp("2026-11-24T10:00:00Z") == dt.datetime(2026, 11, 24, 10, tzinfo=dt.UTC)
    assert parse_timestamp("2026-11-24T11:00:00+01:00") == dt.datetime(
        2026, 11, 24, 10, tzinfo=dt.UTC
    )
    assert parse_timestamp(1_795_000_000) == parse_timestamp(1_795_000_000_000)
    assert (
        parse_timestamp("soon") is None
        and parse_timestamp(None) is None
        and parse_timestamp(True) is None
    )


# --- the table ---------------------------------------------------------------------------------


def test_the_table_takes_the_matches(tmp_path: Any) -> None:
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'warehouse.sqlite'}")
    conversations_table.create(engine)
    rows = [sent(PHONES[0], 0), sent(PHONES[1], 0)]
    matches = match_conversations(
        rows, [conversation("c", PHONES[0], 5, converted=True)], CAMPAIGN, WINDOW
    )
    with engine.begin() as connection:
        connection.execute(
            sa.insert(conversations_table), conversation_table_rows(matches, T0, "run-1")
        )
        stored = (
            connection.execute(
                sa.select(conversations_table).order_by(conversations_table.c.recipient)
            )
            .mappings()
            .all()
        )
    assert [
        (r["recipient"], r["replied"], r["conversation_id"], r["converted"], r["run_id"])
        for r in stored
    ] == [
        (PHONES[0], True, "c", True, "run-1"),
        (PHONES[1], False, None, False, "run-1"),
    ]
    assert all(column.comment for column in conversations_table.columns)
    # The query of docs/conversations.md.
    with engine.connect() as connection:
        figures = connection.execute(sa.text(DOC_QUERY)).one()
    assert tuple(figures) == (2, 1, 0, 1)


DOC_QUERY = """
SELECT COUNT(*) AS sent,
       SUM(CASE WHEN replied THEN 1 ELSE 0 END) AS replied,
       SUM(CASE WHEN replied AND NOT attached_to_campaign AND attached_campaign_id IS NOT NULL
           THEN 1 ELSE 0 END) AS wrong_campaign,
       SUM(CASE WHEN converted THEN 1 ELSE 0 END) AS converted
FROM outbound_conversations
WHERE campaign_key = 'order_ready' AND partition_date = '2026-11-24';
"""
