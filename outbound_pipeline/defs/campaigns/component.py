"""The campaign component: every campaign of one configuration file, as Dagster definitions.

Per campaign (group `<campaign>`): the four assets, the daily job and schedule, the dry-run job, the
launch checklist (`<campaign>_preflight`) and the retry of deferred rows. Shared: the brand's tables
as external assets (group `warehouse`), and the alert sensors (run failures, failure rate) that post
to `OUTBOUND_ALERT_WEBHOOK_URL`.
"""

from __future__ import annotations

import os

import dagster as dg
from pydantic import Field

from outbound_pipeline.config import OutboundConfig, load_config
from outbound_pipeline.defs.campaigns.assets import build_campaign_assets, source_table_specs
from outbound_pipeline.defs.campaigns.jobs import (
    build_campaign_job,
    build_campaign_schedule,
    build_dry_run_job,
    build_retry_job,
)
from outbound_pipeline.defs.campaigns.preflight import build_preflight_job
from outbound_pipeline.defs.campaigns.sensors import (
    build_alert_sensors,
    build_deferred_retry_sensor,
)
from outbound_pipeline.reporting import WEBHOOK_URL, FailureRateThresholds
from outbound_pipeline.settings import CONFIG_PATH


def campaign_definitions(
    config: OutboundConfig, thresholds: FailureRateThresholds, alerts_running: bool
) -> dg.Definitions:
    """Every campaign's assets, jobs, schedules and sensors, and the brand tables they read."""
    assets: list[dg.AssetsDefinition | dg.AssetSpec] = list(source_table_specs(config))
    jobs: list[object] = []
    schedules, sensors = [], []
    job_campaigns: dict[str, str] = {}
    for campaign in config.campaigns:
        assets.extend(build_campaign_assets(campaign, config, thresholds))
        daily, dry, retry = build_campaign_job(campaign), build_dry_run_job(campaign), build_retry_job(campaign)
        preflight = build_preflight_job(campaign, config)
        jobs.extend([daily, dry, retry, preflight])
        for job in (daily, dry, retry, preflight):
            job_campaigns[job.name] = campaign.key
        schedules.append(build_campaign_schedule(campaign, daily))
        sensors.append(build_deferred_retry_sensor(campaign, retry))
    sensors.extend(build_alert_sensors([c.key for c in config.campaigns], job_campaigns, running=alerts_running))
    return dg.Definitions(assets=assets, jobs=jobs, schedules=schedules, sensors=sensors)


def build_definitions(
    config: OutboundConfig,
    resources: dict[str, dg.ConfigurableResource],
    thresholds: FailureRateThresholds | None = None,
) -> dg.Definitions:
    """The whole code location for one configuration and a given set of resources (tests, tools)."""
    from outbound_pipeline.reporting import alerts_from_env

    resources = dict(resources)
    resources.setdefault("alerts", alerts_from_env())
    running = bool(getattr(resources["alerts"], "webhook_url", None))
    campaigns = campaign_definitions(config, thresholds or FailureRateThresholds.from_env(), running)
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
        config = load_config(self.config_path or os.environ.get(CONFIG_PATH) or None)
        return campaign_definitions(config, FailureRateThresholds.from_env(), bool(os.environ.get(WEBHOOK_URL)))
