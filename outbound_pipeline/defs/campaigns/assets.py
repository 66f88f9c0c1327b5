"""The five daily-partitioned assets of a campaign, keyed and grouped by its key.

    warehouse/<brand tables> -> <campaign>/audience -> <campaign>/messages -> <campaign>/deliveries
        -> <campaign>/conversations -> <campaign>/report

The brand's tables the audience query reads are external assets (group `warehouse`, written by the
brand, never by the pipeline: brand_tables.py), so the lineage starts where the data does. Each
campaign asset (one module per stage: audience_asset.py, messages_asset.py, deliveries_asset.py,
conversations_asset.py, report_asset.py) writes its own warehouse table inside the asset (delete-then-insert for its
partition; the deliveries asset keeps the ledger in the state store and publishes it to the
warehouse's outbound_deliveries), declares that table's documented columns
(`dagster/column_schema`) and returns metadata; the blocking checks on audience and messages stop a
run before anything is sent.
"""

from __future__ import annotations

import dagster as dg

from outbound_pipeline.config import Campaign, OutboundConfig
from outbound_pipeline.defs.campaigns.audience_asset import build_audience_asset
from outbound_pipeline.defs.campaigns.conversations_asset import build_conversations_asset
from outbound_pipeline.defs.campaigns.deliveries_asset import build_deliveries_asset
from outbound_pipeline.defs.campaigns.keys import (
    AUDIENCE,
    CONVERSATIONS,
    DELIVERIES,
    MESSAGES,
    REPORT,
    SEND_POOL,
    asset_key,
    partitions_for,
)
from outbound_pipeline.defs.campaigns.messages_asset import build_messages_asset
from outbound_pipeline.defs.campaigns.report_asset import build_report_asset
from outbound_pipeline.reporting import FailureRateThresholds

# Imported from here by the tests and benchmarks.
__all__ = [
    "AUDIENCE",
    "CONVERSATIONS",
    "DELIVERIES",
    "MESSAGES",
    "REPORT",
    "SEND_POOL",
    "asset_key",
    "build_campaign_assets",
    "partitions_for",
]


def build_campaign_assets(
    campaign: Campaign,
    outbound: OutboundConfig,
    thresholds: FailureRateThresholds | None = None,
) -> list[dg.AssetsDefinition]:
    """Audience, messages, deliveries, conversations and report of one campaign."""
    return [
        build_audience_asset(campaign, outbound),
        build_messages_asset(campaign, outbound),
        build_deliveries_asset(campaign, outbound, thresholds or FailureRateThresholds.from_env()),
        build_conversations_asset(campaign, outbound),
        build_report_asset(campaign),
    ]
