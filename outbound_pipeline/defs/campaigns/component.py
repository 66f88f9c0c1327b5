"""The campaign component: every campaign of one configuration file, as Dagster definitions.

Per campaign (group `<campaign>`): the five assets, the report's freshness check, the daily job and
schedule, the conversations refresh job and schedule, the dry-run job, the launch checklist
(`<campaign>_preflight`) and the retry of deferred rows. Shared: the brand's tables as external
assets (group `warehouse`), the sensor that evaluates the freshness checks, and the alert sensors
(run failures, failure rate) that post to `OUTBOUND_ALERT_WEBHOOK_URL`.
"""

from __future__ import annotations

import dagster as dg
from pydantic import Field

from outbound_pipeline.config import Campaign, OutboundConfig, load_config
from outbound_pipeline.defs.campaigns.assets import REPORT, asset_key, build_campaign_assets
from outbound_pipeline.defs.campaigns.brand_tables import source_table_specs
from outbound_pipeline.defs.campaigns.jobs import (
    AssetJob,
    build_campaign_job,
    build_campaign_schedule,
    build_conversations_job,
    build_conversations_schedule,
    build_dry_run_job,
    build_retry_job,
)
from outbound_pipeline.defs.campaigns.preflight import build_preflight_job
from outbound_pipeline.defs.campaigns.report_asset import (
    build_report_freshness_checks,
    build_report_freshness_sensor,
)
from outbound_pipeline.defs.campaigns.sensors import (
    build_alert_sensors,
    build_deferred_retry_sensor,
)
from outbound_pipeline.reporting import FailureRateThresholds, alerts_from_env
from outbound_pipeline.settings import alert_webhook_is_set, config_path, state_for


def one_campaign(
    campaign: Campaign, config: OutboundConfig, thresholds: FailureRateThresholds
) -> dg.Definitions:
    """A campaign's assets and report freshness check, its jobs (daily, conversations, dry run,
    retry, preflight), schedules and retry sensor."""
    daily, retry = build_campaign_job(campaign), build_retry_job(campaign)
    refresh = build_conversations_job(campaign)
    jobs: list[AssetJob | dg.JobDefinition] = [
        daily,
        refresh,
        build_dry_run_job(campaign),
        retry,
        build_preflight_job(campaign, config),
    ]
    assets = build_campaign_assets(campaign, config, thresholds)
    report = next(a for a in assets if asset_key(campaign.key, REPORT) in a.keys)
    return dg.Definitions(
        assets=assets,
        asset_checks=build_report_freshness_checks(campaign, report),
        jobs=jobs,
        schedules=[
            build_campaign_schedule(campaign, daily),
            build_conversations_schedule(campaign, refresh),
        ],
        sensors=[build_deferred_retry_sensor(campaign, retry)],
    )


def campaign_definitions(
    config: OutboundConfig, thresholds: FailureRateThresholds, alerts_running: bool
) -> dg.Definitions:
    """Every campaign's assets, jobs, schedules and sensors, and the brand tables they read."""
    per_campaign = [one_campaign(campaign, config, thresholds) for campaign in config.campaigns]
    # The alerts name the campaign of a failed run from its job.
    job_campaigns = {
        job.name: campaign.key
        for campaign, defs in zip(config.campaigns, per_campaign, strict=True)
        for job in defs.jobs or ()
    }
    keys = [campaign.key for campaign in config.campaigns]
    freshness = [check for defs in per_campaign for check in defs.asset_checks or ()]
    shared = dg.Definitions(
        assets=source_table_specs(config),
        sensors=[
            *build_alert_sensors(keys, job_campaigns, running=alerts_running),
            build_report_freshness_sensor(freshness),
        ],
    )
    return dg.Definitions.merge(shared, *per_campaign)


def build_definitions(
    config: OutboundConfig,
    resources: dict[str, dg.ConfigurableResource],
    thresholds: FailureRateThresholds | None = None,
) -> dg.Definitions:
    """The whole code location for one configuration and a given set of resources (tests, tools).

    Without a `state` resource the state store is the warehouse's database (SQLite or PostgreSQL;
    any other warehouse is refused with the error that names OUTBOUND_STATE_URL)."""
    resources = dict(resources)
    resources.setdefault("alerts", alerts_from_env())
    if "state" not in resources:
        url = getattr(resources["warehouse"], "url", None)
        if isinstance(url, dg.EnvVar):  # the environment's warehouse: its variable, not its value
            resources["state"] = state_for(url.get_value(), url.env_var_name)
        else:
            resources["state"] = state_for(url)
    running = bool(getattr(resources["alerts"], "webhook_url", None))
    campaigns = campaign_definitions(
        config, thresholds or FailureRateThresholds.from_env(), running
    )
    return dg.Definitions.merge(campaigns, dg.Definitions(resources=resources))


class CampaignsComponent(dg.Component, dg.Model, dg.Resolvable):
    """Every campaign of a campaigns file (`templates:` and `campaigns:`), as Dagster definitions.

    The file is `config_path` when set, else `$OUTBOUND_CONFIG`, else the bundled demo
    (`outbound_pipeline/demo/campaigns.yaml`). A mistake in it fails loading with a message naming
    the file, the campaign or template, the field and what is expected.
    """

    config_path: str | None = Field(
        default=None,
        description="The campaigns YAML file; default: $OUTBOUND_CONFIG, else the bundled demo.",
    )

    def build_defs(self, context: dg.ComponentLoadContext) -> dg.Definitions:
        config = load_config(self.config_path or config_path())
        return campaign_definitions(
            config, FailureRateThresholds.from_env(), alert_webhook_is_set()
        )
