"""demo."""

from __future__ import annotations

from outbound_pipeline.demo.data import (
    CONSENT_CATEGORIES,
    DEMO_TABLES,
    FIRST_DAY,
    LAST_DAY,
    DemoAlreadySeededError,
    _offer_calendar,
    customers_table,
    demo_is_seeded,
    seed_demo,
)

__all__ = [
    "CONSENT_CATEGORIES",
    "DEMO_TABLES",
    "DemoAlreadySeededError",
    "FIRST_DAY",
    "LAST_DAY",
    "_offer_calendar",
    "customers_table",
    "demo_is_seeded",
    "seed_demo",
]
