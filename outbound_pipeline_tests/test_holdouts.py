"""Holdouts and variants over 10,000 customers: the held-out share is within 1 point of the
setting, and the same customers are held out (and get the same variant) on a rerun of the day and
on a backfill of another day. Real extraction on a real SQLite warehouse."""

from __future__ import annotations

import datetime as dt
import hashlib
from collections import Counter
from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from outbound_pipeline.audience import extract, is_held_out, variant_for
from outbound_pipeline.config import OutboundConfig, parse_config
from outbound_pipeline.demo import consents_table, customers_table
from outbound_pipeline.warehouse import audience, create_engine, create_owned_tables, metadata

CUSTOMERS = 10_000
DAY, RERUN_DAY, BACKFILL_DAY = "2026-11-24", "2026-11-24", "2026-10-02"


def config(holdout_percent: float) -> OutboundConfig:
    return parse_config(
        {
            "templates": [
                {"name": "a_v1", "language": "fr", "category": "MARKETING", "body": "A {{1}}"},
                {"name": "b_v1", "language": "fr", "category": "MARKETING", "body": "B {{1}}"},
            ],
            "campaigns": [
                {
                    "key": "everyone",
                    "campaign_id": "5dd2be5a-6aeb-4ef2-8c8d-c78d51e21acf",
                    "sender": "+33644646081",
                    "template": "a_v1",
                    "language": "fr",
                    "consent_category": "offers",
                    # Every customer, every day: what changes between runs is only the day.
                    "audience_sql": "SELECT customer_id, phone, first_name FROM customers "
                    "WHERE :partition_date IS NOT NULL",
                    "variables": {"body": {1: "first_name"}},
                    "start_date": "2026-01-01",
                    "holdout_percent": holdout_percent,
                    "variants": [
                        {"name": "a", "weight": 3},
                        {"name": "b", "template": "b_v1", "weight": 1},
                    ],
                }
            ],
        }
    )


def independent_position(key: str, customer_id: str) -> float:
    """The documented rule, written again: SHA-256 of '<key>\\x1f<customer_id>', 8 bytes / 2**64."""
    digest = hashlib.sha256(f"{key}\x1f{customer_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


@pytest.mark.parametrize("percent", [5, 10, 33.3])
def test_the_holdout_share_of_10000_customers_is_within_one_point(percent: float) -> None:
    campaign = config(percent).campaigns[0]
    ids = [f"C{n:06d}" for n in range(CUSTOMERS)]
    held = [c for c in ids if is_held_out(campaign, c)]
    assert abs(100 * len(held) / CUSTOMERS - percent) <= 1
    assert held == [c for c in ids if independent_position("everyone", c) < percent / 100]
    contacted = Counter(variant_for(campaign, c) for c in ids if not is_held_out(campaign, c))
    # Weights 3:1 of the contacted customers, within 2 points.
    assert abs(contacted["a"] / sum(contacted.values()) - 0.75) <= 0.02


@pytest.fixture
def ten_thousand(tmp_path) -> Iterator[sa.Engine]:  # type: ignore[no-untyped-def]
    engine = create_engine(f"sqlite:///{tmp_path / 'warehouse.sqlite'}")
    create_owned_tables(engine, metadata)
    customers_table.metadata.create_all(engine, tables=[customers_table, consents_table])
    at = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
    with engine.begin() as conn:
        conn.execute(
            sa.insert(customers_table),
            [
                {
                    "customer_id": f"C{n:06d}",
                    "phone": f"+3361{n:07d}",
                    "first_name": "Camille",
                    "last_name": "Martin",
                    "country": "FR",
                    "loyalty_tier": "gold",
                    "preferred_store": "Lyon",
                    "offer_segment": n % 7,
                    "created_at": at,
                }
                for n in range(CUSTOMERS)
            ],
        )
        conn.execute(
            sa.insert(consents_table),
            [
                {
                    "customer_id": f"C{n:06d}",
                    "category": "offers",
                    "status": "opted_in",
                    "updated_at": at,
                    "source": "web_signup",
                }
                for n in range(CUSTOMERS)
            ],
        )
    yield engine
    engine.dispose()


def _assignment(engine: sa.Engine, day: str) -> dict[str, str | None]:
    """customer -> 'holdout' or the variant, as the day's audience recorded it."""
    a = audience.c
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(a.customer_id, a.reason, a.variant).where(a.partition_date == day)
        ).all()
    assert len(rows) == CUSTOMERS
    assert {r.reason for r in rows} <= {None, "holdout"}
    return {r.customer_id: "holdout" if r.reason == "holdout" else r.variant for r in rows}


def test_holdout_is_stable_across_reruns_and_backfills(ten_thousand: sa.Engine) -> None:
    outbound = config(10)
    campaign = outbound.campaigns[0]
    runs = []
    for run, day in enumerate((DAY, RERUN_DAY, BACKFILL_DAY)):
        summary = extract(ten_thousand, campaign, outbound, day, f"run-{run}")
        assert summary.rows == CUSTOMERS
        runs.append(_assignment(ten_thousand, day))
    first = runs[0]
    held = {c for c, group in first.items() if group == "holdout"}
    assert abs(100 * len(held) / CUSTOMERS - 10) <= 1
    # The rerun and the backfill of another day hold out the same customers, variants unchanged.
    assert all(run == first for run in runs[1:])
    assert held == {c for c in first if independent_position("everyone", c) < 0.10}
    assert Counter(first.values()).keys() == {"holdout", "a", "b"}
