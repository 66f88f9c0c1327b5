"""What every definition of a campaign shares: its asset keys, its daily partitions, its group."""

from __future__ import annotations

import datetime as dt
from typing import Any

import dagster as dg

from outbound_pipeline.config import Campaign

AUDIENCE, MESSAGES, DELIVERIES, REPORT = "audience", "messages", "deliveries", "report"
CONVERSATIONS = "conversations"
# The concurrency pool of every deliveries step: Dagster caps the calls to iAdvize across runs.
SEND_POOL = "iadvize_send"


def asset_key(campaign_key: str, name: str) -> dg.AssetKey:
    return dg.AssetKey([campaign_key, name])


def partitions_for(campaign: Campaign) -> dg.DailyPartitionsDefinition:
    end = campaign.end_date + dt.timedelta(days=1) if campaign.end_date else None
    return dg.DailyPartitionsDefinition(
        start_date=campaign.start_date.isoformat(),
        end_date=end.isoformat() if end else None,
        timezone=campaign.schedule.timezone,
        # Today's partition exists from midnight: a campaign sends today's messages today.
        end_offset=1,
    )


def campaign_asset_options(campaign: Campaign) -> dict[str, Any]:
    """The group, partitions and owners every asset of the campaign is declared with."""
    return {
        "group_name": campaign.key,
        "partitions_def": partitions_for(campaign),
        "owners": campaign.owners or None,
    }
