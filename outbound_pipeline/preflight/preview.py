"""The preview item: the first row of the day's audience that is eligible and renders (read only)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from outbound_pipeline.audience import (
    CONSENT_STATUS,
    audience_sql,
    json_value,
    required_columns,
    verdict,
)
from outbound_pipeline.config import Campaign, OutboundConfig, Template
from outbound_pipeline.messages import RenderSkip, render_row
from outbound_pipeline.preflight.items import FAIL, PASS, WARN, Item
from outbound_pipeline.warehouse import OPTED_IN, WarehouseResource, database_message
from outbound_pipeline.whatsapp import mask

# Rows of the audience query read at most to find one that is eligible and renders.
MAX_PREVIEW_SCAN = 10_000


@dataclass
class Preview:
    header: list[str]
    body: list[str]
    text: str
    customer_id: str | None
    recipient: str | None
    rows_read: int


def sample_parameters(campaign: Campaign, template: Template) -> tuple[list[str], list[str]]:
    """Values that respect WhatsApp's rules: literals as configured, 'test <n>' for columns."""

    def values(mapping: dict[int, Any], component: str) -> list[str]:
        return [
            mapping[n].literal if mapping[n].literal is not None else f"test {component} {n}"
            for n in sorted(mapping)
        ]

    return values(campaign.variables.header, "header"), values(campaign.variables.body, "body")


def _placeholder_link(phone: str, kind: str) -> str:
    # The preview is shown in the UI: a real link would carry the phone number.
    return f"<unsubscribe {kind}>"


def _rendered(campaign: Campaign, template: Template, record: Any, read: int) -> Preview | None:
    """The preview of one audience row, or None when it is not eligible or does not render."""
    recipient, _, reason = verdict(campaign, template, record)
    if reason is not None or record.get(CONSENT_STATUS) != OPTED_IN:
        return None
    try:
        fields = {c: json_value(record.get(c)) for c in campaign.variables.columns()}
        header, body, text, _ = render_row(
            campaign, template, fields, recipient=recipient, links=_placeholder_link
        )
    except RenderSkip:
        return None
    except (IndexError, KeyError):
        raise ValueError(
            "the template's placeholders and the campaign's variables do not match"
        ) from None
    customer = record.get(campaign.customer_id_column)
    return Preview(header, body, text, None if customer is None else str(customer), recipient, read)


def first_eligible_preview(
    conn: sa.Connection, campaign: Campaign, config: OutboundConfig, day: str
) -> tuple[Preview | None, int]:
    """The first row of the day's audience that is eligible and renders; (None, rows read) if none.

    Read only: the query runs as the audience asset runs it (with the current consent), nothing
    is written. Raises ValueError naming the missing columns.
    """
    template = config.template_for(campaign)
    params = {"outbound_consent_category": campaign.consent_category}
    if ":partition_date" in campaign.audience_sql:
        params["partition_date"] = day
    result = conn.execute(sa.text(audience_sql(campaign, config, conn.dialect)), params)
    try:
        returned = list(result.keys())
        missing = [c for c in required_columns(campaign) if c not in returned]
        if missing:
            raise ValueError(f"the audience query does not return {', '.join(missing)}")
        read = 0
        for record in result.mappings():
            read += 1
            if read > MAX_PREVIEW_SCAN:
                break
            preview = _rendered(campaign, template, record, read)
            if preview is not None:
                return preview, read
        return None, read
    finally:
        result.close()


def check_preview(
    warehouse: WarehouseResource, campaign: Campaign, config: OutboundConfig, day: dt.date
) -> tuple[Item, Preview | None]:
    """The preview item, and the preview the test send may take its values from."""
    try:
        with warehouse.reading() as conn:
            preview, read = first_eligible_preview(conn, campaign, config, day.isoformat())
    except sa.exc.SQLAlchemyError as exc:
        return Item(
            "preview", FAIL, f"the audience query failed for {day}: {database_message(exc)}"
        ), None
    except ValueError as exc:
        return Item("preview", FAIL, f"no preview for {day}: {exc}"), None
    if preview is None:
        detail = f"no eligible row that renders among {read} rows of {day}; the test send uses sample values"
        return Item("preview", WARN, detail), None
    detail = (
        f"row {preview.rows_read} of {day} (customer {preview.customer_id}, {mask(preview.recipient)}): "
        f"{preview.text}"
    )
    return Item("preview", PASS, detail), preview
