"""`<campaign>/report`: the day's figures, written to outbound_daily_stats and outbound_daily_reasons.

`outbound_pipeline.reporting` computes them from the audience, messages and conversations
(warehouse) and the ledger (state store); the asset writes them to the warehouse under a per-day
lock (two runs of the same day write one row) and shows each figure as a number the UI plots across
partitions. Its freshness check says when a day is not reported by the campaign's
`follow_up.report_deadline_cron`.
"""

# No `from __future__ import annotations`: Dagster reads the config and resource annotations of
# the decorated function as classes.

import json
import warnings
from typing import Any

import dagster as dg

from outbound_pipeline.clock import ClockResource
from outbound_pipeline.config import Campaign
from outbound_pipeline.defs.campaigns.keys import (
    CONVERSATIONS,
    DELIVERIES,
    REPORT,
    asset_key,
    campaign_asset_options,
)
from outbound_pipeline.defs.campaigns.metadata import markdown_table, rounded_failure_rate
from outbound_pipeline.ledger import StateStoreResource
from outbound_pipeline.reporting import (
    compute_daily_stats,
    experiment_figures,
    experiment_metadata,
    lock_report,
    report_metrics,
    write_daily_stats,
    write_experiment_figures,
)
from outbound_pipeline.warehouse import (
    WarehouseResource,
    daily_stats,
    rows_kept_out_of_errors,
    table_metadata,
)

# Columns of the stats row that are not figures (shown apart, or as the reason table).
NOT_FIGURES = (
    "reasons_json",
    "first_sent_at",
    "last_sent_at",
    "conversations_read_at",
    "campaign_key",
    "partition_date",
)


def report_asset_spec(campaign: Campaign) -> dict[str, Any]:
    return {
        "key": asset_key(campaign.key, REPORT),
        "deps": [asset_key(campaign.key, DELIVERIES), asset_key(campaign.key, CONVERSATIONS)],
        "description": (
            f"The day's figures of {campaign.key}: audience, eligible, sent (accepted by iAdvize), "
            "failed, skipped and deferred by reason, unknown, send rate; replied and reply rate, "
            "replies attached to the wrong campaign, conversions and conversion rate (rates over the "
            "messages sent). Tables: outbound_daily_stats (one row per campaign and day) and "
            "outbound_daily_reasons (one row per campaign, day, status and reason)."
        ),
        "kinds": {"sql"},
        "metadata": table_metadata(daily_stats),
        **campaign_asset_options(campaign),
    }


def report_metadata(stats: dict[str, Any], figures: dict[str, Any]) -> dict[str, Any]:
    reasons: dict[str, dict[str, int]] = json.loads(stats["reasons_json"])
    reason_rows = [
        {"status": status, "reason": reason, "rows": n}
        for status, by_reason in sorted(reasons.items())
        for reason, n in sorted(by_reason.items(), key=lambda item: -item[1])
    ]
    return {
        "dagster/row_count": 1,
        **report_metrics(figures, failure_rate=rounded_failure_rate(reasons)),
        "first_sent_at": str(stats["first_sent_at"] or ""),
        "last_sent_at": str(stats["last_sent_at"] or ""),
        "conversations_read_at": str(stats["conversations_read_at"] or "not read yet"),
        "reasons": dg.MetadataValue.json(reasons),
        "reason_rows": dg.MetadataValue.md(markdown_table(reason_rows)),
    }


def build_report_asset(campaign: Campaign) -> dg.AssetsDefinition:
    key = campaign.key

    @dg.asset(**report_asset_spec(campaign))
    @rows_kept_out_of_errors
    def report_asset(
        context: dg.AssetExecutionContext,
        warehouse: WarehouseResource,
        state: StateStoreResource,
        clock: ClockResource,
    ) -> dg.MaterializeResult:
        day = context.partition_key
        with state.reading() as ledger_conn, warehouse.engine.begin() as conn:
            lock_report(conn, key, day)
            stats = compute_daily_stats(conn, ledger_conn, key, day)
            write_daily_stats(conn, stats, context.run_id, clock.now())
            # Holdout and variants: their own table and figures (outbound_daily_groups).
            groups = experiment_figures(conn, campaign, day)
            write_experiment_figures(conn, key, day, groups, context.run_id, clock.now())
        figures = {k: v for k, v in stats.items() if k not in NOT_FIGURES}
        context.log.info(f"{key} {day}: {json.dumps(figures, default=str)}")
        metadata = {**report_metadata(stats, figures), **experiment_metadata(groups)}
        return dg.MaterializeResult(metadata=metadata)

    return report_asset


def build_report_freshness_checks(
    campaign: Campaign, report: dg.AssetsDefinition
) -> list[dg.AssetChecksDefinition]:
    """Per partition: the day's report must exist by the campaign's deadline on that day (a later
    backfill of an old day does not make a missing recent one fresh)."""
    with warnings.catch_warnings():
        # Dagster marks it superseded by FreshnessPolicy, which any partition's materialisation
        # satisfies: a backfilled old day would hide a missing report of today.
        warnings.simplefilter("ignore", dg.SupersessionWarning)
        checks = dg.build_time_partition_freshness_checks(
            assets=[report],
            deadline_cron=campaign.follow_up.report_deadline_cron,
            timezone=campaign.schedule.timezone,
        )
    return list(checks)


def build_report_freshness_sensor(checks: list[dg.AssetChecksDefinition]) -> dg.SensorDefinition:
    """Evaluates the reports' freshness checks once their deadlines pass; it sends nothing, so it
    runs by default."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dg.SupersessionWarning)
        return dg.build_sensor_for_freshness_checks(
            freshness_checks=checks,
            name="report_freshness",
            default_status=dg.DefaultSensorStatus.RUNNING,
        )
