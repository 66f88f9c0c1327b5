"""`<campaign>/messages`: one rendered WhatsApp payload per eligible recipient of the day.

The template's placeholders are filled from the audience row (`outbound_pipeline.messages.render`)
and checked against WhatsApp's parameter rules; each row is written to outbound_messages, rendered or
with the rule a value broke. A day whose every row already has its final outcome keeps the messages
that were sent. Blocking checks (parameter count and rules, consent) run before anything is sent.
"""

# No `from __future__ import annotations`: Dagster reads the config and resource annotations of
# the decorated function as classes.

from typing import Any

import dagster as dg

from outbound_pipeline.audience import written_by_run
from outbound_pipeline.config import Campaign, OutboundConfig
from outbound_pipeline.defs.campaigns import checks
from outbound_pipeline.defs.campaigns.keys import (
    AUDIENCE,
    MESSAGES,
    asset_key,
    campaign_asset_options,
)
from outbound_pipeline.defs.campaigns.metadata import breakdown, masked_preview, settled_rows
from outbound_pipeline.ledger import StateStoreResource
from outbound_pipeline.messages import campaign_arms, render
from outbound_pipeline.messages import stored_summary as stored_messages_summary
from outbound_pipeline.unsubscribe import UnsubscribeLinksResource
from outbound_pipeline.warehouse import (
    WarehouseResource,
    messages,
    rows_kept_out_of_errors,
    table_metadata,
)

PREVIEW_COLUMNS = ("customer_id", "recipient", "variant", "rendered", "reason")


def messages_asset_spec(campaign: Campaign, outbound: OutboundConfig) -> dict[str, Any]:
    """The messages asset's declaration: key, its audience, checks, the template as metadata."""
    template = outbound.template_for(campaign)
    key = asset_key(campaign.key, MESSAGES)
    return {
        "key": key,
        "deps": [asset_key(campaign.key, AUDIENCE)],
        "description": (
            f"One rendered payload per eligible {campaign.key} recipient: template {template.name}/"
            f"{template.language} ({template.category}) parameters and the preview text, or the "
            "rule a value broke. Table: outbound_messages."
        ),
        "kinds": {"python", "sql"},
        "check_specs": checks.blocking_check_specs(key, checks.MESSAGE_CHECKS),
        "metadata": {
            **table_metadata(messages),
            "template": f"{template.name}/{template.language} ({template.category})",
            "template_body": template.body,
            "template_header": template.header or "",
            **(
                {
                    "variants": ", ".join(
                        f"{v.name} (weight {v.weight:g})" for v in campaign.variants
                    )
                }
                if campaign.variants
                else {}
            ),
        },
        **campaign_asset_options(campaign),
    }


def build_messages_asset(campaign: Campaign, outbound: OutboundConfig) -> dg.AssetsDefinition:
    key = campaign.key
    templates = [template for _, template in campaign_arms(campaign, outbound).values()]

    @dg.asset(**messages_asset_spec(campaign, outbound))
    @rows_kept_out_of_errors
    def messages_asset(
        context: dg.AssetExecutionContext,
        warehouse: WarehouseResource,
        state: StateStoreResource,
        unsubscribe_links: UnsubscribeLinksResource,
    ) -> dg.MaterializeResult:
        day, engine = context.partition_key, warehouse.engine
        settled = settled_rows(state, warehouse, key, day)
        if settled:
            # The audience step of this run re-extracted the day (refresh_settled_day): render it too.
            with warehouse.reading() as conn:
                settled = 0 if written_by_run(conn, key, day, context.run_id) else settled
        if settled:
            context.log.info(
                f"{key} {day}: every row already has its final outcome; keeping the messages sent"
            )
            with warehouse.reading() as conn:
                summary = stored_messages_summary(conn, key, day)
        else:
            links = unsubscribe_links.maker() if campaign.uses_unsubscribe() else None
            summary = render(engine, campaign, outbound, day, context.run_id, links=links)
        check_results = checks.message_checks(engine, campaign, templates, day)
        with warehouse.reading() as conn:
            of_day = (messages.c.campaign_key == key) & (messages.c.partition_date == day)
            preview = masked_preview(conn, messages, of_day, PREVIEW_COLUMNS)
        context.log.info(
            f"{key} {day}: {summary.rendered}/{summary.rows} rendered; "
            f"skipped: {dict(summary.reasons)}"
        )
        metadata = {
            "dagster/row_count": summary.rows,
            "settled_day_kept": bool(settled),
            "rendered": summary.rendered,
            # Cleaning is not stored per row: a kept day cannot tell it.
            **({} if settled else {"values_cleaned": summary.cleaned}),
            "skipped_by_reason": breakdown(summary.reasons),
            "preview_text": dg.MetadataValue.text(summary.sample_preview or ""),
            "preview (masked)": preview,
        }
        return dg.MaterializeResult(metadata=metadata, check_results=check_results)

    return messages_asset
