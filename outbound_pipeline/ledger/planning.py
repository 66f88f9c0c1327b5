"""A campaign's plan for one day: what the ledger and the send loop need to know of it."""

from __future__ import annotations

import datetime as dt
from typing import Any

from outbound_pipeline.config import Campaign, OutboundConfig
from outbound_pipeline.ledger.core import CampaignPlan
from outbound_pipeline.ledger.quiet_hours import quiet_hours_check


def plan_for(campaign: Campaign, config: OutboundConfig, partition_date: str) -> CampaignPlan:
    template = config.template_for(campaign)
    cap = campaign.marketing_frequency_cap
    return CampaignPlan(
        campaign_key=campaign.key,
        partition_date=partition_date,
        campaign_id=campaign.campaign_id,
        sender=campaign.sender,
        limit_scope=campaign.limit_scope,
        limit_max=campaign.messaging_limit.max_recipients,
        template_name=template.name,
        language=template.language,
        category=template.category,
        consent_category=campaign.consent_category,
        consents_table=config.consents_table,
        attribution_window=dt.timedelta(hours=campaign.attribution_window_hours),
        min_interval=dt.timedelta(seconds=campaign.min_interval_seconds),
        frequency_cap=(cap.max_messages, dt.timedelta(hours=cap.window_hours)) if cap else None,
    )


def extra_checks_for(campaign: Campaign) -> tuple[Any, ...]:
    """The claim-time checks a campaign adds to the ledger's own (quiet hours)."""
    return tuple(check for check in (quiet_hours_check(campaign),) if check is not None)
