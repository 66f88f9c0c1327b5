"""Reporting: the ledger and the daily tables analysts query, their documented columns, and the
metadata each materialisation shows in the UI (counts, breakdowns, masked previews, query, preview,
send rate), on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
import json
import re
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import dagster as dg
import sqlalchemy as sa

from outbound_pipeline.clock import as_utc
from outbound_pipeline.defs.campaigns.component import build_definitions
from outbound_pipeline.reporting import compute_daily_stats, lock_report, write_daily_stats
from outbound_pipeline.settings import resources_from_env
from outbound_pipeline.warehouse import (
    ANALYST_TABLES,
    daily_reasons,
    daily_stats,
    deliveries,
    markdown_reference,
    table_schema,
    tables,
)
from outbound_pipeline_tests.conftest import (
    DAY,
    deliveries_run_config,
    materialize_campaign,
    resources_for,
)

DOCS = Path(__file__).resolve().parent.parent / "docs" / "analysts.md"
KEY = "order_ready"


def _metadata_text(result: dg.ExecuteInProcessResult) -> str:
    parts = []
    for event in result.get_asset_materialization_events():
        for label, value in event.materialization.metadata.items():
            parts.append(f"{label}={getattr(value, 'value', value)}")
    return "\n".join(parts)


def _materialization(result: dg.ExecuteInProcessResult, name: str) -> dict[str, Any]:
    events = result.asset_materializations_for_node(f"{KEY}__{name}")
    assert len(events) == 1
    return {k: getattr(v, "value", v) for k, v in events[0].metadata.items()}


def test_daily_tables_agree_with_the_ledger_and_sent_rows_carry_attribution(
    seeded, sandbox, demo_config
) -> None:
    result = materialize_campaign(demo_config, KEY, resources_for(seeded, sandbox))
    assert result.success
    window = dt.timedelta(hours=demo_config.campaign(KEY).attribution_window_hours)
    d = deliveries.c
    with seeded.engine.connect() as conn:
        ledger = conn.execute(
            sa.select(d.status, d.reason, d.sent_at, d.attribution_expires_at).where(
                d.campaign_key == KEY, d.partition_date == DAY
            )
        ).all()
        audience_rows = conn.execute(
            sa.select(sa.func.count())
            .select_from(tables.audience)
            .where(tables.audience.c.campaign_key == KEY)
        ).scalar_one()
        stats = (
            conn.execute(sa.select(daily_stats).where(daily_stats.c.campaign_key == KEY))
            .mappings()
            .one()
        )
        reasons = conn.execute(
            sa.select(
                daily_reasons.c.status, daily_reasons.c.reason, daily_reasons.c.row_count
            ).where(daily_reasons.c.campaign_key == KEY, daily_reasons.c.partition_date == DAY)
        ).all()

    by_status = Counter(r.status for r in ledger)
    by_reason = Counter((r.status, r.reason or r.status) for r in ledger)
    assert stats["audience_rows"] == audience_rows == len(ledger)
    for status in ("sent", "failed", "skipped", "deferred", "unknown"):
        assert stats[status] == by_status.get(status, 0), status
    assert stats["eligible"] == stats["sent"] > 10
    assert json.loads(stats["reasons_json"]) == {
        s: {r: n for (s2, r), n in by_reason.items() if s2 == s} for s in by_status
    }
    # The long table: one row per status and reason, adding up to the audience.
    assert {(r.status, r.reason): r.row_count for r in reasons} == dict(by_reason)
    assert sum(r.row_count for r in reasons) == audience_rows
    assert any(r.status == "skipped" for r in reasons)

    sent = [r for r in ledger if r.status == "sent"]
    assert sent and all(
        as_utc(r.attribution_expires_at) == as_utc(r.sent_at) + window for r in sent
    )
    assert all(r.attribution_expires_at is None for r in ledger if r.status != "sent")
    assert as_utc(stats["first_sent_at"]) == min(as_utc(r.sent_at) for r in sent)
    assert as_utc(stats["last_sent_at"]) == max(as_utc(r.sent_at) for r in sent)


def test_two_runs_reporting_one_partition_at_once_both_succeed_and_the_last_one_stands(
    seeded, sandbox, demo_config
) -> None:
    # Two runs of a partition (a backfill beside a retry) may reach the report together: the second
    # used to insert into the emptied tables beside the first and fail on the primary key.
    assert materialize_campaign(demo_config, KEY, resources_for(seeded, sandbox)).success
    now = dt.datetime.now(dt.UTC)
    errors: list[BaseException] = []

    def second_report() -> None:
        try:
            with seeded.engine.begin() as conn:
                lock_report(conn, KEY, DAY)
                write_daily_stats(
                    conn, compute_daily_stats(conn, conn, KEY, DAY), "second-run", now
                )
        except BaseException as exc:
            errors.append(exc)

    with seeded.engine.connect() as conn, conn.begin():
        lock_report(conn, KEY, DAY)
        write_daily_stats(conn, compute_daily_stats(conn, conn, KEY, DAY), "first-run", now)
        second = threading.Thread(target=second_report)
        second.start()
        second.join(1.0)
        assert second.is_alive(), "the second report must wait for the first to commit"
    second.join(30)
    assert not second.is_alive() and errors == []
    with seeded.engine.connect() as conn:
        stats_runs = (
            conn.execute(sa.select(daily_stats.c.run_id).where(daily_stats.c.campaign_key == KEY))
            .scalars()
            .all()
        )
        reason_runs = set(
            conn.execute(
                sa.select(daily_reasons.c.run_id).where(daily_reasons.c.campaign_key == KEY)
            ).scalars()
        )
    assert stats_runs == ["second-run"] and reason_runs == {"second-run"}


def test_every_materialisation_shows_counts_breakdowns_masked_previews_query_and_rate(
    seeded, sandbox, demo_config
) -> None:
    result = materialize_campaign(demo_config, KEY, resources_for(seeded, sandbox))
    assert result.success
    audience_md = _materialization(result, "audience")
    assert audience_md["dagster/row_count"] > audience_md["eligible"] > 0
    assert audience_md["not_eligible_by_reason"]
    assert "audience query" not in audience_md and "SELECT" in audience_md["audience_query"]
    assert "| row_number |" in audience_md["preview (masked)"]

    messages_md = _materialization(result, "messages")
    assert messages_md["rendered"] > 0 and messages_md["preview_text"].startswith("Bonjour ")

    deliveries_md = _materialization(result, "deliveries")
    assert deliveries_md["status_breakdown"]["sent"] == audience_md["eligible"]
    assert "skipped" in deliveries_md["reason_breakdown"]
    assert deliveries_md["send_rate_msg_per_s"] > 0 and deliveries_md["dry_run"] is False
    assert deliveries_md["failure_rate"] == 0.0
    assert "| customer_id | recipient | status |" in deliveries_md["preview (masked)"]

    report_md = _materialization(result, "report")
    assert report_md["sent"] == audience_md["eligible"] and report_md["reasons"]["sent"]
    assert "send_rate_per_s" in report_md and "failure_rate" in report_md

    # The failure-rate check ran with the send.
    checks = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert checks["failure_rate_within_thresholds"].passed

    # No phone number in clear anywhere in the UI metadata.
    with seeded.engine.connect() as conn:
        phones = conn.execute(
            sa.select(tables.audience.c.recipient, tables.audience.c.phone_raw).where(
                tables.audience.c.campaign_key == KEY
            )
        ).all()
    text = _metadata_text(result)
    for recipient, raw in phones:
        for value in (recipient, raw):
            if value and len(re.sub(r"\D", "", value)) >= 8:
                assert value not in text, "a phone number reached the UI metadata"


def test_column_schema_metadata_comes_from_the_table_comments(demo_config) -> None:
    defs = build_definitions(demo_config, resources_from_env())
    graph = defs.get_repository_def().asset_graph
    expected = {
        "audience": tables.audience,
        "messages": tables.messages,
        "deliveries": tables.deliveries,
        "report": daily_stats,
    }
    for campaign in demo_config.campaigns:
        for name, table in expected.items():
            node = graph.get(dg.AssetKey([campaign.key, name]))
            schema = node.metadata["dagster/column_schema"]
            assert [c.name for c in schema.columns] == [c.name for c in table.columns]
            assert all(c.description for c in schema.columns), (
                f"{table.name} has an undocumented column"
            )
            assert node.metadata["dagster/table_name"] == table.name
            # Descriptions, owners and kinds make the lineage graph readable.
            assert node.description and campaign.key in node.description
            assert list(node.owners) == campaign.owners and node.kinds
        audience = graph.get(dg.AssetKey([campaign.key, "audience"]))
        upstream = {k.to_user_string() for k in audience.parent_keys}
        assert "warehouse/whatsapp_consents" in upstream and "warehouse/customers" in upstream
    assert {
        k.to_user_string() for k in graph.get(dg.AssetKey(["order_ready", "audience"])).parent_keys
    } >= {"warehouse/orders"}
    assert table_schema(tables.deliveries).columns[0].constraints.nullable is False


def test_postgres_column_comments_match_the_documentation(warehouse) -> None:
    """On PostgreSQL the same descriptions are the tables' column comments (psql \\d+)."""
    if warehouse.kind != "postgres":
        return  # SQLite has no column comments
    inspector = sa.inspect(warehouse.engine)
    for table in ANALYST_TABLES:
        comments = {c["name"]: c.get("comment") for c in inspector.get_columns(table.name)}
        assert comments == {c.name: c.comment for c in table.columns}, table.name


def test_analyst_guide_lists_every_column_and_its_sql_runs(seeded, sandbox, demo_config) -> None:
    text = DOCS.read_text(encoding="utf-8")
    section = text.split("<!-- columns:start -->\n", 1)[1].split("<!-- columns:end -->", 1)[0]
    assert section == markdown_reference(), (
        "docs/analysts.md is stale: paste the output of `outbound-pipeline columns` into its column reference"
    )
    assert "![" in text and "asset-graph.png" in text

    resources = resources_for(seeded, sandbox)
    for campaign in demo_config.campaigns:
        assert materialize_campaign(demo_config, campaign.key, resources).success
    assert materialize_campaign(
        demo_config, KEY, resources, run_config=deliveries_run_config(KEY, dry_run=True)
    ).success
    queries = re.findall(r"```sql\n(.*?)```", text, re.DOTALL)
    assert len(queries) >= 8
    with seeded.engine.connect() as conn:
        results = [conn.execute(sa.text(q)).all() for q in queries]
    (
        stats,
        reasons,
        rates,
        recipients,
        attribution,
        lost,
        _unknown,
        _deferred,
        dry,
        _tests,
        replies,
    ) = results
    # The sandbox simulated replies: the day shows them, and its misattached rows add up.
    assert replies and all(r.misattached == r.wrong_campaign + r.unattached for r in replies)
    assert all(r.replied <= r.sent and r.conversions <= r.replied for r in replies)
    assert {r.campaign_key for r in stats} == {c.key for c in demo_config.campaigns}
    assert reasons and rates and recipients and attribution and dry
    assert all(r.audience_rows == r.with_outcome for r in lost)
