"""Metadata the campaign assets show in the UI: Markdown tables, breakdowns, masked previews; and
whether a day is settled, which the audience and messages steps ask before recomputing it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import dagster as dg
import sqlalchemy as sa

from outbound_pipeline import ledger
from outbound_pipeline.ledger import StateStoreResource
from outbound_pipeline.reporting import failure_rate, status_totals
from outbound_pipeline.warehouse import WarehouseResource
from outbound_pipeline.whatsapp import masked_sample

PREVIEW_ROWS = 10


def markdown_table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "_no rows_"
    headers = list(rows[0])
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    for row in rows:
        cells = [
            str(row[h] if row[h] is not None else "").replace("|", "\\|").replace("\n", " ")[:80]
            for h in headers
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def breakdown(counter: Mapping[str, int]) -> dg.MetadataValue:
    return dg.MetadataValue.json(dict(sorted(counter.items())))


def rounded_failure_rate(counts: dict[str, dict[str, int]]) -> float:
    """The day's failure rate from its status -> reason -> rows counts (0.0 before any outcome)."""
    rate, _ = failure_rate(status_totals(counts))
    return round(rate, 4) if rate is not None else 0.0


def masked_preview(
    conn: sa.Connection,
    table: sa.Table,
    where: sa.ColumnElement[bool],
    columns: Sequence[str],
    order_by: Sequence[sa.ColumnElement[Any]] = (),
) -> dg.MetadataValue:
    """The first rows of a table's partition as a Markdown table, phone numbers masked."""
    select = sa.select(*(table.c[name] for name in columns)).where(where)
    rows = conn.execute(select.order_by(*order_by).limit(PREVIEW_ROWS)).mappings()
    return dg.MetadataValue.md(markdown_table(masked_sample([dict(row) for row in rows])))


def settled_rows(
    state: StateStoreResource, warehouse: WarehouseResource, campaign_key: str, day: str
) -> int:
    """`ledger.settled_rows` of a day: its ledger (state store) against its audience (warehouse)."""
    with state.reading() as state_conn, warehouse.reading() as warehouse_conn:
        return ledger.settled_rows(state_conn, warehouse_conn, campaign_key, day)
