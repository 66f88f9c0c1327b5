"""Whether an audience row may be sent to: its customer ID, its current consent, its phone number
and, for marketing, the phone's country. The first reason that applies is recorded."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from outbound_pipeline.audience.query import CONSENT_STATUS
from outbound_pipeline.config import Campaign, Template
from outbound_pipeline.outcomes import Reason
from outbound_pipeline.warehouse import OPTED_IN, OPTED_OUT
from outbound_pipeline.whatsapp import normalise_all

# Width of outbound_audience.customer_id (warehouse tables): a longer ID cannot be stored whole.
CUSTOMER_ID_MAX = 200
# WhatsApp does not deliver marketing templates to US numbers; the US territories share +1 and US
# area codes, so they are treated alike (a skipped row costs less than a failed or refused send).
MARKETING_BLOCKED_REGIONS = frozenset({"US", "PR", "VI", "GU", "AS", "MP", "UM"})

# (recipient in E.164, the phone's region, the reason the row is not eligible or None).
Verdict = tuple[str | None, str | None, Reason | None]


def verdict(campaign: Campaign, template: Template, record: Mapping[str, Any]) -> Verdict:
    """One row's verdict (`verdicts`), the row a mapping of the audience query's columns."""
    country = record.get(campaign.country_column) if campaign.country_column else None
    (found,) = verdicts(
        campaign,
        template,
        [record.get(campaign.customer_id_column)],
        [record.get(campaign.phone_column)],
        [country],
        [record.get(CONSENT_STATUS)],
    )
    return found


def verdicts(
    campaign: Campaign,
    template: Template,
    customer_ids: Sequence[Any],
    phones: Sequence[Any],
    countries: Sequence[Any],
    consents: Sequence[Any],
) -> list[Verdict]:
    """Each row's (recipient, phone region, reason it is not eligible or None), from the rows'
    columns (a chunk's, as the audience reads them: no mapping made for each row). `countries`:
    the campaign's country_column (Nones without one); a row's national number is read in its
    country when that is a known ISO code, else in the campaign's phone_region.

    The reasons, first match wins: customer_id_missing, customer_id_too_long, opted_out, no_consent,
    the phone's reason (phone_missing, phone_invalid, ...), marketing_not_delivered_to_us.
    """
    marketing = template.category == "MARKETING"
    found: list[Verdict] = []
    for customer_id, consent, phone in zip(
        customer_ids,
        consents,
        normalise_all(phones, countries, campaign.phone_region),
        strict=True,
    ):
        if customer_id is None or not str(customer_id).strip():
            reason: Reason | None = Reason.CUSTOMER_ID_MISSING
        elif len(str(customer_id)) > CUSTOMER_ID_MAX:
            # The pipeline's tables (and the ledger's opt-out re-check) cannot hold it whole.
            reason = Reason.CUSTOMER_ID_TOO_LONG
        elif consent == OPTED_OUT:
            reason = Reason.OPTED_OUT
        elif consent != OPTED_IN:
            reason = Reason.NO_CONSENT
        elif phone.e164 is None:
            # whatsapp.phones words its reasons in the same vocabulary (phone_missing...).
            found.append((None, None, Reason(phone.reason)))
            continue
        elif marketing and phone.region in MARKETING_BLOCKED_REGIONS:
            reason = Reason.MARKETING_NOT_DELIVERED_TO_US
        else:
            reason = None
        found.append((phone.e164, phone.region, reason))
    return found
