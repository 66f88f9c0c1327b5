"""Holdouts and variants: a stable hash of (campaign, customer) decides, the same way every run.

The hash places each customer at a point of [0, 1). Below `holdout_percent` / 100 the customer is
held out (never messaged by the campaign: the control group); above it, the rest of the interval is
cut in the variants' weights. The same customer gets the same answer on every day, rerun and
backfill, on every machine: nothing is drawn at random and nothing is stored to decide it.
"""

from __future__ import annotations

import hashlib
from typing import Any

from outbound_pipeline.config import Campaign

_SCALE = float(1 << 64)


def position(campaign_key: str, customer_id: Any) -> float:
    """The customer's stable point in [0, 1) for this campaign."""
    text = f"{campaign_key}\x1f{customer_id}".encode("utf-8", errors="surrogatepass")
    return int.from_bytes(hashlib.sha256(text).digest()[:8], "big") / _SCALE


def is_held_out(campaign: Campaign, customer_id: Any) -> bool:
    """True when the campaign keeps this customer out (its holdout share)."""
    if not campaign.holdout_percent or customer_id is None:
        return False
    return position(campaign.key, customer_id) < campaign.holdout_percent / 100


def variant_for(campaign: Campaign, customer_id: Any) -> str | None:
    """The variant a contacted customer gets (None when the campaign has no variants)."""
    if not campaign.variants:
        return None
    held = (campaign.holdout_percent or 0) / 100
    point = position(campaign.key, customer_id)
    # The share above the holdout, stretched back to [0, 1): the variants split all of it.
    share = max(0.0, point - held) / (1 - held)
    total = sum(v.weight for v in campaign.variants)
    reached = 0.0
    for variant in campaign.variants:
        reached += variant.weight / total
        if share < reached:
            return variant.name
    return campaign.variants[-1].name
