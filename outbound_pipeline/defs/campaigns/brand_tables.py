"""The brand's tables the campaigns read, as external assets (group `warehouse`).

The brand loads them; the pipeline never writes them.
"""

from __future__ import annotations

import re

import dagster as dg

from outbound_pipeline.config import Campaign, OutboundConfig

WAREHOUSE_GROUP = "warehouse"

_TABLE_REF = re.compile(
    r"\b(?:FROM|JOIN)\s+([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)", re.IGNORECASE
)
_CTE_NAME = re.compile(
    r"(?:\bWITH(?:\s+RECURSIVE)?|,)\s*([A-Za-z_][A-Za-z0-9_]*)\s+AS\s*\(", re.IGNORECASE
)


def source_tables(campaign: Campaign, config: OutboundConfig) -> list[str]:
    """The brand tables a campaign reads: those its audience query names, and the consent table."""
    sql = re.sub(r"--[^\n]*", " ", campaign.audience_sql)
    ctes = {name.lower() for name in _CTE_NAME.findall(sql)}
    names = [name for name in _TABLE_REF.findall(sql) if name.lower() not in ctes]
    return list(dict.fromkeys([*names, config.consents_table]))


def source_key(table: str) -> dg.AssetKey:
    return dg.AssetKey([WAREHOUSE_GROUP, *table.split(".")])


def source_table_specs(config: OutboundConfig) -> list[dg.AssetSpec]:
    """One external asset per brand table read by any campaign (shared by the campaigns)."""
    readers: dict[str, list[str]] = {}
    for campaign in config.campaigns:
        for table in source_tables(campaign, config):
            readers.setdefault(table, []).append(campaign.key)
    specs = []
    for table, keys in readers.items():
        role = (
            "the consent history (latest row per customer and category wins)"
            if table == config.consents_table
            else "a brand table"
        )
        specs.append(
            dg.AssetSpec(
                key=source_key(table),
                group_name=WAREHOUSE_GROUP,
                kinds={"sql"},
                description=(
                    f"{table}: {role} in the brand's warehouse, read by the audience of "
                    f"{', '.join(keys)}. The brand loads it; the pipeline never writes it."
                ),
                metadata={"dagster/table_name": table},
            )
        )
    return specs
