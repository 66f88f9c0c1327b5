"""`<campaign>/conversations`: what came of the day's messages in iAdvize, one row per message sent.

`outbound_pipeline.conversations` reads the WhatsApp conversations of the read period from the
iAdvize GraphQL API (names from the configuration's `iadvize.conversations`, confirmed by the
preflight), matches them to the day's `sent` rows of the ledger and the asset replaces the day's rows
of the warehouse's outbound_conversations. Replies keep arriving for the attribution window after
each message, so the daily job reads the day once right after sending, and the
`<campaign>_conversations` schedule reads the days whose window is open (or just closed) again and
refreshes their report (jobs.py).
"""

# No `from __future__ import annotations`: Dagster reads the resource annotations of the decorated
# function as classes.

import asyncio
import datetime as dt
from typing import Any

import dagster as dg

from outbound_pipeline.clock import ClockResource
from outbound_pipeline.config import Campaign, OutboundConfig
from outbound_pipeline.conversations import (
    ConversationDay,
    collect_conversations,
    later_messages,
    read_period,
    sent_messages,
    table_rows,
    window_closed,
    write_conversations,
)
from outbound_pipeline.defs.campaigns.keys import (
    CONVERSATIONS,
    DELIVERIES,
    asset_key,
    campaign_asset_options,
)
from outbound_pipeline.defs.campaigns.metadata import masked_preview
from outbound_pipeline.iadvize import IAdvizeError, IAdvizeResource, conversation_counts
from outbound_pipeline.ledger import StateStoreResource, StoreLoginSlots
from outbound_pipeline.warehouse import (
    WarehouseResource,
    conversations,
    rows_kept_out_of_errors,
    table_metadata,
)

PREVIEW = (
    "customer_id",
    "recipient",
    "replied",
    "replied_at",
    "attached_to_campaign",
    "converted",
    "within_window",
)


def conversations_asset_spec(campaign: Campaign) -> dict[str, Any]:
    return {
        "key": asset_key(campaign.key, CONVERSATIONS),
        "deps": [asset_key(campaign.key, DELIVERIES)],
        "description": (
            f"What came of {campaign.key}'s messages of the day in iAdvize: per message sent, whether "
            f"the recipient replied within {campaign.attribution_window_hours:g} h, the conversation, "
            "whether iAdvize attached it to the campaign's iAdvize campaign ID, and whether it "
            "converted. Read again by the conversations schedule while replies may still arrive. "
            "Table: outbound_conversations."
        ),
        "kinds": {"sql"},
        "metadata": {
            **table_metadata(conversations),
            "iadvize_campaign_id": campaign.campaign_id,
        },
        **campaign_asset_options(campaign),
    }


def _metadata(
    counts: dict[str, int],
    period: tuple[dt.datetime, dt.datetime] | None,
    closed: bool,
    preview: dg.MetadataValue,
) -> dict[str, Any]:
    return {
        "dagster/row_count": counts["sent"],
        **counts,
        "window_closed": closed,
        "read_from": period[0].isoformat() if period else "",
        "read_to": period[1].isoformat() if period else "",
        "preview": preview,
    }


def build_conversations_asset(campaign: Campaign, outbound: OutboundConfig) -> dg.AssetsDefinition:
    key, settings = campaign.key, outbound.iadvize.conversations
    window = dt.timedelta(hours=campaign.attribution_window_hours)

    @dg.asset(**conversations_asset_spec(campaign))
    @rows_kept_out_of_errors
    def conversations_asset(
        context: dg.AssetExecutionContext,
        warehouse: WarehouseResource,
        state: StateStoreResource,
        iadvize: IAdvizeResource,
        clock: ClockResource,
    ) -> dg.MaterializeResult:
        day = ConversationDay(key, context.partition_key, campaign.campaign_id, window)
        later: list[Any] = []
        with state.reading() as conn:
            sent = sent_messages(conn, key, day.partition_date)
            if (period := read_period(sent, window)) is not None:
                later = later_messages(conn, key, day.partition_date, period)

        async def read() -> list[Any]:
            # Its login shares the user's budget with every run (the state store's login slots).
            slots = StoreLoginSlots(state.engine, iadvize.logins_per_minute)
            async with iadvize.client(4, slots) as client:
                return await collect_conversations(client, settings, day, sent, later)

        try:
            matches = asyncio.run(read()) if sent else []
        except IAdvizeError as exc:
            raise dg.Failure(
                description=f"{key} {day.partition_date}: reading the conversations failed: {exc}"
            ) from None
        now = clock.now()
        with warehouse.engine.begin() as conn:
            write_conversations(
                conn, key, day.partition_date, table_rows(matches, now, context.run_id)
            )
            where = (conversations.c.campaign_key == key) & (
                conversations.c.partition_date == day.partition_date
            )
            preview = masked_preview(
                conn, conversations, where, PREVIEW, [conversations.c.replied.desc()]
            )
        counts = conversation_counts(matches)
        context.log.info(f"{key} {day.partition_date}: {counts}")
        closed = window_closed(sent, window, now)
        return dg.MaterializeResult(metadata=_metadata(counts, period, closed, preview))

    return conversations_asset
