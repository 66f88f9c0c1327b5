"""`<campaign>/audience`: every row of the campaign's audience query for the day, with its verdict.

The query runs against the brand's warehouse (`outbound_pipeline.audience.extract`), joined to the
current consent, phones normalised; each row is written to outbound_audience, eligible or with the
reason it is not. A day whose every row already has its final outcome keeps the audience its sends
were made from. Blocking checks (consent, phones, one row per recipient) run before anything else.
"""

# No `from __future__ import annotations`: Dagster reads the config and resource annotations of
# the decorated function as classes.

from typing import Any

import dagster as dg
from pydantic import Field

from outbound_pipeline.audience import extract
from outbound_pipeline.audience import stored_summary as stored_audience_summary
from outbound_pipeline.config import Campaign, OutboundConfig
from outbound_pipeline.defs.campaigns import checks
from outbound_pipeline.defs.campaigns.brand_tables import source_key, source_tables
from outbound_pipeline.defs.campaigns.keys import AUDIENCE, asset_key, campaign_asset_options
from outbound_pipeline.defs.campaigns.metadata import breakdown, masked_preview, settled_rows
from outbound_pipeline.ledger import StateStoreResource, suppressed_phones
from outbound_pipeline.warehouse import (
    WarehouseResource,
    audience,
    rows_kept_out_of_errors,
    table_metadata,
)

PREVIEW_COLUMNS = (
    "row_number",
    "customer_id",
    "phone_raw",
    "recipient",
    "consent_status",
    "variant",
    "eligible",
    "reason",
)
PROGRESS_EVERY_ROWS = 50_000


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


def audience_asset_spec(campaign: Campaign, outbound: OutboundConfig) -> dict[str, Any]:
    """The audience asset's declaration: key, lineage from the brand tables, checks, metadata."""
    key = asset_key(campaign.key, AUDIENCE)
    return {
        "key": key,
        "description": (
            f"Every row of the {campaign.key} audience query for the day, joined to the current "
            f"'{campaign.consent_category}' consent, phones normalised to E.164, each with a verdict "
            "(eligible or the reason not). Table: outbound_audience."
        ),
        "kinds": {"sql", "python"},
        "check_specs": checks.blocking_check_specs(key, checks.AUDIENCE_CHECKS),
        "deps": [source_key(table) for table in source_tables(campaign, outbound)],
        "metadata": {
            **table_metadata(audience),
            "audience_query": dg.MetadataValue.md(f"```sql\n{campaign.audience_sql.strip()}\n```"),
            "consent_category": campaign.consent_category,
        },
        **campaign_asset_options(campaign),
    }


def build_audience_asset(campaign: Campaign, outbound: OutboundConfig) -> dg.AssetsDefinition:
    key = campaign.key

    @dg.asset(**audience_asset_spec(campaign, outbound))
    @rows_kept_out_of_errors
    def audience_asset(
        context: dg.AssetExecutionContext,
        config: AudienceConfig,
        warehouse: WarehouseResource,
        state: StateStoreResource,
    ) -> dg.MaterializeResult:
        day, engine = context.partition_key, warehouse.engine
        settled = 0 if config.refresh_settled_day else settled_rows(state, warehouse, key, day)
        with checks.day_audience_checks(engine, key, day) as day_checks:
            if settled:
                # A backfill over a finished day: re-extracting would cost minutes at scale and
                # replace the snapshot the sends were made from, for no send at all.
                context.log.info(
                    f"{key} {day}: every row already has its final outcome ({settled} ledger rows); "
                    "keeping the audience the sends were made from (refresh_settled_day "
                    "re-extracts it)"
                )
                with warehouse.reading() as conn:
                    summary = stored_audience_summary(conn, key, day)
                summary.query = campaign.audience_sql.strip()
            else:

                def progress(n: int) -> None:
                    if n % PROGRESS_EVERY_ROWS == 0:
                        context.log.info(f"{key} {day}: {n} audience rows read")

                summary = extract(
                    engine,
                    campaign,
                    outbound,
                    day,
                    context.run_id,
                    progress=progress,
                    suppressed=suppressed_phones(state.engine),
                    while_marking=day_checks.while_marking,
                )
            # Read while the check across rows runs, after an extraction (each row's own checks
            # ran while the duplicates were marked).
            with warehouse.reading() as conn:
                of_day = (audience.c.campaign_key == key) & (audience.c.partition_date == day)
                preview = masked_preview(
                    conn, audience, of_day, PREVIEW_COLUMNS, [audience.c.row_number]
                )
            check_results = day_checks.results()
        context.log.info(
            f"{key} {day}: {summary.rows} rows, {summary.eligible} eligible; "
            f"not eligible: {dict(summary.reasons)}"
        )
        metadata = {
            "dagster/row_count": summary.rows,
            "settled_day_kept": bool(settled),
            "eligible": summary.eligible,
            "not_eligible_by_reason": breakdown(summary.reasons),
            "preview (masked)": preview,
            "audience_query": dg.MetadataValue.md(f"```sql\n{summary.query}\n```"),
            "warehouse": warehouse.describe(),
        }
        return dg.MaterializeResult(metadata=metadata, check_results=check_results)

    return audience_asset
