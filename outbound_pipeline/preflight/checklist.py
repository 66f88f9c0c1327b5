"""The launch checklist of a campaign, item by item; the `<campaign>_preflight` job runs it.

It checks, in order:

1. credentials: a token can be had and `/_authenticated` accepts it;
   conversation_schema: the conversation query's configured names (`iadvize.conversations`) are in
   the live schema, by introspection (skipped without credentials);
2. dates: the day checked lies within the campaign's start_date..end_date;
3. template: the configured template and language exist, with as many placeholders as variables;
4. halts: no send halt would stop the campaign (read in the state store);
5. preview: the audience query runs for the day and the first eligible row renders (read only:
   nothing is written to the audience, messages or ledger tables);
6. test send: the real template goes to the campaign's `test_recipients`, and only to them, with the
   preview row's values (or sample values), each taking one of the sender's send slots in the state
   store. Each answer is recorded in the warehouse's `outbound_test_sends`, apart from the ledger: a test message never counts against limits, never marks anyone as contacted and
   never blocks or replaces a production send;
7. manual: the steps only a person can confirm (campaign active in iAdvize, replies reach
   operators, conversations attached to the campaign).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import zoneinfo
from dataclasses import dataclass

from outbound_pipeline.config import Campaign, OutboundConfig
from outbound_pipeline.iadvize import IAdvizeError, IAdvizeResource
from outbound_pipeline.ledger import StateStoreResource, StoreLoginSlots
from outbound_pipeline.preflight.api_checks import (
    TestMessage,
    check_conversations,
    check_credentials,
    record_test_sends,
    send_test_messages,
    test_send_item,
    why_no_test_send,
)
from outbound_pipeline.preflight.items import (
    FAIL,
    MANUAL,
    MANUAL_STEPS,
    SKIPPED,
    Item,
    active_halt,
    check_dates,
    check_halts,
    check_template,
)
from outbound_pipeline.preflight.preview import Preview, check_preview, sample_parameters
from outbound_pipeline.warehouse import WarehouseResource


@dataclass(frozen=True)
class ChecklistOptions:
    partition_date: str | None = None  # default: today in the schedule's timezone
    send_test: bool = True
    sample_values: bool = False  # fill the test message with sample values, not the preview row's


def _day_checked(campaign: Campaign, options: ChecklistOptions, now: dt.datetime) -> dt.date:
    if options.partition_date:
        return dt.date.fromisoformat(options.partition_date)
    return now.astimezone(zoneinfo.ZoneInfo(campaign.schedule.timezone)).date()


def _test_message(
    campaign: Campaign, config: OutboundConfig, preview: Preview | None, options: ChecklistOptions
) -> TestMessage:
    template = config.template_for(campaign)
    if preview is not None and not options.sample_values:
        return TestMessage(template, preview.header, preview.body, "first_eligible_row")
    header, body = sample_parameters(campaign, template)
    return TestMessage(template, header, body, "sample_values")


async def _api_items(
    campaign: Campaign,
    config: OutboundConfig,
    options: ChecklistOptions,
    stores: tuple[WarehouseResource, StateStoreResource],
    iadvize: IAdvizeResource,
    preview: Preview | None,
    halted: str | None,
    now: dt.datetime,
    run_id: str,
) -> tuple[Item, Item, Item]:
    """The credentials, conversation_schema and test_send items; records the test sends made."""
    try:
        iadvize.validate_settings()
    except IAdvizeError as exc:
        skipped = Item("conversation_schema", SKIPPED, "no credentials")
        return (
            Item("credentials", FAIL, str(exc)),
            skipped,
            Item("test_send", SKIPPED, "no credentials"),
        )
    test = _test_message(campaign, config, preview, options)
    warehouse, state = stores
    # Its login shares the user's budget with the runs (the state store's login slots).
    slots = StoreLoginSlots(state.engine, iadvize.logins_per_minute)
    async with iadvize.client(4, slots) as client:
        credentials = await check_credentials(client, iadvize)
        schema = (
            await check_conversations(client, config)
            if credentials.status != FAIL
            else Item("conversation_schema", SKIPPED, "no valid token")
        )
        not_sent = why_no_test_send(campaign, options.send_test, credentials, halted)
        if not_sent is not None:
            return credentials, schema, not_sent
        results = await send_test_messages(state.engine, client, campaign, test)
    record_test_sends(warehouse.engine, campaign, test, results, run_id, now)
    return credentials, schema, test_send_item(results, test.source)


def run_checklist(
    campaign: Campaign,
    config: OutboundConfig,
    options: ChecklistOptions,
    stores: tuple[WarehouseResource, StateStoreResource],
    iadvize: IAdvizeResource,
    now: dt.datetime,
    run_id: str,
) -> tuple[list[Item], Preview | None]:
    """Every item of the checklist; records the test sends. Never writes the ledger. `stores`:
    the warehouse (preview, test sends) and the state store (halts, the sender's slots)."""
    warehouse, state = stores
    day = _day_checked(campaign, options, now)
    halted = active_halt(state.engine, campaign, now)
    preview_item, preview = check_preview(warehouse, campaign, config, day)
    credentials, schema, test_send = asyncio.run(
        _api_items(campaign, config, options, stores, iadvize, preview, halted, now, run_id)
    )
    items = [
        credentials,
        schema,
        check_dates(campaign, day),
        check_template(campaign, config),
        check_halts(halted),
        preview_item,
        test_send,
    ]
    items.extend(Item("manual", MANUAL, step) for step in MANUAL_STEPS)
    return items, preview
