"""The code location as a newcomer meets it: what `-m outbound_pipeline` loads, the brand tables'
columns in the asset catalog."""

from __future__ import annotations

import dagster as dg

from outbound_pipeline.config import OutboundConfig
from outbound_pipeline.defs.campaigns.component import build_definitions
from outbound_pipeline.demo import DEMO_TABLES, customers_table
from outbound_pipeline.settings import resources_from_env
from outbound_pipeline.warehouse import WarehouseResource


def test_the_package_exposes_the_code_location_under_a_name_no_subpackage_takes() -> None:
    # Dagster finds the definitions among the package's attributes, then looks them up again by
    # name after loading them, which imports the subpackages (outbound_pipeline.defs).
    import outbound_pipeline.defs

    assert dir(outbound_pipeline) == ["code_location"]
    assert isinstance(outbound_pipeline.code_location(), dg.Definitions)


def _brand_table_columns(config: OutboundConfig) -> dict[str, list[str]]:
    """Brand table -> the columns its external asset shows, built with a warehouse out of reach."""
    unreachable = WarehouseResource(url="postgresql://nobody@127.0.0.1:1/no_such_warehouse")
    resources = {**resources_from_env(), "warehouse": unreachable}
    graph = build_definitions(config, resources).get_repository_def().asset_graph
    columns = {}
    for key in graph.get_all_asset_keys():
        schema = graph.get(key).metadata.get("dagster/column_schema")
        if key.path[0] == "warehouse" and schema is not None:
            columns[key.path[-1]] = [c.name for c in schema.columns]
    return columns


def test_the_brand_tables_show_their_columns_without_a_connection(demo_config) -> None:  # type: ignore[no-untyped-def]
    demo = _brand_table_columns(demo_config)
    demo_tables = customers_table.metadata.tables  # the demo's tables share one MetaData
    assert set(demo) == set(DEMO_TABLES)
    for name in DEMO_TABLES:
        assert demo[name] == [c.name for c in demo_tables[name].columns]
    assert "loyalty_tier" in demo["customers"] and "ready_date" in demo["orders"]
    assert "offer_label" in demo["offer_calendar"]

    # A configuration of the brand's own (here the demo's, edited): what the contract promises.
    campaigns = [c.model_copy(update={"description": "edited"}) for c in demo_config.campaigns]
    own = _brand_table_columns(demo_config.model_copy(update={"campaigns": campaigns}))
    assert own == {
        "customers": ["customer_id", "phone", "first_name", "last_name", "country"],
        "whatsapp_consents": ["customer_id", "category", "status", "updated_at"],
    }
