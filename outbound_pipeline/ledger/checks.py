"""The claim's checks of each row, right before it is sent: a row that may not go now gets a
`Decision` (skipped or deferred, with its reason) instead of a claim.

- `row_checks`: each row on its own: consent now (asked of a `ConsentSource`: the brand's consent
  table in the warehouse), a marketing stop (WhatsApp's 131050 on an earlier send, in the ledger),
  the campaign's own checks (`extra_checks_for`: quiet hours). The send loop runs them again before
  a call that waited.
- `pair_rate_check`, `frequency_cap_check`: a row against the recipient's recent contacts.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from typing import Any

import sqlalchemy as sa

from outbound_pipeline.clock import as_utc
from outbound_pipeline.config import Campaign
from outbound_pipeline.ledger.plan import CampaignPlan, Decision, ExtraCheck
from outbound_pipeline.ledger.quiet_hours import quiet_hours_check
from outbound_pipeline.ledger.tables import send_ledger
from outbound_pipeline.outcomes import CONTACTED, Reason, Status
from outbound_pipeline.unsubscribe import is_suppressed
from outbound_pipeline.warehouse import OPTED_IN, ConsentSource
from outbound_pipeline.whatsapp import MARKETING_STOPPED

D = send_ledger.c
# The template category the marketing rules (stop, frequency cap) apply to.
MARKETING = "MARKETING"


def extra_checks_for(campaign: Campaign) -> tuple[ExtraCheck, ...]:
    """The claim-time checks a campaign adds to the ledger's own (quiet hours)."""
    return tuple(check for check in (quiet_hours_check(campaign),) if check is not None)


def row_checks(
    conn: sa.Connection,
    plan: CampaignPlan,
    rows: Sequence[Any],
    now: dt.datetime,
    *,
    consent: ConsentSource,
    extra_checks: Sequence[ExtraCheck] = (),
) -> dict[str, Decision]:
    """The checks of each row on its own: consent now, the suppression list (unsubscribed), a
    marketing stop (131050), the campaign's own (quiet hours). Claims run them, and the send loop again before a call that
    waited. Rows need delivery_key, customer_id and recipient; those that may go are absent."""
    decisions: dict[str, Decision] = {}
    for key in _consent_withdrawn(consent, rows):
        decisions[key] = (Status.SKIPPED, Reason.CONSENT_WITHDRAWN_BEFORE_SEND, None)
    live = [r for r in rows if r.delivery_key not in decisions]
    # The pipeline's own suppression list, in this same state-store transaction.
    on_list = is_suppressed(conn, [r.recipient for r in live if r.recipient])
    for row in live:
        if row.recipient in on_list:
            decisions[row.delivery_key] = (Status.SKIPPED, Reason.UNSUBSCRIBED, None)
    live = [r for r in rows if r.delivery_key not in decisions]
    for key in _marketing_stopped(conn, plan, live):
        decisions[key] = (Status.SKIPPED, Reason.USER_STOPPED_MARKETING, None)

    for check in extra_checks:
        live = [r for r in rows if r.delivery_key not in decisions]
        for key, decision in check(conn, plan, live, now).items():
            decisions.setdefault(key, decision)
    return decisions


def _consent_withdrawn(consent: ConsentSource, rows: Sequence[Any]) -> Iterable[str]:
    """The rows whose customer is not opted in to the campaign's consent category now."""
    if not rows:
        return []
    states = consent.states(r.customer_id for r in rows)
    return [r.delivery_key for r in rows if states.get(str(r.customer_id)) != OPTED_IN]


def _marketing_stopped(
    conn: sa.Connection, plan: CampaignPlan, rows: Sequence[Any]
) -> Iterable[str]:
    """Marketing rows to a recipient who stopped marketing messages (an earlier send failed with
    WhatsApp's marketing-stop code)."""
    recipients = [r.recipient for r in rows]
    if not recipients or plan.category != MARKETING:
        return []
    suppressed = set(
        conn.execute(
            sa.select(D.recipient).where(
                D.recipient.in_(recipients),
                D.status == Status.FAILED,
                D.error_code == MARKETING_STOPPED,
            )
        ).scalars()
    )
    return [r.delivery_key for r in rows if r.recipient in suppressed]


def pair_rate_check(
    conn: sa.Connection, plan: CampaignPlan, rows: Sequence[Any], now: dt.datetime
) -> dict[str, Decision]:
    """Rows to a recipient contacted less than the campaign's `min_interval` ago, deferred until
    the interval has passed."""
    recipients = [r.recipient for r in rows]
    if not recipients or plan.min_interval.total_seconds() <= 0:
        return {}
    recent = dict(
        conn.execute(
            sa.select(D.recipient, sa.func.max(D.claimed_at))
            .where(
                D.recipient.in_(recipients),
                D.status.in_(CONTACTED),
                D.claimed_at > now - plan.min_interval,
            )
            .group_by(D.recipient)
        ).all()
    )
    decisions: dict[str, Decision] = {}
    for row in rows:
        last = as_utc(recent.get(row.recipient))
        if last is not None:
            decisions[row.delivery_key] = (
                Status.DEFERRED,
                Reason.PAIR_RATE,
                last + plan.min_interval,
            )
    return decisions


def frequency_cap_check(
    conn: sa.Connection, plan: CampaignPlan, rows: Sequence[Any], now: dt.datetime
) -> dict[str, Decision]:
    """Marketing rows to a recipient who had the campaign's cap of marketing messages within its
    window, deferred until the first of them leaves the window."""
    if not rows or not plan.frequency_cap or plan.category != MARKETING:
        return {}
    cap, window = plan.frequency_cap
    counts = {
        rec: (n, as_utc(first))
        for rec, n, first in conn.execute(
            sa.select(D.recipient, sa.func.count(), sa.func.min(D.claimed_at))
            .where(
                D.recipient.in_([r.recipient for r in rows]),
                D.category == MARKETING,
                D.status.in_(CONTACTED),
                D.claimed_at > now - window,
            )
            .group_by(D.recipient)
        ).all()
    }
    decisions: dict[str, Decision] = {}
    for row in rows:
        n, first = counts.get(row.recipient, (0, None))
        if n >= cap:
            decisions[row.delivery_key] = (
                Status.DEFERRED,
                Reason.MARKETING_FREQUENCY_CAP,
                first + window,  # type: ignore[operator]
            )
    return decisions
