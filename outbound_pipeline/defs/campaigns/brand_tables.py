"""The brand's tables the campaigns read, as external assets (group `warehouse`).

The brand loads them; the pipeline never writes them. Each carries its column schema
(`dagster/column_schema`), declared without connecting to the warehouse: the contract's columns of the
customers and consent tables and, when the configuration is the bundled demo, the demo's own table
definitions (orders, offer_calendar, the extra customer columns).
"""

from __future__ import annotations

import functools
import re

import dagster as dg
import sqlalchemy as sa

from outbound_pipeline.config import Campaign, OutboundConfig, load_config
from outbound_pipeline.demo import DEMO_TABLES, customers_table
from outbound_pipeline.warehouse import table_schema

WAREHOUSE_GROUP = "warehouse"

_TABLE_REF = re.compile(
    r"\b(?:FROM|JOIN)\s+([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)", re.IGNORECASE
)
_CTE_NAME = re.compile(
    r"(?:\bWITH(?:\s+RECURSIVE)?|,)\s*([A-Za-z_][A-Za-z0-9_]*)\s+AS\s*\(", re.IGNORECASE
)

# The columns the contract asks of the brand (README, "Warehouse tables the brand provides").
CUSTOMER_COLUMNS = {
    "customer_id": "The brand's customer identifier; the consent table refers to it.",
    "phone": "The customer's phone number, E.164 or national; the pipeline normalises it.",
    "first_name": "First name, as a template may greet the customer.",
    "last_name": "Last name.",
    "country": "ISO 3166-1 alpha-2 country code: reads a national phone number.",
}
CONSENT_COLUMNS = {
    "customer_id": "The customer this consent change is about.",
    "category": "The consent category a campaign names (consent_category), e.g. order_updates.",
    "status": "'opted_in' or 'opted_out'.",
    "updated_at": "When the change was made: the latest row per customer and category is the current state.",
}


def source_tables(campaign: Campaign, config: OutboundConfig) -> list[str]:
    """The brand tables a campaign reads: those its audience query names, and the consent table."""
    sql = re.sub(r"--[^\n]*", " ", campaign.audience_sql)
    ctes = {name.lower() for name in _CTE_NAME.findall(sql)}
    names = [name for name in _TABLE_REF.findall(sql) if name.lower() not in ctes]
    return list(dict.fromkeys([*names, config.consents_table]))


def source_key(table: str) -> dg.AssetKey:
    return dg.AssetKey([WAREHOUSE_GROUP, *table.split(".")])


@functools.cache
def _bundled_demo() -> OutboundConfig:
    return load_config()


def demo_tables(config: OutboundConfig) -> dict[str, sa.Table]:
    """The demo's table definitions by name when `config` is the bundled demo, else none."""
    if config != _bundled_demo():
        return {}
    # The demo's tables share one MetaData: the customers table leads to the others.
    return {name: customers_table.metadata.tables[name] for name in DEMO_TABLES}


def _contract_schema(columns: dict[str, str], types: dict[str, str]) -> dg.TableSchema:
    return dg.TableSchema(
        columns=[
            dg.TableColumn(name, types.get(name, "text"), description=text)
            for name, text in columns.items()
        ]
    )


def _with_contract_descriptions(schema: dg.TableSchema, contract: dict[str, str]) -> dg.TableSchema:
    return dg.TableSchema(
        columns=[
            dg.TableColumn(
                c.name,
                c.type,
                description=c.description or contract.get(c.name, ""),
                constraints=c.constraints,
            )
            for c in schema.columns
        ]
    )


def column_schema(table: str, config: OutboundConfig) -> dg.TableSchema | None:
    """The columns known of a brand table without reading the warehouse, or None."""
    contract = {
        config.customers_table: CUSTOMER_COLUMNS,
        config.consents_table: {
            **CONSENT_COLUMNS,
            # The columns that identify a consent record, copied to every row it allowed.
            **{
                c: "Identifies the consent record (consent_columns)."
                for c in config.consent_columns
            },
        },
    }.get(table, {})
    demo = demo_tables(config).get(table)
    if demo is not None:
        return _with_contract_descriptions(table_schema(demo), contract)
    if contract:
        return _contract_schema(contract, {"updated_at": "timestamp"})
    return None


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
        schema = column_schema(table, config)
        specs.append(
            dg.AssetSpec(
                key=source_key(table),
                group_name=WAREHOUSE_GROUP,
                kinds={"sql"},
                description=(
                    f"{table}: {role} in the brand's warehouse, read by the audience of "
                    f"{', '.join(keys)}. The brand loads it; the pipeline never writes it."
                ),
                metadata={
                    "dagster/table_name": table,
                    **({"dagster/column_schema": schema} if schema else {}),
                },
            )
        )
    return specs
