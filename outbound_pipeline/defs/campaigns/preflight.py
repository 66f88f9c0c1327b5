"""The launch checklist of a campaign, as an operator job: `<campaign>_preflight`.

Run it from the Launchpad before switching a campaign's schedule on (and after any change to its
template, credentials or query). The checks themselves are `outbound_pipeline.preflight`
(credentials, dates, template, halts, a preview, a test send to the test recipients only, the manual
steps). The job fails when any automatic item fails; its output metadata is the checklist.
"""

# No `from __future__ import annotations`: Dagster reads the config and resource annotations of
# the decorated function as classes.

import dagster as dg
from pydantic import Field

from outbound_pipeline.clock import ClockResource
from outbound_pipeline.config import Campaign, OutboundConfig
from outbound_pipeline.iadvize import IAdvizeResource
from outbound_pipeline.ledger import StateStoreResource
from outbound_pipeline.preflight import FAIL, ChecklistOptions, checklist_markdown, run_checklist
from outbound_pipeline.warehouse import WarehouseResource, rows_kept_out_of_errors


def job_name(campaign: Campaign) -> str:
    return f"{campaign.key}_preflight"


class PreflightConfig(dg.Config):
    """Launchpad: ops.<campaign>__preflight.config."""

    partition_date: str | None = Field(
        default=None,
        description="Day to check (YYYY-MM-DD); default: today in the schedule's timezone.",
    )
    send_test: bool = Field(
        default=True, description="Send the template to the campaign's test_recipients."
    )
    sample_values: bool = Field(
        default=False,
        description="Fill the test message with sample values instead of the first eligible row's.",
    )


def build_preflight_op(campaign: Campaign, outbound: OutboundConfig) -> dg.OpDefinition:
    template = outbound.template_for(campaign)

    @dg.op(
        name=f"{campaign.key}__preflight",
        description=(
            f"Launch checklist of {campaign.key}: credentials, dates, template "
            f"{template.name}/{template.language}, halts, a preview from the first eligible row, and "
            f"a test send to its {len(campaign.test_recipients)} test recipient(s) only."
        ),
        tags={"kind": "preflight"},
    )
    @rows_kept_out_of_errors
    def preflight_op(
        context: dg.OpExecutionContext,
        config: PreflightConfig,
        warehouse: WarehouseResource,
        state: StateStoreResource,
        iadvize: IAdvizeResource,
        clock: ClockResource,
    ) -> dg.Output[list[dict[str, str]]]:
        options = ChecklistOptions(config.partition_date, config.send_test, config.sample_values)
        stores = (warehouse, state)
        items, preview = run_checklist(
            campaign, outbound, options, stores, iadvize, clock.now(), context.run_id
        )
        rows = [item.row() for item in items]
        for item in items:
            log = context.log.error if item.status == FAIL else context.log.info
            log(f"{campaign.key} preflight {item.name}: {item.status}: {item.detail}")
        metadata = {
            "checklist": dg.MetadataValue.md(checklist_markdown(rows)),
            "items": dg.MetadataValue.json(rows),
            "passed": all(item.status != FAIL for item in items),
            "preview_text": dg.MetadataValue.text(preview.text if preview else ""),
            "iadvize": iadvize.describe(),
        }
        failed = [item.name for item in items if item.status == FAIL]
        if failed:
            raise dg.Failure(
                description=f"{campaign.key} is not ready to launch: {', '.join(failed)} failed",
                metadata=metadata,
            )
        return dg.Output(rows, metadata=metadata)

    return preflight_op


def build_preflight_job(campaign: Campaign, outbound: OutboundConfig) -> dg.JobDefinition:
    preflight_op = build_preflight_op(campaign, outbound)

    @dg.job(
        name=job_name(campaign),
        description=f"Launch checklist of {campaign.key}: run it before switching the schedule on.",
        tags={"outbound/campaign": campaign.key, "outbound/kind": "preflight"},
    )
    def preflight_job() -> None:
        preflight_op()

    return preflight_job
