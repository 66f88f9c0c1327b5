"""`outbound_suppression_list`: the pipeline's suppression list, published to the warehouse for the
brand's CRM, with a schedule that refreshes it (stopped by default, like the campaigns' schedules).

The list itself is in the state store and takes effect at once there (extraction and the claim read
it); this copy is for the brand's other systems. `outbound-pipeline suppressions add` publishes too.
"""

# No `from __future__ import annotations`: Dagster reads the resource annotations of the decorated
# function as classes.

import dagster as dg

from outbound_pipeline.clock import ClockResource
from outbound_pipeline.ledger import StateStoreResource, publish_suppressions
from outbound_pipeline.warehouse import WarehouseResource, suppression_list, table_metadata

GROUP = "unsubscribe"


@dg.asset(
    key="outbound_suppression_list",
    group_name=GROUP,
    kinds={"sql"},
    description=(
        "Phones that asked to receive nothing more from any campaign (the unsubscribe link or an "
        "operator), copied from the state store's suppression list for the brand's CRM. Full phone "
        "numbers: it is the brand's own warehouse. Table: outbound_suppression_list."
    ),
    metadata=table_metadata(suppression_list),
)
def suppression_list_asset(
    context: dg.AssetExecutionContext,
    warehouse: WarehouseResource,
    state: StateStoreResource,
    clock: ClockResource,
) -> dg.MaterializeResult:
    phones = publish_suppressions(state.engine, warehouse.engine, clock.now())
    context.log.info(f"suppression list published: {phones} phones")
    return dg.MaterializeResult(metadata={"dagster/row_count": phones})


publish_job = dg.define_asset_job(
    "publish_suppression_list", selection=[suppression_list_asset.key]
)

publish_schedule = dg.ScheduleDefinition(
    name="publish_suppression_list_hourly",
    job=publish_job,
    cron_schedule="0 * * * *",
    default_status=dg.DefaultScheduleStatus.STOPPED,
)


@dg.definitions
def suppressions() -> dg.Definitions:
    return dg.Definitions(
        assets=[suppression_list_asset], jobs=[publish_job], schedules=[publish_schedule]
    )
