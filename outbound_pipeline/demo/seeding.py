"""Seeding the demo warehouse: the four brand tables created and filled in one transaction.

The generators draw from one random generator, always in the same order: a seed gives the same data.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from typing import Any

import sqlalchemy as sa

from outbound_pipeline.demo.consents import generate_consent_histories
from outbound_pipeline.demo.customers import generate_customers
from outbound_pipeline.demo.offers import generate_offer_calendar
from outbound_pipeline.demo.orders import generate_orders
from outbound_pipeline.demo.tables import (
    DEMO_TABLES,
    consents_table,
    customers_table,
    metadata,
    offer_calendar_table,
    orders_table,
)

_CHUNK = 5_000


class DemoAlreadySeededError(RuntimeError):
    """The demo tables (or some of them) already exist: seeding again would double the data."""


def demo_is_seeded(engine: sa.Engine) -> bool:
    """True when every demo table exists (they are created and filled in one transaction)."""
    with engine.connect() as conn:
        inspector = sa.inspect(conn)
        return all(inspector.has_table(name) for name in DEMO_TABLES)


def seed_demo(engine: sa.Engine, *, customers: int = 3000, seed: int = 42) -> dict[str, int]:
    """Create the demo brand tables and fill them; return the row count per table.

    All in one transaction: a failure (or a concurrent seeder that committed first) leaves nothing
    behind. Raises DemoAlreadySeededError if any demo table already exists.
    """
    if customers < 1:
        raise ValueError("customers must be at least 1")
    rng = random.Random(seed)
    customer_rows = generate_customers(rng, customers)
    consent_rows = generate_consent_histories(rng, [row["customer_id"] for row in customer_rows])
    order_rows = generate_orders(rng, customer_rows)
    calendar_rows = generate_offer_calendar()

    with engine.begin() as conn:
        _ensure_transaction_covers_ddl(conn)
        inspector = sa.inspect(conn)
        existing = [name for name in DEMO_TABLES if inspector.has_table(name)]
        if existing:
            raise DemoAlreadySeededError(
                f"demo tables already exist in {engine.url.render_as_string(hide_password=True)}: "
                f"{', '.join(existing)}; drop them first or use another database"
            )
        metadata.create_all(conn, checkfirst=False)
        for table, rows in (
            (customers_table, customer_rows),
            (consents_table, consent_rows),
            (orders_table, order_rows),
            (offer_calendar_table, calendar_rows),
        ):
            for chunk in _chunks(rows, _CHUNK):
                conn.execute(table.insert(), chunk)
    return {
        "customers": len(customer_rows),
        "whatsapp_consents": len(consent_rows),
        "orders": len(order_rows),
        "offer_calendar": len(calendar_rows),
    }


def _ensure_transaction_covers_ddl(conn: sa.Connection) -> None:
    # pysqlite in its legacy mode opens a transaction only before INSERT/UPDATE/DELETE, so CREATE
    # TABLE would autocommit and a failure half-way would leave empty tables behind. Open it now
    # unless the engine already did (the warehouse engine issues BEGIN IMMEDIATE itself).
    if conn.dialect.name != "sqlite":
        return
    dbapi_connection: Any = conn.connection.dbapi_connection
    if not dbapi_connection.in_transaction:
        conn.exec_driver_sql("BEGIN")


def _chunks(rows: Sequence[dict[str, Any]], size: int) -> Iterable[list[dict[str, Any]]]:
    for start in range(0, len(rows), size):
        yield list(rows[start : start + size])
