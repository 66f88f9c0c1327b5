"""`<campaign>/deliveries`: the day's send ledger, one terminal outcome per recipient.

The asset is the Dagster face of `outbound_pipeline.sending.send_partition` (plan, claim, re-check
opt-outs and limits, call iAdvize, record in the state store's ledger, publish it to the warehouse's
`outbound_deliveries`) and of its dry run: it turns their result into metadata, the failure-rate
check and, when sends were stopped, a failed run that says what to do.
"""

# No `from __future__ import annotations`: Dagster reads the config and resource annotations of
# the decorated function as classes.

from typing import Any

import dagster as dg
import sqlalchemy as sa
from pydantic import Field

from outbound_pipeline import ledger
from outbound_pipeline.clock import ClockResource
from outbound_pipeline.config import Campaign, OutboundConfig
from outbound_pipeline.defs.campaigns.keys import (
    DELIVERIES,
    MESSAGES,
    SEND_POOL,
    asset_key,
    campaign_asset_options,
)
from outbound_pipeline.defs.campaigns.metadata import masked_preview, rounded_failure_rate
from outbound_pipeline.iadvize import IAdvizeResource
from outbound_pipeline.ledger import WOULD_SEND, StateStoreResource, send_ledger
from outbound_pipeline.reporting import FailureRateThresholds, failure_rate_check, failure_rate_spec
from outbound_pipeline.sending import (
    PUBLISH_SECONDS,
    CampaignDay,
    DeliveryOptions,
    PartitionDryRun,
    PartitionSend,
    campaign_day,
    dry_run_partition,
    send_partition,
)
from outbound_pipeline.warehouse import (
    WarehouseResource,
    deliveries,
    dry_runs,
    rows_kept_out_of_errors,
    table_metadata,
)
from outbound_pipeline.whatsapp import mask

LEDGER_PREVIEW = (
    "customer_id",
    "recipient",
    "status",
    "reason",
    "message_id",
    "attempts",
    "sent_at",
    "attribution_expires_at",
)
DRY_RUN_PREVIEW = ("customer_id", "recipient", "outcome", "reason", "preview_text")


class DeliveriesConfig(dg.Config):
    """Run configuration of the send step (Launchpad: ops.<campaign>__deliveries.config)."""

    resend_unknown: bool = Field(
        default=False,
        description="Resend this partition's `unknown` rows (they may have been delivered).",
    )
    resend_failed_codes: list[str] = Field(
        default_factory=list, description="Resend this partition's failures with these error codes."
    )
    concurrency: int = Field(default=32, ge=1, le=512, description="Calls in flight at once.")
    batch_size: int = Field(
        default=100, ge=1, le=5000, description="Rows claimed per ledger transaction."
    )
    max_attempts: int = Field(
        default=4, ge=1, le=10, description="Calls per row per run for retryable errors."
    )
    stale_claim_seconds: float = Field(
        default=ledger.DEAD_SENDER_SECONDS,
        gt=0,
        description="A sender silent this long is dead: its in-flight rows become unknown.",
    )
    max_send_rate: float | None = Field(
        default=None,
        description="Override the campaign's messages/s; 0 lifts pacing (benchmarks only).",
    )
    publish_seconds: float = Field(
        default=PUBLISH_SECONDS,
        gt=0,
        description=(
            "A long send publishes the day's ledger to outbound_deliveries this often (seconds), "
            "and once at its end."
        ),
    )
    dry_run: bool = Field(
        default=False,
        description=(
            "Go through every check and record what would be sent in outbound_dry_runs, without any "
            "call to iAdvize and without changing the ledger: a later real run sends the same rows."
        ),
    )


def deliveries_asset_spec(campaign: Campaign, thresholds: FailureRateThresholds) -> dict[str, Any]:
    """The deliveries asset's declaration: key, its messages, the send pool, the rate check."""
    key = asset_key(campaign.key, DELIVERIES)
    quiet = campaign.quiet_hours
    return {
        "key": key,
        "deps": [asset_key(campaign.key, MESSAGES)],
        "description": (
            f"The send ledger of {campaign.key} for the day: each message claimed, re-checked against opt-outs "
            "and limits, sent through iAdvize, and its outcome recorded (sent, failed, skipped, "
            "deferred, unknown) in the state store's ledger, published to the warehouse as it goes. "
            "Re-running never sends a row twice. Table: outbound_deliveries."
        ),
        "kinds": {"python", "sql", "whatsapp"},
        "pool": SEND_POOL,
        "check_specs": [failure_rate_spec(key, thresholds)],
        "metadata": {
            **table_metadata(deliveries),
            "iadvize_campaign_id": campaign.campaign_id,
            "sender (masked)": mask(campaign.sender),
            "quiet_hours": (
                f"{quiet.start_hour:02d}:00-{quiet.end_hour:02d}:00 "
                f"{quiet.timezone or 'recipient timezone'}"
                if quiet
                else "none"
            ),
        },
        **campaign_asset_options(campaign),
    }


def ledger_preview(conn: sa.Connection, day: CampaignDay) -> dg.MetadataValue:
    """The day's most recently changed ledger rows (the state store's)."""
    order = [send_ledger.c.updated_at.desc(), send_ledger.c.delivery_key]
    return masked_preview(conn, send_ledger, day.plan.where(send_ledger), LEDGER_PREVIEW, order)


def dry_run_preview(conn: sa.Connection, day: CampaignDay) -> dg.MetadataValue:
    """The day's dry-run rows, those that would be sent first."""
    would_send_first = sa.case((dry_runs.c.outcome == WOULD_SEND, 0), else_=1)
    order = [would_send_first, dry_runs.c.delivery_key]
    return masked_preview(conn, dry_runs, day.plan.where(dry_runs), DRY_RUN_PREVIEW, order)


def publication_metadata(sent: PartitionSend) -> dict[str, Any]:
    """What reached the warehouse's outbound_deliveries at the end of the step."""
    published = sent.publication
    metadata: dict[str, Any] = {
        "published_rows": published.rows if published else 0,
        "published_at": published.at.isoformat() if published else "",
    }
    if sent.publication_error:
        metadata["publication_error"] = sent.publication_error
    return metadata


def send_metadata(
    sent: PartitionSend, iadvize: IAdvizeResource, preview: dg.MetadataValue
) -> dict[str, Any]:
    summary, counts = sent.summary, sent.counts
    return {
        "dagster/row_count": sum(sum(r.values()) for r in counts.values()),
        "status_breakdown": dg.MetadataValue.json(
            {s: sum(r.values()) for s, r in sorted(counts.items())}
        ),
        "reason_breakdown": dg.MetadataValue.json(counts),
        "this_run": dg.MetadataValue.json(
            {
                "claimed": summary.claimed,
                "calls": summary.calls,
                "outcomes": dict(summary.statuses),
                "decided_before_sending": dict(summary.decided_at_claim),
                "expired_claims": sent.expired.unknown,
                "requeued_claims": sent.expired.requeued,
                "operator_resends": sent.resent_unknown + sent.resent_failed,
            }
        ),
        "send_rate_msg_per_s": round(summary.send_rate, 1),
        "failure_rate": rounded_failure_rate(counts),
        "logins": sent.logins,
        "iadvize": iadvize.describe(),
        "dry_run": False,
        **publication_metadata(sent),
        "preview (masked)": preview,
    }


def dry_run_metadata(result: PartitionDryRun, preview: dg.MetadataValue) -> dict[str, Any]:
    return {
        "dry_run": True,
        "dagster/row_count": result.rows,
        "would_send": result.would_send,
        "outcome_breakdown": dg.MetadataValue.json(dict(sorted(result.outcomes.items()))),
        "reason_breakdown": dg.MetadataValue.json(result.reasons),
        "halted": result.halted or "",
        "note": "DRY RUN: nothing was sent and the ledger is unchanged; see outbound_dry_runs.",
        "preview (masked)": preview,
    }


def build_deliveries_asset(
    campaign: Campaign, outbound: OutboundConfig, thresholds: FailureRateThresholds
) -> dg.AssetsDefinition:
    key = asset_key(campaign.key, DELIVERIES)

    @dg.asset(**deliveries_asset_spec(campaign, thresholds))
    @rows_kept_out_of_errors
    def deliveries_asset(
        context: dg.AssetExecutionContext,
        config: DeliveriesConfig,
        warehouse: WarehouseResource,
        state: StateStoreResource,
        iadvize: IAdvizeResource,
        clock: ClockResource,
    ) -> dg.MaterializeResult:
        options = DeliveryOptions(**config.model_dump())
        stores = (state.engine, warehouse.engine)
        day = campaign_day(
            warehouse.engine,
            campaign,
            outbound,
            context.partition_key,
            warehouse.consent_settings(),
        )
        if options.dry_run:
            result = dry_run_partition(
                *stores, day, context.run_id, clock.now(), options, context.log
            )
            with warehouse.reading() as conn:
                metadata = dry_run_metadata(result, dry_run_preview(conn, day))
            # The check reads the ledger, which a dry run leaves as it was.
            rate_check = failure_rate_check(result.counts, thresholds, key)
            return dg.MaterializeResult(metadata=metadata, check_results=[rate_check])
        sent = send_partition(
            *stores, day, iadvize, clock.now, context.run_id, options, context.log
        )
        with state.reading() as conn:
            metadata = send_metadata(sent, iadvize, ledger_preview(conn, day))
        stopped = sent.stop_description(day.label)
        if stopped:
            raise dg.Failure(description=stopped, metadata=metadata)
        rate_check = failure_rate_check(sent.counts, thresholds, key)
        return dg.MaterializeResult(metadata=metadata, check_results=[rate_check])

    return deliveries_asset
