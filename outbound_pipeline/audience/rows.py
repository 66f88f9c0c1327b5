"""The audience's rows as its stage writes them: a chunk of the query's rows judged (`verdicts`)
and made the columns of `outbound_audience`, column by column, in a worker process for a large
day (audience.extraction streams the query and writes what this makes)."""

from __future__ import annotations

import datetime as dt
import decimal
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from outbound_pipeline.audience.assignment import is_held_out, variant_for
from outbound_pipeline.audience.query import (
    CONSENT_EXTRA_PREFIX,
    CONSENT_STATUS,
    CONSENT_UPDATED_AT,
    OCCURRENCE,
    row_key,
)
from outbound_pipeline.audience.verdicts import CUSTOMER_ID_MAX, verdicts
from outbound_pipeline.config import Campaign, Template
from outbound_pipeline.json_text import to_json, to_sorted_json
from outbound_pipeline.outcomes import Reason

# The columns of outbound_audience a chunk's rows hold, in this order (audience_columns): built
# column by column, packed as a record batch or as rows (StageWrites.pack_columns), never dicts.
# Every column of the table (a test compares them).
ROW_COLUMNS = (
    "campaign_key",
    "partition_date",
    "row_key",
    "row_number",
    "customer_id",
    "phone_raw",
    "recipient",
    "phone_region",
    "consent_status",
    "consent_updated_at",
    "consent_category",
    "consent_record_json",
    "variant",
    "eligible",
    "reason",
    "fields_json",
    "run_id",
)

# Widths of outbound_audience columns (warehouse tables) that hold the brand's values.
CONSENT_STATUS_MAX = 20
CONSENT_AT_MAX = 40


def json_value(value: Any) -> Any:
    """A warehouse value as JSON can hold it: dates in ISO form, decimals and the rest as text;
    NaN and infinities as null (JSON has no such number: such a variable is missing)."""
    kind = type(value)
    if kind is str or kind is int or value is None:  # most values, without the checks below
        return value
    if isinstance(value, float):  # a NumPy float too, as a plain one
        return float(value) if math.isfinite(value) else None
    if isinstance(value, str | int):  # bool is an int
        return value
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return str(value)


def audience_columns(
    campaign: Campaign,
    template: Template,
    partition_date: str,
    run_id: str,
    extras: Sequence[str],
    column: Mapping[str, Sequence[Any]],
    size: int,
    start: int,
) -> tuple[list[Sequence[Any]], Counter[str]]:
    """The rows of outbound_audience for `size` rows of the query (numbered from `start`),
    column by column in the order of ROW_COLUMNS, from the query's columns by name, and the
    count of each reason ("eligible": the rows with none). No mapping, list or tuple is made for
    each row: a third less of the workers' CPU than row by row. `extras`: the configuration's
    consent_columns."""
    nothing = [None] * size
    ids = column.get(campaign.customer_id_column, nothing)
    phones = column.get(campaign.phone_column, nothing)
    consents = column.get(CONSENT_STATUS, nothing)
    countries = column.get(campaign.country_column, nothing) if campaign.country_column else nothing
    variables = campaign.variable_columns()
    found = verdicts(campaign, template, ids, phones, countries, consents)
    keys, recipients, regions, variants, codes, fields = [], [], [], [], [], []
    for customer_id, phone_raw, occurrence, (recipient, region, reason), *values in zip(
        ids,
        phones,
        column.get(OCCURRENCE, nothing),
        found,
        *(column.get(c, nothing) for c in variables),
        strict=True,
    ):
        reason = _after_consent(campaign, customer_id, reason)
        code = None if reason is None else reason.value
        keys.append(row_key(customer_id, phone_raw, int(occurrence or 1)))
        recipients.append(recipient)
        regions.append(region)
        codes.append(code)
        variants.append(variant_for(campaign, customer_id) if code is None else None)
        fields.append(to_json({c: json_value(v) for c, v in zip(variables, values, strict=True)}))
    rows = {
        "campaign_key": [campaign.key] * size,
        "partition_date": [partition_date] * size,
        "row_key": keys,
        "row_number": list(range(start, start + size)),
        # Cut to the column widths: only a row already skipped (customer_id_too_long) or a
        # consent status that is not 'opted_in' anyway can be longer.
        "customer_id": [None if c is None else str(c)[:CUSTOMER_ID_MAX] for c in ids],
        "phone_raw": [None if p is None else str(p) for p in phones],
        "recipient": recipients,
        "phone_region": regions,
        "consent_status": [str(s or "none")[:CONSENT_STATUS_MAX] for s in consents],
        "consent_updated_at": [
            None if at is None else str(json_value(at))[:CONSENT_AT_MAX]
            for at in column.get(CONSENT_UPDATED_AT, nothing)
        ],
        "consent_category": [campaign.consent_category] * size,
        "consent_record_json": _consent_records(column, consents, extras, nothing),
        "variant": variants,
        "eligible": [code is None for code in codes],
        "reason": codes,
        "fields_json": fields,
        "run_id": [run_id] * size,
    }
    return [rows[name] for name in ROW_COLUMNS], Counter(code or "eligible" for code in codes)


def _after_consent(campaign: Campaign, customer_id: Any, reason: Reason | None) -> Reason | None:
    """A row that passed every check may still be kept out: its customer in the campaign's
    holdout (the suppression list is applied after, in the parent process: apply_suppressions)."""
    if reason is None and is_held_out(campaign, customer_id):
        return Reason.HOLDOUT
    return reason


def _consent_records(
    column: Mapping[str, Sequence[Any]],
    consents: Sequence[Any],
    extras: Sequence[str],
    nothing: list[None],
) -> Sequence[str | None]:
    """Each row's consent record: its identifying columns (consent_columns), as JSON; None without
    any, or without a consent row."""
    if not extras:
        return nothing
    extra_columns = [column.get(CONSENT_EXTRA_PREFIX + c, nothing) for c in extras]
    return [
        None
        if consent is None
        else to_sorted_json({c: json_value(v) for c, v in zip(extras, values, strict=True)})
        for consent, *values in zip(consents, *extra_columns, strict=True)
    ]
