"""A campaign's plan for one day: what the ledger and the send loop need to know of it.

Also the ledger's words for its rows: which a run may send (`claimable`), which reconcile may
rewrite (`mutable`), what a row not sent now is decided to be (`Decision`).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from outbound_pipeline.config import Campaign, OutboundConfig
from outbound_pipeline.ledger.tables import send_ledger
from outbound_pipeline.outcomes import Status
from outbound_pipeline.warehouse import lock_partition

# The delivery key of an audience row that is not sent: "row:" + its row key.
SKIP_PREFIX = "row:"

D = send_ledger.c


def claimable() -> sa.ColumnElement[bool]:
    """Rows a run may (re)send: never final ones."""
    return sa.or_(
        D.status.in_((Status.PENDING, Status.DEFERRED)),
        sa.and_(D.status == Status.FAILED, D.retryable == sa.true()),
    )


def worked(table: sa.Table) -> sa.ColumnElement[bool]:
    """Rows of `table` (the ledger, or its published copy) that a run claimed: sending, sent,
    unknown or failed. A day with any of them was sent from the ledger that holds them."""
    # The values as text: a warehouse's driver may bind only exact types (Snowflake's refuses
    # a str subclass such as Status).
    return table.c.status.not_in(
        [s.value for s in (Status.PENDING, Status.DEFERRED, Status.SKIPPED)]
    )


class LedgerHistoryMissing(RuntimeError):
    """The warehouse holds a published history of the day that the state store's ledger lacks."""

    def __init__(self, campaign_key: str, partition_date: str, published: int) -> None:
        super().__init__(
            f"campaign {campaign_key} {partition_date}: the warehouse's outbound_deliveries shows "
            f"{published} rows of this day claimed or sent, and the state store's ledger has no row "
            "of it: they were sent from another state store (was OUTBOUND_STATE_URL changed, or the "
            "state store replaced?). Nothing was sent or published. Point OUTBOUND_STATE_URL at the "
            "state store that sent them; if it is lost and this one's ledger is still empty, "
            "`outbound-pipeline db upgrade` copies the published rows into it."
        )


def mutable() -> sa.ColumnElement[bool]:
    """Rows reconcile may rewrite: not final, not in flight."""
    return sa.or_(claimable(), D.status == Status.SKIPPED)


@dataclass(frozen=True)
class CampaignPlan:
    """What the ledger needs to know of a campaign and its template for one partition."""

    campaign_key: str
    partition_date: str
    campaign_id: str
    sender: str
    limit_scope: str
    limit_max: int | None
    template_name: str
    language: str
    category: str
    consent_category: str
    consents_table: str
    attribution_window: dt.timedelta
    min_interval: dt.timedelta
    frequency_cap: tuple[int, dt.timedelta] | None = None

    def where(self, table: sa.Table) -> sa.ColumnElement[bool]:
        return sa.and_(
            table.c.campaign_key == self.campaign_key,
            table.c.partition_date == self.partition_date,
        )


Decision = tuple[str, str, dt.datetime | None]  # (status, reason, not_before) of a row not sent now

# A campaign's own claim-time check (quiet hours): the decisions for the rows that may not go now.
ExtraCheck = Callable[
    [sa.Connection, CampaignPlan, Sequence[Any], dt.datetime], dict[str, Decision]
]


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


# The lock of a partition's ledger: reconcile and the expiry of dead claims take it alone
# (`own_partition`), writers of a run's claims share it (`hold_partition`).
PARTITION_LOCK = "outbound"


def own_partition(conn: sa.Connection, plan: CampaignPlan) -> None:
    """Keep the partition's ledger to this transaction alone until it ends: for writes to rows of
    the whole day or of other runs (reconcile, the expiry of dead runs' claims). Taken before any
    row, so a writer never holds a row while waiting for it (see `hold_partition`)."""
    lock_partition(conn, PARTITION_LOCK, plan.campaign_key, plan.partition_date)


def hold_partition(conn: sa.Connection, plan: CampaignPlan) -> None:
    """Share the partition's ledger with other runs' claim writers until this transaction ends, but
    not with a reconcile: a reconcile rewrites rows of the whole day while a run's marks and
    outcomes lock rows of its own claims, each statement in its own order, and on PostgreSQL the
    two deadlocked (a run failed with "deadlock detected"). Taken before any row."""
    lock_partition(conn, PARTITION_LOCK, plan.campaign_key, plan.partition_date, shared=True)
