"""The demo's brand tables copied into another warehouse (a DuckDB file), as a brand's loader would
put them there: `seed_demo` writes only SQLite and PostgreSQL (its consent ids are SERIAL)."""

from __future__ import annotations

import sqlalchemy as sa

from outbound_pipeline.demo import (
    consents_table,
    customers_table,
    offer_calendar_table,
    orders_table,
)

BRAND_TABLES = (customers_table, consents_table, orders_table, offer_calendar_table)


def copy_brand_tables(source: sa.Engine, target: sa.Engine) -> None:
    """The demo's brand tables and their rows, from one warehouse into another (same columns and
    types; keys without autoincrement, as a loader writes them)."""
    copies = sa.MetaData()
    for table in BRAND_TABLES:
        columns = [
            sa.Column(c.name, c.type, primary_key=c.primary_key, autoincrement=False)
            for c in table.columns
        ]
        copy = sa.Table(table.name, copies, *columns)
        with source.connect() as read, target.begin() as write:
            copy.create(write)
            rows = [dict(r) for r in read.execute(sa.select(table)).mappings()]
            for start in range(0, len(rows), 5000):
                write.execute(sa.insert(copy), rows[start : start + 5000])
