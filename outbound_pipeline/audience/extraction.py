"""Audience extraction: the campaign's query, the current consent, phone normalisation, a verdict.

Streams the query from a server-side cursor in chunks and writes `outbound_audience` chunk by chunk,
so memory stays flat whatever the audience size. Every row the query returns is recorded, eligible or
not, with the reason.
"""

from __future__ import annotations

import datetime as dt
import decimal
import hashlib
import json
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import phonenumbers
import sqlalchemy as sa

from outbound_pipeline.config import Campaign, OutboundConfig, Template
from outbound_pipeline.warehouse import (
    OPTED_IN,
    OPTED_OUT,
    audience,
    database_message,
    refresh_statistics,
    upsert_rows,
)
from outbound_pipeline.whatsapp import normalise

CHUNK_ROWS = 5000
DUPLICATE_BATCH = 1000
# Widths of outbound_audience columns (tables.py) that hold the brand's values.
CUSTOMER_ID_MAX = 200
CONSENT_STATUS_MAX = 20
CONSENT_AT_MAX = 40
# WhatsApp does not deliver marketing templates to US numbers; the US territories share +1 and US
# area codes, so they are treated alike (a skipped row costs less than a failed or refused send).
MARKETING_BLOCKED_REGIONS = frozenset({"US", "PR", "VI", "GU", "AS", "MP", "UM"})
CONSENT_STATUS = "outbound_consent_status"
CONSENT_UPDATED_AT = "outbound_consent_updated_at"
OCCURRENCE = "outbound_occurrence"
POSITION = "outbound_position"


class AudienceQueryError(RuntimeError):
    """The audience query failed or lacks columns the campaign needs; nothing was sent."""


@dataclass
class AudienceSummary:
    rows: int = 0
    eligible: int = 0
    reasons: Counter[str] = field(default_factory=Counter)
    query: str = ""


def required_columns(campaign: Campaign) -> list[str]:
    """Columns the query must return. The country column is optional: used when present."""
    return list(dict.fromkeys([campaign.customer_id_column, campaign.phone_column, *campaign.variables.columns()]))


def phone_region_for(campaign: Campaign, record: Mapping[str, Any]) -> str:
    """The region national numbers are read in: the row's country when it is a known ISO code,
    else the campaign's phone_region."""
    if campaign.country_column:
        country = record.get(campaign.country_column)
        if isinstance(country, str) and country.strip().upper() in phonenumbers.SUPPORTED_REGIONS:
            return country.strip().upper()
    return campaign.phone_region


def audience_sql(campaign: Campaign, config: OutboundConfig, dialect: sa.Dialect) -> str:
    """The campaign's query wrapped with the current consent for its category."""
    q = dialect.identifier_preparer.quote
    user_sql = campaign.audience_sql.strip().rstrip(";").strip()
    cid, phone = q(campaign.customer_id_column), q(campaign.phone_column)
    consents = ".".join(q(part) for part in config.consents_table.split("."))
    # The position is numbered straight over the campaign's query, before any join or window can
    # reorder it, and the result is sorted by it: row_number is the query's own order, which decides
    # which of two rows for one phone (or customer) keeps the message, and keeps row keys stable.
    return f"""
SELECT p.*, cc.status AS {CONSENT_STATUS}, cc.updated_at AS {CONSENT_UPDATED_AT},
       ROW_NUMBER() OVER (PARTITION BY p.{cid}, p.{phone} ORDER BY p.{POSITION}) AS {OCCURRENCE}
FROM (SELECT q.*, ROW_NUMBER() OVER () AS {POSITION} FROM ({user_sql}) q) p
LEFT JOIN (
    SELECT customer_id, status, updated_at FROM (
        SELECT customer_id, status, updated_at,
               ROW_NUMBER() OVER (
                   PARTITION BY customer_id
                   ORDER BY updated_at DESC, CASE WHEN status = '{OPTED_OUT}' THEN 0 ELSE 1 END
               ) AS consent_rank
        FROM {consents}
        WHERE category = :outbound_consent_category
    ) latest WHERE consent_rank = 1
) cc ON cc.customer_id = p.{cid}
ORDER BY p.{POSITION}
"""


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, str | int | float | bool):
        return value
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return str(value)


def row_key(customer_id: Any, phone: Any, occurrence: int) -> str:
    text = f"{customer_id}\x1f{phone}\x1f{occurrence}"
    return hashlib.sha256(text.encode("utf-8", errors="surrogatepass")).hexdigest()[:32]


def verdict(
    campaign: Campaign, template: Template, record: Mapping[str, Any]
) -> tuple[str | None, str | None, str | None]:
    """(recipient, phone region, reason it is not eligible or None).

    The reasons, first match wins: customer_id_missing, customer_id_too_long, opted_out, no_consent,
    the phone's reason (phone_missing, phone_invalid, ...), marketing_not_delivered_to_us.
    """
    customer_id = record.get(campaign.customer_id_column)
    raw_phone = record.get(campaign.phone_column)
    phone = normalise(None if raw_phone is None else str(raw_phone), phone_region_for(campaign, record))
    if customer_id is None or not str(customer_id).strip():
        return phone.e164, phone.region, "customer_id_missing"
    if len(str(customer_id)) > CUSTOMER_ID_MAX:
        # The pipeline's tables (and the ledger's opt-out re-check) cannot hold it whole.
        return phone.e164, phone.region, "customer_id_too_long"
    consent = record.get(CONSENT_STATUS)
    if consent == OPTED_OUT:
        return phone.e164, phone.region, "opted_out"
    if consent != OPTED_IN:
        return phone.e164, phone.region, "no_consent"
    if phone.e164 is None:
        return None, None, phone.reason
    if template.category == "MARKETING" and phone.region in MARKETING_BLOCKED_REGIONS:
        return phone.e164, phone.region, "marketing_not_delivered_to_us"
    return phone.e164, phone.region, None


def _audience_rows(
    campaign: Campaign,
    template: Template,
    partition_date: str,
    run_id: str,
    records: list[Mapping[str, Any]],
    start: int,
    summary: AudienceSummary,
) -> Iterator[dict[str, Any]]:
    columns = campaign.variables.columns()
    for offset, record in enumerate(records):
        recipient, region, reason = verdict(campaign, template, record)
        summary.rows += 1
        summary.reasons[reason or "eligible"] += 1
        if reason is None:
            summary.eligible += 1
        customer_id = record.get(campaign.customer_id_column)
        phone_raw = record.get(campaign.phone_column)
        consent_at = record.get(CONSENT_UPDATED_AT)
        yield {
            "campaign_key": campaign.key,
            "partition_date": partition_date,
            "row_key": row_key(customer_id, phone_raw, int(record.get(OCCURRENCE) or 1)),
            "row_number": start + offset,
            # Cut to the column widths: only a row already skipped (customer_id_too_long) or a
            # consent status that is not 'opted_in' anyway can be longer.
            "customer_id": None if customer_id is None else str(customer_id)[:CUSTOMER_ID_MAX],
            "phone_raw": None if phone_raw is None else str(phone_raw),
            "recipient": recipient,
            "phone_region": region,
            "consent_status": str(record.get(CONSENT_STATUS) or "none")[:CONSENT_STATUS_MAX],
            "consent_updated_at": None if consent_at is None else str(_jsonable(consent_at))[:CONSENT_AT_MAX],
            "eligible": reason is None,
            "reason": reason,
            "fields_json": json.dumps({c: _jsonable(record.get(c)) for c in columns}, ensure_ascii=False),
            "run_id": run_id,
        }


def extract(
    engine: sa.Engine,
    campaign: Campaign,
    config: OutboundConfig,
    partition_date: str,
    run_id: str,
    progress: Callable[[int], None] | None = None,
    chunk_rows: int = CHUNK_ROWS,
) -> AudienceSummary:
    """Run the audience query for a day and write every row's verdict (delete-then-insert)."""
    template = config.template_for(campaign)
    sql = audience_sql(campaign, config, engine.dialect)
    summary = AudienceSummary(query=campaign.audience_sql.strip())
    params = {"outbound_consent_category": campaign.consent_category}
    if ":partition_date" in campaign.audience_sql:
        params["partition_date"] = partition_date
    with engine.begin() as conn:
        conn.execute(sa.delete(audience).where(audience.c.campaign_key == campaign.key, audience.c.partition_date == partition_date))
    with engine.connect() as read:
        read = read.execution_options(read_only=True, stream_results=True, yield_per=chunk_rows)
        try:
            result = read.execute(sa.text(sql), params)
        except sa.exc.SQLAlchemyError as exc:
            raise AudienceQueryError(
                f"campaign {campaign.key}: the audience query failed for {partition_date}: "
                f"{database_message(exc)}"
            ) from None
        returned = list(result.keys())
        missing = [c for c in required_columns(campaign) if c not in returned]
        if missing:
            result.close()
            raise AudienceQueryError(
                f"campaign {campaign.key}: the audience query does not return the column(s) "
                f"{', '.join(missing)} (it returns {', '.join(k for k in returned if not k.startswith('outbound_'))}); "
                "add them to audience_sql or fix the variables mapping"
            )
        start = 0
        chunks = result.mappings().partitions(chunk_rows)
        while True:
            try:
                chunk = next(chunks, None)
            except sa.exc.SQLAlchemyError as exc:
                # A query can fail after its first rows (a cast on a later row): still name it.
                raise AudienceQueryError(
                    f"campaign {campaign.key}: the audience query failed for {partition_date} "
                    # The driver may quote the value it choked on: a phone number, perhaps.
                    f"after {start} rows: {database_message(exc)}"
                ) from None
            if chunk is None:
                break
            rows = list(_audience_rows(campaign, template, partition_date, run_id, chunk, start, summary))
            start += len(rows)
            with engine.begin() as write:
                upsert_rows(write, audience, rows)
            if progress:
                progress(summary.rows)
    summary.reasons.pop("eligible", None)
    refresh_statistics(engine, audience)
    for reason, count in mark_duplicates(engine, campaign.key, partition_date).items():
        summary.eligible -= count
        summary.reasons[reason] += count
    return summary


def stored_summary(conn: sa.Connection, campaign_key: str, partition_date: str) -> AudienceSummary:
    """The summary of a day's audience as the table holds it (a kept snapshot)."""
    a = audience.c
    summary = AudienceSummary()
    for eligible, reason, count in conn.execute(
        sa.select(a.eligible, a.reason, sa.func.count())
        .where(a.campaign_key == campaign_key, a.partition_date == partition_date)
        .group_by(a.eligible, a.reason)
    ):
        summary.rows += count
        if eligible:
            summary.eligible += count
        else:
            summary.reasons[reason or "not_eligible"] += count
    return summary


def written_by_run(conn: sa.Connection, campaign_key: str, partition_date: str, run_id: str) -> bool:
    a = audience.c
    return bool(
        conn.execute(
            sa.select(sa.exists().where(a.campaign_key == campaign_key, a.partition_date == partition_date, a.run_id == run_id))
        ).scalar()
    )


def mark_duplicates(engine: sa.Engine, campaign_key: str, partition_date: str) -> dict[str, int]:
    """One message per phone, and per customer, per campaign and day: the first eligible row (in
    query order) keeps it, the later ones are skipped as duplicate_recipient or duplicate_customer.

    A customer ID returned with two different phones is a data problem (which number did the
    customer opt in with?): sending to both could reach someone who never consented.
    """
    return {
        "duplicate_recipient": _mark_later_rows(engine, campaign_key, partition_date, "recipient", "duplicate_recipient"),
        "duplicate_customer": _mark_later_rows(engine, campaign_key, partition_date, "customer_id", "duplicate_customer"),
    }


def mark_duplicate_recipients(engine: sa.Engine, campaign_key: str, partition_date: str) -> int:
    """One message per phone per campaign and day: the first row keeps it, the others are skipped."""
    return _mark_later_rows(engine, campaign_key, partition_date, "recipient", "duplicate_recipient")


def _mark_later_rows(engine: sa.Engine, campaign_key: str, partition_date: str, column: str, reason: str) -> int:
    # One window query (a sort: O(n log n)) lists the later rows, then they are updated by primary
    # key in batches. An UPDATE ... WHERE row_key IN (window subquery) lets the planner pick a nested
    # loop over a freshly filled table (no statistics yet): quadratic, seconds at 2,000 rows.
    a = audience
    ranked = (
        sa.select(
            a.c.row_key,
            sa.func.row_number().over(partition_by=a.c[column], order_by=a.c.row_number).label("occurrence"),
        )
        .where(
            a.c.campaign_key == campaign_key,
            a.c.partition_date == partition_date,
            a.c.eligible == sa.true(),
            a.c[column].is_not(None),
        )
        .subquery("ranked")
    )
    with engine.connect() as conn:
        later = list(conn.execute(sa.select(ranked.c.row_key).where(ranked.c.occurrence > 1)).scalars())
    marked = 0
    for start in range(0, len(later), DUPLICATE_BATCH):
        batch = later[start : start + DUPLICATE_BATCH]
        with engine.begin() as conn:
            marked += conn.execute(
                sa.update(a)
                .where(
                    a.c.campaign_key == campaign_key,
                    a.c.partition_date == partition_date,
                    a.c.row_key.in_(batch),
                    a.c.eligible == sa.true(),
                )
                .values(eligible=False, reason=reason)
            ).rowcount
    return marked
