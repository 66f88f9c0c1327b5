"""Whether one audience row may be sent to: its customer ID, its current consent, its phone number
and, for marketing, the phone's country. The first reason that applies is recorded."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import phonenumbers

from outbound_pipeline.audience.query import CONSENT_STATUS
from outbound_pipeline.config import Campaign, Template
from outbound_pipeline.outcomes import Reason
from outbound_pipeline.warehouse import OPTED_IN, OPTED_OUT
from outbound_pipeline.whatsapp import normalise

# Width of outbound_audience.customer_id (warehouse tables): a longer ID cannot be stored whole.
CUSTOMER_ID_MAX = 200
# WhatsApp does not deliver marketing templates to US numbers; the US territories share +1 and US
# area codes, so they are treated alike (a skipped row costs less than a failed or refused send).
MARKETING_BLOCKED_REGIONS = frozenset({"US", "PR", "VI", "GU", "AS", "MP", "UM"})


def phone_region_for(campaign: Campaign, record: Mapping[str, Any]) -> str:
    """The region national numbers are read in: the row's country when it is a known ISO code,
    else the campaign's phone_region."""
    if campaign.country_column:
        country = record.get(campaign.country_column)
        if isinstance(country, str) and country.strip().upper() in phonenumbers.SUPPORTED_REGIONS:
            return country.strip().upper()
    return campaign.phone_region


def verdict(
    campaign: Campaign, template: Template, record: Mapping[str, Any]
) -> tuple[str | None, str | None, Reason | None]:
    """(recipient, phone region, reason it is not eligible or None).

    The reasons, first match wins: customer_id_missing, customer_id_too_long, opted_out, no_consent,
    the phone's reason (phone_missing, phone_invalid, ...), marketing_not_delivered_to_us.
    """
    customer_id = record.get(campaign.customer_id_column)
    raw_phone = record.get(campaign.phone_column)
    phone = normalise(
        None if raw_phone is None else str(raw_phone), phone_region_for(campaign, record)
    )
    if customer_id is None or not str(customer_id).strip():
        return phone.e164, phone.region, Reason.CUSTOMER_ID_MISSING
    if len(str(customer_id)) > CUSTOMER_ID_MAX:
        # The pipeline's tables (and the ledger's opt-out re-check) cannot hold it whole.
        return phone.e164, phone.region, Reason.CUSTOMER_ID_TOO_LONG
    consent = record.get(CONSENT_STATUS)
    if consent == OPTED_OUT:
        return phone.e164, phone.region, Reason.OPTED_OUT
    if consent != OPTED_IN:
        return phone.e164, phone.region, Reason.NO_CONSENT
    if phone.e164 is None:
        # whatsapp.phones words its reasons in the same vocabulary (phone_missing, phone_invalid...).
        return None, None, Reason(phone.reason)
    if template.category == "MARKETING" and phone.region in MARKETING_BLOCKED_REGIONS:
        return phone.e164, phone.region, Reason.MARKETING_NOT_DELIVERED_TO_US
    return phone.e164, phone.region, None
