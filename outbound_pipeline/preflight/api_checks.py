"""The items that call iAdvize: credentials, the conversation query's names against the live schema,
and the test send to the campaign's test recipients.

A test message goes to `test_recipients` only, recorded in `outbound_test_sends`, apart from the
ledger: it never counts against limits, never marks anyone as contacted and never blocks or replaces
a production send.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from outbound_pipeline import ledger
from outbound_pipeline.config import Campaign, OutboundConfig, Template
from outbound_pipeline.iadvize import (
    Action,
    IAdvizeClient,
    IAdvizeError,
    IAdvizeResource,
    OutboundMessage,
    check_conversation_schema,
)
from outbound_pipeline.outcomes import Reason, Status
from outbound_pipeline.preflight.items import FAIL, PASS, SKIPPED, Item
from outbound_pipeline.warehouse import insert_rows, test_sends
from outbound_pipeline.whatsapp import mask


@dataclass(frozen=True)
class TestMessage:
    """What the test send sends: the campaign's template with these values."""

    template: Template
    header: list[str]
    body: list[str]
    source: str  # where the values come from: first_eligible_row or sample_values


async def check_credentials(client: IAdvizeClient, resource: IAdvizeResource) -> Item:
    try:
        valid = await client.token_is_valid()
    except IAdvizeError as exc:
        return Item("credentials", FAIL, str(exc))
    except Exception as exc:  # transport errors name no secret; their text may name the URL
        return Item("credentials", FAIL, f"the API could not be reached ({type(exc).__name__})")
    if not valid:
        return Item("credentials", FAIL, "a token was issued but /_authenticated refused it")
    return Item("credentials", PASS, f"token valid ({resource.describe()})")


# Where the conversation query's names are set, as the problems name it.
CONVERSATION_SETTINGS = "iadvize.conversations"


async def check_conversations(client: IAdvizeClient, config: OutboundConfig) -> Item:
    """The configured names of the conversation query exist in the live schema (introspection):
    a difference fails here, before any run reads conversations."""
    problems = await check_conversation_schema(
        client, config.iadvize.conversations, CONVERSATION_SETTINGS
    )
    if problems:
        return Item(
            "conversation_schema",
            FAIL,
            "; ".join(problems)
            + f". Set the names the API has under {CONVERSATION_SETTINGS} in the campaigns file "
            "(docs/conversations.md).",
        )
    return Item(
        "conversation_schema",
        PASS,
        f"query '{config.iadvize.conversations.query}' and every configured field are in the schema",
    )


async def _send_one(
    client: IAdvizeClient, campaign: Campaign, test: TestMessage, recipient: str
) -> dict[str, Any]:
    """One test message and its answer, as a row of outbound_test_sends."""
    template = test.template
    message = OutboundMessage(
        sender=campaign.sender,
        recipient=recipient,
        template_name=template.name,
        language=template.language,
        header_params=test.header,
        body_params=test.body,
        campaign_id=campaign.campaign_id,
    )
    try:
        result = await client.send(message)
    except IAdvizeError as exc:
        return {
            "recipient": recipient,
            "status": Status.FAILED,
            "reason": f"login_refused: {exc}"[:300],
            "error_code": "login",
        }
    verdict = result.verdict
    if verdict.action is Action.SENT:
        status, reason = Status.SENT, str(Reason.ACCEPTED)
    elif verdict.action is Action.UNKNOWN:
        status, reason = Status.UNKNOWN, verdict.reason
    else:
        status, reason = Status.FAILED, verdict.reason
    return {
        "recipient": recipient,
        "status": status,
        "reason": reason[:300],
        "error_code": verdict.code,
        "message_id": result.message_id,
        "message_text": result.message_text,
    }


async def send_test_messages(
    engine: sa.Engine, client: IAdvizeClient, campaign: Campaign, test: TestMessage
) -> list[dict[str, Any]]:
    out = []
    for recipient in dict.fromkeys(campaign.test_recipients):
        # A test message takes one of the sender's send slots like any other: a campaign of the
        # same number may be sending at its full rate right now.
        with engine.begin() as conn:
            slot = ledger.reserve_send_slots(
                conn, campaign.sender, 1, campaign.max_send_rate, time.time()
            )
        await asyncio.sleep(max(0.0, slot - time.time()))
        out.append(await _send_one(client, campaign, test, recipient))
    return out


def record_test_sends(
    engine: sa.Engine,
    campaign: Campaign,
    test: TestMessage,
    results: list[dict[str, Any]],
    run_id: str,
    sent_at: dt.datetime,
) -> None:
    template = test.template
    common = {
        "run_id": run_id,
        "campaign_key": campaign.key,
        "campaign_id": campaign.campaign_id,
        "sender": campaign.sender,
        "template_name": template.name,
        "language": template.language,
        "parameters_from": test.source,
        "sent_at": sent_at,
        "message_id": None,
        "message_text": None,
    }
    with engine.begin() as conn:
        insert_rows(conn, test_sends, [{**common, **r} for r in results])


def test_send_item(results: list[dict[str, Any]], source: str) -> Item:
    ok = [r for r in results if r["status"] == Status.SENT]
    summary = "; ".join(f"{mask(r['recipient'])}: {r['status']} ({r['reason']})" for r in results)
    status = PASS if len(ok) == len(results) else FAIL
    return Item(
        "test_send", status, f"{len(ok)}/{len(results)} accepted, values from {source}: {summary}"
    )


def why_no_test_send(
    campaign: Campaign, send_test: bool, credentials: Item, halted: str | None
) -> Item | None:
    """The test_send item when no test message may go out, or None when it may."""
    if not send_test:
        return Item("test_send", SKIPPED, "send_test is off")
    if not campaign.test_recipients:
        return Item("test_send", FAIL, "no test_recipients configured for the campaign")
    if credentials.status != PASS:
        return Item("test_send", SKIPPED, "credentials failed")
    if halted:
        return Item("test_send", SKIPPED, f"sends are halted: {halted}")
    return None
