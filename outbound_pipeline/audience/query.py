"""The audience query as it runs: the campaign's SQL wrapped with the current consent for its
category, the columns it must return, and the stable key of each row it returns."""

from __future__ import annotations

import hashlib
from typing import Any

import sqlalchemy as sa

from outbound_pipeline.config import Campaign, OutboundConfig
from outbound_pipeline.warehouse import OPTED_OUT

# Columns the wrapper adds to the campaign's own (prefixed: the campaign's query cannot clash).
CONSENT_STATUS = "outbound_consent_status"
CONSENT_UPDATED_AT = "outbound_consent_updated_at"
OCCURRENCE = "outbound_occurrence"
# Each of the configuration's consent_columns comes back as outbound_consent_<column>.
CONSENT_EXTRA_PREFIX = "outbound_consent_x_"
POSITION = "outbound_position"


def required_columns(campaign: Campaign) -> list[str]:
    """Columns the query must return. The country column is optional: used when present."""
    return list(
        dict.fromkeys(
            [campaign.customer_id_column, campaign.phone_column, *campaign.variable_columns()]
        )
    )


def audience_sql(campaign: Campaign, config: OutboundConfig, dialect: sa.Dialect) -> str:
    """The campaign's query wrapped with the current consent for its category."""
    q = dialect.identifier_preparer.quote
    user_sql = campaign.audience_sql.strip().rstrip(";").strip()
    cid, phone = q(campaign.customer_id_column), q(campaign.phone_column)
    consents = ".".join(q(part) for part in config.consents_table.split("."))
    extras = [q(c) for c in config.consent_columns]
    inner = "".join(f", {c}" for c in extras)
    outer = "".join(f", cc.{q(c)} AS {CONSENT_EXTRA_PREFIX}{c}" for c in config.consent_columns)
    same_row = f"p.{cid}, p.{phone}"
    if dialect.name == "sqlite":
        # A SQLite column may hold 42 and '42': one customer to the row key (its text), two to
        # PARTITION BY. Numbered apart, both rows would get the same key, the second written over
        # the first.
        same_row = f"CAST(p.{cid} AS TEXT), CAST(p.{phone} AS TEXT)"
    # The position is numbered straight over the campaign's query, before any join or window can
    # reorder it, and the result is sorted by it: row_number is the query's own order, which decides
    # which of two rows for one phone (or customer) keeps the message, and keeps row keys stable.
    return f"""
SELECT p.*, cc.status AS {CONSENT_STATUS}, cc.updated_at AS {CONSENT_UPDATED_AT}{outer},
       ROW_NUMBER() OVER (PARTITION BY {same_row} ORDER BY p.{POSITION}) AS {OCCURRENCE}
FROM (SELECT q.*, ROW_NUMBER() OVER () AS {POSITION} FROM ({user_sql}) q) p
LEFT JOIN (
    SELECT customer_id, status, updated_at{inner} FROM (
        SELECT customer_id, status, updated_at{inner},
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


def row_key(customer_id: Any, phone: Any, occurrence: int) -> str:
    """The row's key in the audience table: the same row of the query gets the same key each run."""
    text = f"{customer_id}\x1f{phone}\x1f{occurrence}"
    return hashlib.sha256(text.encode("utf-8", errors="surrogatepass")).hexdigest()[:32]
