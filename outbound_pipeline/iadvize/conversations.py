"""Read a period's WhatsApp conversations from the iAdvize GraphQL API, page by page.

The query's names are settings (conversation_query.py); the read is read-only, so each page is
retried on transient failures (graphql_reads.py), and the whole read is bounded in time and pages.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

from outbound_pipeline.config import ConversationQuerySettings
from outbound_pipeline.iadvize.conversation_query import (
    OPERATION,
    ConversationRecord,
    dig,
    query_document,
    query_variables,
    read_record,
)
from outbound_pipeline.iadvize.errors import IAdvizeError
from outbound_pipeline.iadvize.graphql_reads import GraphQLClient, ReadPolicy, read_graphql


def read_policy(settings: ConversationQuerySettings) -> ReadPolicy:
    return ReadPolicy(
        max_attempts=settings.max_attempts,
        backoff_seconds=settings.backoff_seconds,
        max_backoff_seconds=settings.max_backoff_seconds,
        timeout_seconds=settings.timeout_seconds,
    )


def _page(
    settings: ConversationQuerySettings, data: dict[str, Any], what: str
) -> tuple[list[Any], bool, str | None]:
    """(nodes, has next page, end cursor) of one answer."""
    connection = data.get(settings.query)
    if not isinstance(connection, dict):
        raise IAdvizeError(f"{what} answered no '{settings.query}' object")
    nodes = dig(connection, settings.nodes_path)
    if not isinstance(nodes, list):
        raise IAdvizeError(
            f"{what} answered no list at '{settings.nodes_path}' (setting nodes_path)"
        )
    cursor = dig(connection, settings.end_cursor_path)
    has_next = dig(connection, settings.has_next_page_path) is True
    return nodes, has_next, None if cursor is None else str(cursor)


async def _read_pages(
    client: GraphQLClient,
    settings: ConversationQuerySettings,
    campaign_id: str | None,
    period: tuple[dt.datetime, dt.datetime],
    what: str,
) -> list[ConversationRecord]:
    """Every page of the query, at most max_pages of them, each conversation once."""
    document, policy = query_document(settings), read_policy(settings)
    records: dict[str, ConversationRecord] = {}
    unnamed: list[ConversationRecord] = []
    after: str | None = None
    for _ in range(settings.max_pages):
        payload = {
            "query": document,
            "variables": query_variables(settings, campaign_id, *period, after),
            "operationName": OPERATION,
        }
        nodes, has_next, cursor = _page(
            settings, await read_graphql(client, payload, what, policy), what
        )
        for node in nodes:
            record = read_record(settings, node)
            if record.conversation_id is None:
                unnamed.append(record)
            else:
                records.setdefault(record.conversation_id, record)
        if not has_next:
            return [*records.values(), *unnamed]
        if cursor is None or cursor == after:
            raise IAdvizeError(f"{what} said there is a next page but gave no new cursor")
        after = cursor
    raise IAdvizeError(
        f"{what} has more than {settings.max_pages} pages of {settings.page_size}; narrow the "
        "period or raise max_pages"
    )


async def fetch_conversations(
    client: GraphQLClient,
    settings: ConversationQuerySettings,
    campaign_id: str | None,
    start: dt.datetime,
    end: dt.datetime,
) -> list[ConversationRecord]:
    """The WhatsApp conversations started in [start, end), attached to `campaign_id` (every
    campaign's, and none, when it is None: what the wrong-campaign count needs), in the API's order.

    A conversation met on two pages (new ones arriving while paging) is kept once. Raises
    IAdvizeError when the API cannot answer within the settings' bounds.
    """
    if start.tzinfo is None or end.tzinfo is None:
        raise ValueError("start and end must be timezone-aware")
    if start >= end:
        raise ValueError(
            f"empty period: start {start.isoformat()} is not before end {end.isoformat()}"
        )
    what = f"the conversation query '{settings.query}' at {client.graphql_url}"
    try:
        async with asyncio.timeout(settings.deadline_seconds):
            return await _read_pages(client, settings, campaign_id, (start, end), what)
    except TimeoutError:
        raise IAdvizeError(
            f"{what} took longer than {settings.deadline_seconds:g} s (setting deadline_seconds)",
            transient=True,
        ) from None
