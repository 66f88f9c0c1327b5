"""The asset factory: four daily-partitioned assets per campaign, keyed and grouped by its key.

    warehouse/<brand tables> -> <campaign>/audience -> <campaign>/messages -> <campaign>/deliveries
        -> <campaign>/report

The brand's tables the audience query reads are external assets (group `warehouse`, written by the
brand, never by the pipeline), so the lineage starts where the data does. Each campaign asset writes
its own warehouse table inside the asset (delete-then-insert for its partition, or the ledger's
upsert), declares that table's documented columns (`dagster/column_schema`) and returns metadata; the
blocking checks on audience and messages stop a run before anything is sent.
"""


import asyncio
import datetime as dt
import json
import re
from collections.abc import Sequence
from typing import Any

import dagster as dg
import sqlalchemy as sa
from pydantic import Field

from outbound_pipeline import ledger
from outbound_pipeline.audience import extract, written_by_run
from outbound_pipeline.audience import stored_summary as stored_audience_summary
from outbound_pipeline.clock import ClockResource
from outbound_pipeline.config import Campaign, OutboundConfig
from outbound_pipeline.defs.campaigns import checks
from outbound_pipeline.iadvize import IAdvizeResource, login_count
from outbound_pipeline.ledger import WOULD_SEND, CampaignPlan, dry_run, extra_checks_for, plan_for
from outbound_pipeline.messages import render
from outbound_pipeline.messages import stored_summary as stored_messages_summary
from outbound_pipeline.reporting import (
    FailureRateThresholds,
    compute_daily_stats,
    failure_rate,
    failure_rate_check,
    failure_rate_spec,
    lock_report,
    status_totals,
    write_daily_stats,
)
from outbound_pipeline.sending import SendLoop, SendSettings, interrupts_stop
from outbound_pipeline.warehouse import (
    WarehouseResource,
    audience,
    consent_id_is_integer,
    daily_stats,
    deliveries,
    dry_runs,
    messages,
    refresh_statistics,
    rows_kept_out_of_errors,
    table_metadata,
)
from outbound_pipeline.whatsapp import masked_sample

AUDIENCE, MESSAGES, DELIVERIES, REPORT = "audience", "messages", "deliveries", "report"
SEND_POOL = "iadvize_send"
PREVIEW_ROWS = 10
WAREHOUSE_GROUP = "warehouse"


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


class AudienceConfig(dg.Config):
    """Run configuration of the audience step (Launchpad: ops.<campaign>__audience.config)."""

    refresh_settled_day: bool = Field(
        default=False,
        description=(
            "Extract and render again a day whose every row already has its final outcome. By default "
            "such a day keeps the audience and messages its sends were made from; nothing is sent "
            "again either way."
        ),
    )


class DeliveriesConfig(dg.Config):
    """Run configuration of the send step (Launchpad: ops.<campaign>__deliveries.config)."""

    resend_unknown: bool = Field(
        default=False, description="Resend this partition's `unknown` rows (they may have been delivered)."
    )
    resend_failed_codes: list[str] = Field(
        default_factory=list, description="Resend this partition's failures with these error codes."
    )
    concurrency: int = Field(default=32, ge=1, le=512, description="Calls in flight at once.")
    batch_size: int = Field(default=100, ge=1, le=5000, description="Rows claimed per ledger transaction.")
    max_attempts: int = Field(default=4, ge=1, le=10, description="Calls per row per run for retryable errors.")
    stale_claim_seconds: float = Field(
        default=ledger.DEAD_SENDER_SECONDS, gt=0, description="A sender silent this long is dead: its in-flight rows become unknown."
    )
    max_send_rate: float | None = Field(
        default=None, description="Override the campaign's messages/s; 0 lifts pacing (benchmarks only)."
    )
    dry_run: bool = Field(
        default=False,
        description=(
            "Go through every check and record what would be sent in outbound_dry_runs, without any "
            "call to iAdvize and without changing the ledger: a later real run sends the same rows."
        ),
    )


def _table_md(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "_no rows_"
    headers = list(rows[0])
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    for row in rows:
        cells = [str(row[h] if row[h] is not None else "").replace("|", "\\|").replace("\n", " ")[:80] for h in headers]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _breakdown(counter: dict[str, int]) -> dg.MetadataValue:
    return dg.MetadataValue.json(dict(sorted(counter.items())))


def _rate_value(counts: dict[str, dict[str, int]]) -> float:
    rate, _ = failure_rate(status_totals(counts))
    return round(rate, 4) if rate is not None else 0.0


def _ledger_sample(conn: sa.Connection, plan: CampaignPlan) -> list[dict[str, Any]]:
    d = deliveries.c
    return [
        dict(r)
        for r in conn.execute(
            sa.select(d.customer_id, d.recipient, d.status, d.reason, d.message_id, d.attempts, d.sent_at, d.attribution_expires_at)
            .where(plan.where(deliveries))
            .order_by(d.updated_at.desc(), d.delivery_key)
            .limit(PREVIEW_ROWS)
        ).mappings()
    ]


_TABLE_REF = re.compile(r"\b(?:FROM|JOIN)\s+([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)", re.IGNORECASE)
_CTE_NAME = re.compile(r"(?:\bWITH(?:\s+RECURSIVE)?|,)\s*([A-Za-z_][A-Za-z0-9_]*)\s+AS\s*\(", re.IGNORECASE)


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
        role = "the consent history (latest row per customer and category wins)" if table == config.consents_table else "a brand table"
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


def build_campaign_assets(
    campaign: Campaign,
    outbound: OutboundConfig,
    thresholds: FailureRateThresholds | None = None,
) -> list[dg.AssetsDefinition]:
    thresholds = thresholds or FailureRateThresholds.from_env()
    template = outbound.template_for(campaign)
    key = campaign.key
    partitions = partitions_for(campaign)
    owners = campaign.owners or None
    common: dict[str, Any] = {"group_name": key, "partitions_def": partitions, "owners": owners}
    audience_key, messages_key = asset_key(key, AUDIENCE), asset_key(key, MESSAGES)
    deliveries_key, report_key = asset_key(key, DELIVERIES), asset_key(key, REPORT)

    @dg.asset(
        key=audience_key,
        description=(
            f"Every row of the {key} audience query for the day, joined to the current "
            f"'{campaign.consent_category}' consent, phones normalised to E.164, each with a verdict "
            "(eligible or the reason not). Table: outbound_audience."
        ),
        kinds={"sql", "python"},
        check_specs=[
            dg.AssetCheckSpec(name, asset=audience_key, blocking=True, description=text)
            for name, text in checks.AUDIENCE_CHECKS.items()
        ],
        deps=[source_key(table) for table in source_tables(campaign, outbound)],
        metadata={
            **table_metadata(audience),
            "audience_query": dg.MetadataValue.md(f"```sql\n{campaign.audience_sql.strip()}\n```"),
            "consent_category": campaign.consent_category,
        },
        **common,
    )
    @rows_kept_out_of_errors
    def audience_asset(
        context: dg.AssetExecutionContext, config: AudienceConfig, warehouse: WarehouseResource
    ) -> dg.MaterializeResult:
        day = context.partition_key
        engine = warehouse.engine
        with engine.connect() as conn:
            settled = 0 if config.refresh_settled_day else ledger.settled_rows(conn, key, day)
        if settled:
            # A backfill over a finished day: re-extracting would cost minutes at scale and replace
            # the snapshot the sends were made from, for no send at all.
            context.log.info(
                f"{key} {day}: every row already has its final outcome ({settled} ledger rows); keeping the "
                "audience the sends were made from (refresh_settled_day re-extracts it)"
            )
            with engine.connect() as conn:
                summary = stored_audience_summary(conn, key, day)
            summary.query = campaign.audience_sql.strip()
        else:
            summary = extract(
                engine, campaign, outbound, day, context.run_id,
                progress=lambda n: context.log.info(f"{key} {day}: {n} audience rows read") if n % 50_000 == 0 else None,
            )
        with engine.connect() as conn:
            check_results = checks.audience_checks(conn, key, day)
            sample = [
                dict(r)
                for r in conn.execute(
                    sa.select(audience.c.row_number, audience.c.customer_id, audience.c.phone_raw, audience.c.recipient, audience.c.consent_status, audience.c.eligible, audience.c.reason)
                    .where(audience.c.campaign_key == key, audience.c.partition_date == day)
                    .order_by(audience.c.row_number)
                    .limit(PREVIEW_ROWS)
                ).mappings()
            ]
        context.log.info(f"{key} {day}: {summary.rows} rows, {summary.eligible} eligible; not eligible: {dict(summary.reasons)}")
        return dg.MaterializeResult(
            metadata={
                "dagster/row_count": summary.rows,
                "settled_day_kept": bool(settled),
                "eligible": summary.eligible,
                "not_eligible_by_reason": _breakdown(summary.reasons),
                "preview (masked)": dg.MetadataValue.md(_table_md(masked_sample(sample))),
                "audience_query": dg.MetadataValue.md(f"```sql\n{summary.query}\n```"),
                "warehouse": warehouse.describe(),
            },
            check_results=check_results,
        )

    @dg.asset(
        key=messages_key,
        deps=[audience_key],
        description=(
            f"One rendered payload per eligible {key} recipient: template {template.name}/"
            f"{template.language} ({template.category}) parameters and the preview text, or the "
            "rule a value broke. Table: outbound_messages."
        ),
        kinds={"python", "sql"},
        check_specs=[
            dg.AssetCheckSpec(name, asset=messages_key, blocking=True, description=text)
            for name, text in checks.MESSAGE_CHECKS.items()
        ],
        metadata={
            **table_metadata(messages),
            "template": f"{template.name}/{template.language} ({template.category})",
            "template_body": template.body,
            "template_header": template.header or "",
        },
        **common,
    )
    @rows_kept_out_of_errors
    def messages_asset(context: dg.AssetExecutionContext, warehouse: WarehouseResource) -> dg.MaterializeResult:
        day = context.partition_key
        engine = warehouse.engine
        with engine.connect() as conn:
            # The audience step of this run re-extracted the day (refresh_settled_day): render it too.
            settled = ledger.settled_rows(conn, key, day) and not written_by_run(conn, key, day, context.run_id)
        if settled:
            context.log.info(f"{key} {day}: every row already has its final outcome; keeping the messages sent")
            with engine.connect() as conn:
                summary = stored_messages_summary(conn, key, day)
        else:
            summary = render(engine, campaign, outbound, day, context.run_id)
        with engine.connect() as conn:
            check_results = checks.message_checks(conn, campaign, template, day)
            sample = [
                dict(r)
                for r in conn.execute(
                    sa.select(messages.c.customer_id, messages.c.recipient, messages.c.rendered, messages.c.reason)
                    .where(messages.c.campaign_key == key, messages.c.partition_date == day)
                    .limit(PREVIEW_ROWS)
                ).mappings()
            ]
        context.log.info(f"{key} {day}: {summary.rendered}/{summary.rows} rendered; skipped: {dict(summary.reasons)}")
        return dg.MaterializeResult(
            metadata={
                "dagster/row_count": summary.rows,
                "settled_day_kept": bool(settled),
                "rendered": summary.rendered,
                # Cleaning is not stored per row: a kept day cannot tell it.
                **({} if settled else {"values_cleaned": summary.cleaned}),
                "skipped_by_reason": _breakdown(summary.reasons),
                "preview_text": dg.MetadataValue.text(summary.sample_preview or ""),
                "preview (masked)": dg.MetadataValue.md(_table_md(masked_sample(sample))),
            },
            check_results=check_results,
        )

    @dg.asset(
        key=deliveries_key,
        deps=[messages_key],
        description=(
            f"The send ledger of {key} for the day: each message claimed, re-checked against opt-outs "
            "and limits, sent through iAdvize, and its outcome recorded (sent, failed, skipped, "
            "deferred, unknown). Re-running never sends a row twice. Table: outbound_deliveries."
        ),
        kinds={"python", "sql", "whatsapp"},
        pool=SEND_POOL,
        check_specs=[failure_rate_spec(deliveries_key, thresholds)],
        metadata={
            **table_metadata(deliveries),
            "iadvize_campaign_id": campaign.campaign_id,
            "sender (masked)": masked_sample([{"recipient": campaign.sender}])[0]["recipient"],
            "quiet_hours": (
                f"{campaign.quiet_hours.start_hour:02d}:00-{campaign.quiet_hours.end_hour:02d}:00 "
                f"{campaign.quiet_hours.timezone or 'recipient timezone'}"
                if campaign.quiet_hours else "none"
            ),
        },
        **common,
    )
    @rows_kept_out_of_errors
    def deliveries_asset(
        context: dg.AssetExecutionContext,
        config: DeliveriesConfig,
        warehouse: WarehouseResource,
        iadvize: IAdvizeResource,
        clock: ClockResource,
    ) -> dg.MaterializeResult:
        day = context.partition_key
        engine = warehouse.engine
        plan = plan_for(campaign, outbound, day)
        now = clock.now()
        extra_checks = extra_checks_for(campaign)
        with engine.connect() as conn:
            id_is_int = consent_id_is_integer(conn, outbound.consents_table)
        if config.dry_run:
            return _dry_run_result(context, config, engine, plan, now, id_is_int, extra_checks)
        context.log.info(f"{key} {day}: sending through {iadvize.describe()}")
        with engine.begin() as conn:
            expired = ledger.expire_dead_claims(conn, plan, now, dt.timedelta(seconds=config.stale_claim_seconds))
            reconciled = ledger.reconcile(
                conn, plan, context.run_id, now,
                resend_unknown=config.resend_unknown, resend_failed_codes=config.resend_failed_codes,
            )
        refresh_statistics(engine, deliveries)
        if expired:
            context.log.warning(f"{key} {day}: {expired} in-flight rows of a dead run recorded as unknown")
        if reconciled.resent_unknown or reconciled.resent_failed:
            context.log.warning(
                f"{key} {day}: operator resend of {reconciled.resent_unknown} unknown and "
                f"{reconciled.resent_failed} failed rows (recorded in resend_requested_by)"
            )
        rate = campaign.max_send_rate if config.max_send_rate is None else (config.max_send_rate or None)
        settings = SendSettings(
            concurrency=config.concurrency,
            batch_size=config.batch_size,
            max_attempts=config.max_attempts,
            rate_per_second=rate,
            stale_after=dt.timedelta(seconds=config.stale_claim_seconds),
        )
        logins_before = login_count()

        async def send() -> Any:
            async with iadvize.client(max_connections=config.concurrency) as client:
                loop = SendLoop(
                    engine, plan, client, clock.now, context.run_id, settings, context.log,
                    consent_id_is_int=id_is_int, extra_checks=extra_checks,
                )
                with interrupts_stop(loop):
                    return await loop.run()

        summary = asyncio.run(send())
        with engine.connect() as conn:
            counts = ledger.status_counts(conn, plan)
            sample = _ledger_sample(conn, plan)
        rate_check = failure_rate_check(counts, thresholds, deliveries_key)
        metadata = {
            "dagster/row_count": sum(sum(r.values()) for r in counts.values()),
            "status_breakdown": dg.MetadataValue.json({s: sum(r.values()) for s, r in sorted(counts.items())}),
            "reason_breakdown": dg.MetadataValue.json(counts),
            "this_run": dg.MetadataValue.json(
                {
                    "claimed": summary.claimed,
                    "calls": summary.calls,
                    "outcomes": dict(summary.statuses),
                    "decided_before_sending": dict(summary.decided_at_claim),
                    "expired_claims": expired,
                    "operator_resends": reconciled.resent_unknown + reconciled.resent_failed,
                }
            ),
            "send_rate_msg_per_s": round(summary.send_rate, 1),
            "failure_rate": _rate_value(counts),
            "logins": login_count() - logins_before,
            "iadvize": iadvize.describe(),
            "dry_run": False,
            "preview (masked)": dg.MetadataValue.md(_table_md(masked_sample(sample))),
        }
        if summary.stop_all and summary.halted_until is not None:
            raise dg.Failure(
                description=f"{key} {day}: ALL sends paused until {summary.halted_until:%Y-%m-%d %H:%M:%S} UTC: "
                f"{summary.stopped}. They resume by themselves after that (the deferred-retry sensor re-runs "
                "the day); nothing to clear.",
                metadata=metadata,
            )
        if summary.stop_all:
            raise dg.Failure(
                description=f"{key} {day}: ALL sends stopped: {summary.stopped}. A halt without an end "
                "lifts only when an operator clears it: fix the account or credentials, then clear the "
                "halt with `outbound-pipeline halts clear all` (`outbound-pipeline halts list` shows the "
                "halts in force and their end).",
                metadata=metadata,
            )
        if summary.stopped:
            raise dg.Failure(
                description=f"{key} {day}: campaign sends stopped: {summary.stopped}; remaining rows are deferred.",
                metadata=metadata,
            )
        return dg.MaterializeResult(metadata=metadata, check_results=[rate_check])

    def _dry_run_result(
        context: dg.AssetExecutionContext,
        config: DeliveriesConfig,
        engine: sa.Engine,
        plan: CampaignPlan,
        now: dt.datetime,
        id_is_int: bool,
        extra_checks: Sequence[Any],
    ) -> dg.MaterializeResult:
        day = plan.partition_date
        context.log.info(f"{key} {day}: DRY RUN: every check, no call to iAdvize, the ledger unchanged")
        result = dry_run(
            engine, plan, context.run_id, now,
            batch_size=config.batch_size, consent_id_is_int=id_is_int, extra_checks=extra_checks,
            resend_unknown=config.resend_unknown, resend_failed_codes=config.resend_failed_codes,
        )
        with engine.connect() as conn:
            counts = ledger.status_counts(conn, plan)
            sample = [
                dict(r)
                for r in conn.execute(
                    sa.select(dry_runs.c.customer_id, dry_runs.c.recipient, dry_runs.c.outcome, dry_runs.c.reason, dry_runs.c.preview_text)
                    .where(plan.where(dry_runs))
                    .order_by(sa.case((dry_runs.c.outcome == WOULD_SEND, 0), else_=1), dry_runs.c.delivery_key)
                    .limit(PREVIEW_ROWS)
                ).mappings()
            ]
        if result.halted:
            context.log.warning(f"{key} {day}: a real run would stop at once: {result.halted}")
        context.log.info(f"{key} {day}: dry run: {dict(result.outcomes)}")
        return dg.MaterializeResult(
            metadata={
                "dry_run": True,
                "dagster/row_count": result.rows,
                "would_send": result.would_send,
                "outcome_breakdown": dg.MetadataValue.json(dict(sorted(result.outcomes.items()))),
                "reason_breakdown": dg.MetadataValue.json(result.reasons),
                "halted": result.halted or "",
                "note": "DRY RUN: nothing was sent and the ledger is unchanged; see outbound_dry_runs.",
                "preview (masked)": dg.MetadataValue.md(_table_md(masked_sample(sample))),
            },
            # The check reads the ledger, which a dry run leaves as it was.
            check_results=[failure_rate_check(counts, thresholds, deliveries_key)],
        )

    @dg.asset(
        key=report_key,
        deps=[deliveries_key],
        description=(
            f"The day's figures of {key}: audience, eligible, sent, failed, skipped and deferred by "
            "reason, unknown, send rate. Tables: outbound_daily_stats (one row per campaign and day) "
            "and outbound_daily_reasons (one row per campaign, day, status and reason)."
        ),
        kinds={"sql"},
        metadata=table_metadata(daily_stats),
        **common,
    )
    @rows_kept_out_of_errors
    def report_asset(context: dg.AssetExecutionContext, warehouse: WarehouseResource, clock: ClockResource) -> dg.MaterializeResult:
        day = context.partition_key
        with warehouse.engine.begin() as conn:
            lock_report(conn, key, day)
            stats = compute_daily_stats(conn, key, day)
            write_daily_stats(conn, stats, context.run_id, clock.now())
        figures = {k: v for k, v in stats.items() if k not in ("reasons_json", "first_sent_at", "last_sent_at", "campaign_key", "partition_date")}
        context.log.info(f"{key} {day}: {json.dumps(figures, default=str)}")
        reasons = json.loads(stats["reasons_json"])
        totals = status_totals(reasons)
        rate, _ = failure_rate(totals)
        return dg.MaterializeResult(
            metadata={
                "dagster/row_count": 1,
                **{k: v for k, v in figures.items() if isinstance(v, int | float)},
                "send_rate_per_s": stats["send_rate_per_s"] if stats["send_rate_per_s"] is not None else 0.0,
                "failure_rate": round(rate, 4) if rate is not None else 0.0,
                "first_sent_at": str(stats["first_sent_at"] or ""),
                "last_sent_at": str(stats["last_sent_at"] or ""),
                "reasons": dg.MetadataValue.json(reasons),
                "reason_rows": dg.MetadataValue.md(
                    _table_md([
                        {"status": status, "reason": reason, "rows": n}
                        for status, by_reason in sorted(reasons.items())
                        for reason, n in sorted(by_reason.items(), key=lambda item: -item[1])
                    ])
                ),
            }
        )

    return [audience_asset, messages_asset, deliveries_asset, report_asset]
