"""The code location as a newcomer meets it: what `-m outbound_pipeline` loads, the brand tables'
columns in the asset catalog, and the `outbound-pipeline` command (its help, `check-config`)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from outbound_pipeline import cli
from outbound_pipeline.config import BUNDLED_CONFIG, OutboundConfig
from outbound_pipeline.defs.campaigns.component import build_definitions
from outbound_pipeline.demo import DEMO_TABLES, customers_table
from outbound_pipeline.settings import CONFIG_PATH, resources_from_env
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
        "whatsapp_consents": ["customer_id", "category", "status", "updated_at", "id", "source"],
    }


def test_check_config_prints_one_success_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv(CONFIG_PATH, raising=False)
    assert cli.main(["check-config"]) == 0
    out = capsys.readouterr().out
    assert out == f"{BUNDLED_CONFIG} (the bundled demo): valid, 3 templates and 2 campaigns\n"

    mine = tmp_path / "campaigns.yaml"
    mine.write_text(BUNDLED_CONFIG.read_text(encoding="utf-8"), encoding="utf-8")
    monkeypatch.setenv(CONFIG_PATH, str(mine))
    assert cli.main(["check-config"]) == 0
    assert capsys.readouterr().out == f"{mine}: valid, 3 templates and 2 campaigns\n"


def test_check_config_prints_the_error_and_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text("templates: []\ncampaigns: 3\n", encoding="utf-8")
    assert cli.main(["check-config", str(broken)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert f"{broken}: invalid configuration" in captured.err and "campaigns" in captured.err

    assert cli.main(["check-config", str(tmp_path / "missing.yaml")]) == 2
    assert "cannot read the configuration file" in capsys.readouterr().err


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def test_the_help_lists_only_real_commands_and_every_argument_has_help() -> None:
    parser = cli.parser()
    commands = _subcommands(parser)
    assert set(commands) == {
        "check-config",
        "demo",
        "stats",
        "halts",
        "suppressions",
        "columns",
        "db",
    }
    text = parser.format_help()
    assert "sandbox" not in text.split("positional arguments")[0]  # not announced as a command
    arguments: list[Any] = [a for p in commands.values() for a in p._actions]
    assert all(a.help for a in arguments), [a.dest for a in arguments if not a.help]
