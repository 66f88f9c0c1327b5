"""Holdouts and variants in the report: per campaign and day, the customers of each group and how
many of them converted, by the campaign's own conversion query.

Groups: `contacted` (customers sent a message), `holdout` (kept out on purpose: skipped, reason
holdout) and `variant:<name>` (customers sent that variant). Held-out customers have no iAdvize
conversation, so conversion for every group comes from `conversion_sql`, run on the warehouse with
`:partition_date` and `:window_end` (the day plus the attribution window, rounded up to whole days).
Without it the groups are counted and their conversion is unknown (null).
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from outbound_pipeline.config import Campaign
from outbound_pipeline.outcomes import Reason, Status, code_of
from outbound_pipeline.warehouse import (
    daily_groups,
    database_message,
    deliveries,
    replace_partition,
)

CONTACTED = "contacted"
HOLDOUT = "holdout"
VARIANT_PREFIX = "variant:"


class ConversionQueryError(RuntimeError):
    """The campaign's conversion query failed or returns no customer_id column."""


@dataclass(frozen=True)
class GroupFigures:
    group: str
    customers: int
    converted: int | None

    @property
    def conversion_rate(self) -> float | None:
        if self.converted is None or not self.customers:
            return None
        return self.converted / self.customers


def window_end(campaign: Campaign, partition_date: str) -> str:
    """The last day a conversion counts for: the day + the attribution window in whole days."""
    days = math.ceil(campaign.attribution_window_hours / 24)
    return (dt.date.fromisoformat(partition_date) + dt.timedelta(days=days)).isoformat()


def converted_customers(conn: sa.Connection, campaign: Campaign, partition_date: str) -> set[str]:
    """The customer IDs (as text) the campaign's conversion query returns for the day."""
    assert campaign.conversion_sql is not None
    sql = campaign.conversion_sql.strip().rstrip(";")
    params = {
        name: value
        for name, value in (
            ("partition_date", partition_date),
            ("window_end", window_end(campaign, partition_date)),
        )
        if f":{name}" in sql
    }
    try:
        result = conn.execute(sa.text(sql), params)
    except sa.exc.SQLAlchemyError as exc:
        raise ConversionQueryError(
            f"campaign {campaign.key}: conversion_sql failed for {partition_date}: "
            f"{database_message(exc)}"
        ) from None
    returned = list(result.keys())
    if "customer_id" not in returned:
        result.close()
        raise ConversionQueryError(
            f"campaign {campaign.key}: conversion_sql must return a customer_id column "
            f"(it returns {', '.join(returned)})"
        )
    return {str(row.customer_id) for row in result if row.customer_id is not None}


def _groups_of_day(conn: sa.Connection, campaign_key: str, day: str) -> dict[str, set[str]]:
    d = deliveries.c
    groups: dict[str, set[str]] = {CONTACTED: set(), HOLDOUT: set()}
    rows = conn.execute(
        sa.select(d.customer_id, d.status, d.reason, d.variant).where(
            d.campaign_key == campaign_key,
            d.partition_date == day,
            d.customer_id.is_not(None),
            d.status.in_((Status.SENT, Status.SKIPPED)),
        )
    )
    for customer_id, status, reason, variant in rows:
        if status == Status.SENT:
            groups[CONTACTED].add(customer_id)
            if variant:
                groups.setdefault(VARIANT_PREFIX + variant, set()).add(customer_id)
        elif code_of(reason) == Reason.HOLDOUT:
            groups[HOLDOUT].add(customer_id)
    return groups


def experiment_figures(
    conn: sa.Connection, campaign: Campaign, partition_date: str
) -> list[GroupFigures]:
    """The day's groups from the published ledger (outbound_deliveries) and their conversion; none
    for a campaign with no holdout, no variants and no conversion query."""
    if not (campaign.holdout_percent or campaign.variants or campaign.conversion_sql):
        return []
    groups = _groups_of_day(conn, campaign.key, partition_date)
    for variant in campaign.variants:
        groups.setdefault(VARIANT_PREFIX + variant.name, set())
    if not campaign.holdout_percent:
        groups.pop(HOLDOUT)
    converted = (
        converted_customers(conn, campaign, partition_date) if campaign.conversion_sql else None
    )
    return [
        GroupFigures(name, len(members), None if converted is None else len(members & converted))
        for name, members in groups.items()
    ]


def write_experiment_figures(
    conn: sa.Connection,
    campaign_key: str,
    day: str,
    figures: Iterable[GroupFigures],
    run_id: str,
    now: dt.datetime,
) -> None:
    """The day's rows of outbound_daily_groups, replaced (the caller holds the report's lock)."""
    g = daily_groups.c
    rows = [
        {
            "campaign_key": campaign_key,
            "partition_date": day,
            "group_name": f.group,
            "customers": f.customers,
            "converted": f.converted,
            "conversion_rate": f.conversion_rate,
            "computed_at": now,
            "run_id": run_id,
        }
        for f in figures
    ]
    of_day = sa.and_(g.campaign_key == campaign_key, g.partition_date == day)
    replace_partition(conn, daily_groups, of_day, [rows])


def experiment_metadata(figures: Iterable[GroupFigures]) -> dict[str, Any]:
    """One number per group and figure (the UI plots each across partitions), and the lift."""
    out: dict[str, Any] = {}
    rates: dict[str, float] = {}
    for f in figures:
        name = f.group.replace(":", "_")
        out[f"{name}_customers"] = f.customers
        if f.converted is not None:
            out[f"{name}_converted"] = f.converted
        if f.conversion_rate is not None:
            rates[f.group] = round(f.conversion_rate, 4)
            out[f"{name}_conversion_rate"] = rates[f.group]
    if CONTACTED in rates and HOLDOUT in rates:
        # Percentage points the messages add over the control group.
        out["conversion_lift_points"] = round(100 * (rates[CONTACTED] - rates[HOLDOUT]), 2)
    return out
