"""Demo orders ready in store: 20 to 40 a day over every partition a demo run is likely to ask for."""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Iterable, Sequence
from decimal import Decimal
from typing import Any

from outbound_pipeline.demo.customers import STORES

# Orders and the offer calendar cover every partition a demo run is likely to ask for.
FIRST_DAY = dt.date(2026, 1, 1)
LAST_DAY = dt.date(2027, 12, 31)


def demo_days() -> Iterable[dt.date]:
    day = FIRST_DAY
    while day <= LAST_DAY:
        yield day
        day += dt.timedelta(days=1)


def generate_orders(
    rng: random.Random, customers: Sequence[dict[str, Any]]
) -> list[dict[str, Any]]:
    per_day = [(day, rng.randint(20, 40)) for day in demo_days()]
    total = sum(count for _, count in per_day)
    refs = rng.sample(range(10_000, 100_000), total)
    rows: list[dict[str, Any]] = []
    for day, count in per_day:
        for _ in range(count):
            customer = rng.choice(customers)
            # Most customers collect where they usually shop.
            store = customer["preferred_store"] if rng.random() < 0.7 else rng.choice(STORES)
            rows.append(
                {
                    "order_id": len(rows) + 1,
                    "order_ref": f"CMD-{refs[len(rows)]}",
                    "customer_id": customer["customer_id"],
                    "store_name": store,
                    "ready_date": day,
                    "amount": Decimal(rng.randint(1_500, 45_000)).scaleb(-2),  # 15.00..450.00
                }
            )
    return rows
