"""The code location: every campaign of the configuration, its jobs, schedules, sensors and resources.

Per campaign (group `<campaign>`): the four assets, the daily job and schedule, the dry-run job, the
launch checklist (`<campaign>_preflight`) and the retry of deferred rows. Shared: the brand's tables
as external assets (group `warehouse`), and the alert sensors (run failures, failure rate) that post
to `OUTBOUND_ALERT_WEBHOOK_URL`.
"""

from __future__ import annotations

import os

import dagster as dg

from outbound_pipeline.alerts import FailureRateThresholds, alerts_from_env, build_alert_sensors
from outbound_pipeline.assets import build_campaign_assets, source_table_specs
from outbound_pipeline.config import OutboundConfig, load_config
from outbound_pipeline.preflight import build_preflight_job
from outbound_pipeline.resources import CONFIG_PATH, resources_from_env
from outbound_pipeline.schedules import (
    build_campaign_job,
    build_campaign_schedule,
    build_deferred_retry_sensor,
    build_dry_run_job,
    build_retry_job,
)


def build_definitions(
    config: OutboundConfig,
    resources: dict[str, dg.ConfigurableResource],
    thresholds: FailureRateThresholds | None = None,
) -> dg.Definitions:
    thresholds = thresholds or FailureRateThresholds.from_env()
    resources = dict(resources)
    resources.setdefault("alerts", alerts_from_env())
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
    alerts = resources["alerts"]
    sensors.extend(
        build_alert_sensors(
            [c.key for c in config.campaigns], job_campaigns, running=bool(getattr(alerts, "webhook_url", None))
        )
    )
    return dg.Definitions(assets=assets, jobs=jobs, schedules=schedules, sensors=sensors, resources=resources)


defs = build_definitions(load_config(os.environ.get(CONFIG_PATH) or None), resources_from_env())
