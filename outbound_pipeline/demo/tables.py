"""The demo brand tables (SQLAlchemy Core, portable between SQLite and PostgreSQL):

- `customers`: the contract columns plus `loyalty_tier`, `preferred_store` and `offer_segment`
  (0..6, which day of the marketing rotation the customer belongs to);
- `whatsapp_consents`: the consent history, one row per change; the latest row per
  (customer_id, category) by `updated_at` is the current state. Rows are inserted in shuffled order,
  so `id` is not chronological: never take "the latest" by id;
- `orders`: 20 to 40 orders ready in store every day from 2026-01-01 to 2027-12-31;
- `offer_calendar`: one row per date, naming the customer segment that gets the day's marketing offer
  and the offer's text. It lets the audience SQL pick a different slice each day with a plain
  equality join on `:partition_date`, which SQLite and PostgreSQL run alike (their date functions
  differ).
"""

from __future__ import annotations

import sqlalchemy as sa

DEMO_TABLES: tuple[str, ...] = ("customers", "whatsapp_consents", "orders", "offer_calendar")

metadata = sa.MetaData()

customers_table = sa.Table(
    "customers",
    metadata,
    sa.Column("customer_id", sa.String(16), primary_key=True),
    sa.Column("phone", sa.String(40), nullable=True),
    sa.Column("first_name", sa.String(80), nullable=False),
    sa.Column("last_name", sa.String(80), nullable=False),
    sa.Column("country", sa.String(2), nullable=True),
    sa.Column("loyalty_tier", sa.String(10), nullable=False),
    sa.Column("preferred_store", sa.String(80), nullable=False),
    sa.Column("offer_segment", sa.Integer, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
)

consents_table = sa.Table(
    "whatsapp_consents",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("customer_id", sa.String(16), nullable=False),
    sa.Column("category", sa.String(40), nullable=False),
    sa.Column("status", sa.String(12), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("source", sa.String(40), nullable=False),
    sa.Index("ix_whatsapp_consents_customer_category", "customer_id", "category", "updated_at"),
)

orders_table = sa.Table(
    "orders",
    metadata,
    sa.Column("order_id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("order_ref", sa.String(16), nullable=False, unique=True),
    sa.Column("customer_id", sa.String(16), nullable=False),
    sa.Column("store_name", sa.String(80), nullable=False),
    sa.Column("ready_date", sa.Date, nullable=False, index=True),
    sa.Column("amount", sa.Numeric(10, 2), nullable=False),
)

offer_calendar_table = sa.Table(
    "offer_calendar",
    metadata,
    sa.Column("offer_date", sa.Date, primary_key=True),
    sa.Column("segment", sa.Integer, nullable=False),
    sa.Column("offer_label", sa.String(80), nullable=False),
    sa.Column("valid_until", sa.String(40), nullable=False),
)
