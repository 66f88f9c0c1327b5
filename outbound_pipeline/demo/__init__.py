"""Demo warehouse: the brand tables the bundled campaigns read, filled with realistic, messy data.

Only the embedded default warehouse is seeded (see `warehouse.ensure_demo_seeded`). The data is
deterministic for a given seed and deliberately imperfect, so that a fresh checkout exercises every
rule of the pipeline: phones in national format, foreign and malformed numbers, phones shared by a
family, consent histories that changed over time, names with accents and apostrophes.

Modules: `tables` (the four brand tables), `customers`, `consents`, `orders` and `offers` (the
generators of their rows), `seeding` (`seed_demo`, `demo_is_seeded`).
"""

from __future__ import annotations

from outbound_pipeline.demo.consents import CONSENT_CATEGORIES
from outbound_pipeline.demo.orders import FIRST_DAY, LAST_DAY
from outbound_pipeline.demo.seeding import DemoAlreadySeededError, demo_is_seeded, seed_demo
from outbound_pipeline.demo.tables import (
    DEMO_TABLES,
    consents_table,
    customers_table,
    offer_calendar_table,
    orders_table,
)

__all__ = [
    "CONSENT_CATEGORIES",
    "DEMO_TABLES",
    "DemoAlreadySeededError",
    "FIRST_DAY",
    "LAST_DAY",
    "consents_table",
    "customers_table",
    "demo_is_seeded",
    "offer_calendar_table",
    "orders_table",
    "seed_demo",
]
