"""Demo consent histories: opt-ins, opt-outs and changes of mind over time, per category, loaded in
shuffled order as warehouses load history in batches."""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Sequence
from typing import Any

CONSENT_CATEGORIES: tuple[str, ...] = ("order_updates", "offers")

# fmt: off
# Consent history kinds and their weights per category (marketing opt-in is rarer).
HISTORY_KINDS: tuple[str, ...] = (
    "opted_in", "opted_out", "in_then_out", "out_then_in", "several", "none",
)
HISTORY_WEIGHTS: dict[str, tuple[float, ...]] = {
    "order_updates": (0.55, 0.05, 0.10, 0.08, 0.07, 0.15),
    "offers": (0.40, 0.10, 0.12, 0.06, 0.07, 0.25),
}
# fmt: on
NO_CONSENT_AT_ALL = 0.05  # customers with no consent row in any category
OPT_IN_SOURCES = ("web_signup", "store_checkout", "mobile_app", "customer_service")
OPT_OUT_SOURCES = ("whatsapp_stop", "preference_center", "customer_service")


def generate_consent_histories(
    rng: random.Random, customer_ids: Sequence[str]
) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    start = dt.datetime(2023, 1, 1, tzinfo=dt.UTC)
    for customer_id in customer_ids:
        if rng.random() < NO_CONSENT_AT_ALL:
            continue
        for category in CONSENT_CATEGORIES:
            kind = rng.choices(HISTORY_KINDS, weights=HISTORY_WEIGHTS[category])[0]
            statuses = _history(rng, kind)
            # Strictly increasing times, all before 2026: the current state is unambiguous.
            when = start + dt.timedelta(seconds=rng.randrange(500 * 86_400))
            for status in statuses:
                sources = OPT_IN_SOURCES if status == "opted_in" else OPT_OUT_SOURCES
                rows.append(
                    {
                        "customer_id": customer_id,
                        "category": category,
                        "status": status,
                        "updated_at": when,
                        "source": rng.choice(sources),
                    }
                )
                when += dt.timedelta(days=rng.randint(1, 60), seconds=rng.randrange(86_400))
    # Warehouses load history in batches, not in time order: id must not be read as "latest".
    rng.shuffle(rows)
    return rows


def _history(rng: random.Random, kind: str) -> list[str]:
    if kind == "none":
        return []
    if kind in ("opted_in", "opted_out"):
        return [kind]
    if kind == "in_then_out":
        return ["opted_in", "opted_out"]
    if kind == "out_then_in":
        return ["opted_out", "opted_in"]
    # several: 3 to 5 changes, sometimes the same status recorded twice (a re-confirmation)
    first = rng.choice(("opted_in", "opted_out"))
    statuses = [first]
    for _ in range(rng.randint(2, 4)):
        previous = statuses[-1]
        flip = rng.random() < 0.75
        statuses.append(_other(previous) if flip else previous)
    return statuses


def _other(status: str) -> str:
    return "opted_out" if status == "opted_in" else "opted_in"
