"""The demo warehouse: seeding, the messy data mix it promises, and the bundled campaigns' audiences."""

from __future__ import annotations

import datetime as dt
import os
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import phonenumbers
import pytest
import sqlalchemy as sa

from outbound_pipeline import demo as demo_data
from outbound_pipeline.config import Campaign, load_config
from outbound_pipeline.demo import (
    CONSENT_CATEGORIES,
    DEMO_TABLES,
    DemoAlreadySeededError,
    demo_is_seeded,
    seed_demo,
    seeding,
)
from outbound_pipeline.whatsapp import parameter_violation

PARTITION = "2026-11-24"  # a Tuesday
EXPECTED_DAYS = (demo_data.LAST_DAY - demo_data.FIRST_DAY).days + 1


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[sa.Engine, dict[str, int]]]:
    path = tmp_path_factory.mktemp("demo") / "warehouse.sqlite"
    engine = sa.create_engine(f"sqlite:///{path}")
    counts = seed_demo(engine)
    yield engine, counts
    engine.dispose()


@pytest.fixture(scope="module")
def engine(seeded: tuple[sa.Engine, dict[str, int]]) -> sa.Engine:
    return seeded[0]


def _campaigns() -> list[Campaign]:
    return list(load_config().campaigns)


def _audience(conn: sa.Connection, campaign: Campaign, day: str) -> list[dict[str, Any]]:
    result = conn.execute(sa.text(campaign.audience_sql), {"partition_date": day})
    return [dict(row) for row in result.mappings()]


def _count(conn: sa.Connection, table: str) -> int:
    return conn.execute(sa.text(f"SELECT COUNT(*) FROM {table}")).scalar_one()


# --- seeding -------------------------------------------------------------------------------------


def test_seed_returns_the_row_counts(seeded: tuple[sa.Engine, dict[str, int]]) -> None:
    engine, counts = seeded
    assert set(counts) == set(DEMO_TABLES)
    assert counts["customers"] == 3000
    assert counts["offer_calendar"] == EXPECTED_DAYS
    # 20..40 orders a day, every day; about two consent rows per customer
    assert 20 * EXPECTED_DAYS <= counts["orders"] <= 40 * EXPECTED_DAYS
    assert 1.5 * 3000 < counts["whatsapp_consents"] < 3 * 3000
    with engine.connect() as conn:
        for table, expected in counts.items():
            assert _count(conn, table) == expected, table
        per_day = conn.execute(
            sa.text(
                "SELECT MIN(n), MAX(n), COUNT(*) FROM "
                "(SELECT ready_date, COUNT(*) AS n FROM orders GROUP BY ready_date) AS d"
            )
        ).one()
    assert (per_day[0] >= 20, per_day[1] <= 40, per_day[2]) == (True, True, EXPECTED_DAYS)
    assert demo_is_seeded(engine)


def test_is_seeded_is_false_on_an_empty_database(tmp_path: Path) -> None:
    assert not demo_is_seeded(sa.create_engine(f"sqlite:///{tmp_path / 'empty.sqlite'}"))


def test_seeding_twice_raises_and_keeps_the_data(engine: sa.Engine) -> None:
    with engine.connect() as conn:
        before = _count(conn, "customers")
    with pytest.raises(DemoAlreadySeededError, match="already exist"):
        seed_demo(engine)
    with engine.connect() as conn:
        assert _count(conn, "customers") == before


def test_a_failed_seed_leaves_no_table_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The last table gets a duplicate primary key: the whole seed, DDL included, must roll back.
    original = seeding.generate_offer_calendar
    monkeypatch.setattr(seeding, "generate_offer_calendar", lambda: original() + original()[:1])
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'broken.sqlite'}")
    with pytest.raises(sa.exc.IntegrityError):
        seed_demo(engine, customers=50)
    assert sa.inspect(engine).get_table_names() == []
    assert not demo_is_seeded(engine)


def test_seeding_works_with_the_warehouse_engine(tmp_path: Path) -> None:
    # The pipeline's own SQLite engine opens transactions itself (BEGIN IMMEDIATE).
    from outbound_pipeline.warehouse import create_engine

    engine = create_engine(f"sqlite:///{tmp_path / 'wh.sqlite'}")
    counts = seed_demo(engine, customers=100)
    assert counts["customers"] == 100
    assert demo_is_seeded(engine)
    with pytest.raises(DemoAlreadySeededError):
        seed_demo(engine, customers=100)


def test_seeding_is_deterministic() -> None:
    def customers(seed: int) -> list[tuple[Any, ...]]:
        engine = sa.create_engine("sqlite://", poolclass=sa.pool.StaticPool)
        seed_demo(engine, customers=200, seed=seed)
        with engine.connect() as conn:
            return list(conn.execute(sa.text("SELECT * FROM customers ORDER BY customer_id")))

    assert customers(7) == customers(7)
    assert customers(7) != customers(8)


# --- the data mix --------------------------------------------------------------------------------


def _valid(phone: str | None, region: str | None) -> bool:
    if not phone or any(ch.isalpha() for ch in phone):
        return False
    try:
        return phonenumbers.is_valid_number(phonenumbers.parse(phone, region))
    except phonenumbers.NumberParseException:
        return False


def test_phone_mix(engine: sa.Engine) -> None:
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT phone, country FROM customers")).all()
    total = len(rows)
    e164_fr = [p for p, c in rows if p and p.startswith(("+336", "+337")) and _valid(p, None)]
    national = [p for p, c in rows if p and p.startswith("0") and _valid(p, "FR")]
    belgian = [p for p, c in rows if c == "BE" and p and p.startswith("+324") and _valid(p, None)]
    american = [p for p, c in rows if c == "US" and p and p.startswith("+1") and _valid(p, None)]
    broken = [p for p, c in rows if not _valid(p, c)]
    assert len(e164_fr) > total * 0.6
    assert total * 0.07 < len(national) < total * 0.13
    assert any(" " in p for p in national) and any(" " not in p for p in national)
    assert len(belgian) > total * 0.04
    assert len(american) >= 30
    assert total * 0.01 < len(broken) < total * 0.04
    assert None in broken and "" in broken
    assert any(p and any(ch.isalpha() for ch in p) for p in broken)
    # a few households: one valid phone, two customers, never more
    shared = Counter(p for p, c in rows if _valid(p, c))
    families = [p for p, n in shared.items() if n > 1]
    assert 5 <= len(families) <= 40
    assert max(shared.values()) == 2


def test_names_have_accents_and_apostrophes_and_no_newlines(engine: sa.Engine) -> None:
    with engine.connect() as conn:
        names = [r[0] for r in conn.execute(sa.text("SELECT first_name FROM customers"))]
        texts = conn.execute(
            sa.text(
                "SELECT first_name, last_name, preferred_store FROM customers "
                "UNION ALL SELECT store_name, order_ref, store_name FROM orders"
            )
        ).all()
    assert any(ch in "éèëïçÉ" for name in names for ch in name)
    assert any("'" in name for name in names)
    assert all(value and "\n" not in value and "\t" not in value for row in texts for value in row)


CONSENT_HISTORIES_SQL = """
WITH ranked AS (
    SELECT customer_id, category, status,
           ROW_NUMBER() OVER (PARTITION BY customer_id, category ORDER BY updated_at) AS rn_first,
           ROW_NUMBER() OVER (PARTITION BY customer_id, category ORDER BY updated_at DESC) AS rn_last,
           ROW_NUMBER() OVER (PARTITION BY customer_id, category ORDER BY id DESC) AS rn_last_id,
           COUNT(*) OVER (PARTITION BY customer_id, category) AS n
    FROM whatsapp_consents
)
SELECT customer_id, category, n,
       MAX(CASE WHEN rn_first = 1 THEN status END) AS first_status,
       MAX(CASE WHEN rn_last = 1 THEN status END) AS current_status,
       MAX(CASE WHEN rn_last_id = 1 THEN status END) AS status_of_highest_id
FROM ranked
GROUP BY customer_id, category, n
"""


def _history_kind(n: int, first: str, current: str) -> str:
    if n == 1:
        return current
    if n == 2 and (first, current) == ("opted_in", "opted_out"):
        return "in_then_out"
    if n == 2 and (first, current) == ("opted_out", "opted_in"):
        return "out_then_in"
    return "several" if n >= 3 else "repeated"


def test_consent_mix_has_every_history_kind(engine: sa.Engine) -> None:
    with engine.connect() as conn:
        histories = conn.execute(sa.text(CONSENT_HISTORIES_SQL)).all()
        customer_ids = {r[0] for r in conn.execute(sa.text("SELECT customer_id FROM customers"))}
        ties = conn.execute(
            sa.text(
                "SELECT COUNT(*) FROM (SELECT customer_id, category, updated_at FROM "
                "whatsapp_consents GROUP BY customer_id, category, updated_at "
                "HAVING COUNT(*) > 1) AS t"
            )
        ).scalar_one()
        statuses = {
            r[0] for r in conn.execute(sa.text("SELECT DISTINCT status FROM whatsapp_consents"))
        }
        categories = {
            r[0] for r in conn.execute(sa.text("SELECT DISTINCT category FROM whatsapp_consents"))
        }
    assert ties == 0, "the latest row per customer and category must be unambiguous"
    assert statuses == {"opted_in", "opted_out"}
    assert categories == set(CONSENT_CATEGORIES)

    with_rows: dict[str, set[str]] = {c: set() for c in CONSENT_CATEGORIES}
    for category in CONSENT_CATEGORIES:
        kinds = Counter(
            _history_kind(n, first, current)
            for cid, cat, n, first, current, _ in histories
            if cat == category
        )
        for kind in ("opted_in", "opted_out", "in_then_out", "out_then_in", "several"):
            assert kinds[kind] >= 20, (category, kind, kinds)
        with_rows[category] = {cid for cid, cat, *_ in histories if cat == category}
        currents = Counter(current for _, cat, _, _, current, _ in histories if cat == category)
        assert currents["opted_in"] > currents["opted_out"] > 0

    anywhere = with_rows["order_updates"] | with_rows["offers"]
    assert len(customer_ids - anywhere) >= 50, "customers with no consent row at all"
    for category, other in (("order_updates", "offers"), ("offers", "order_updates")):
        assert len(with_rows[other] - with_rows[category]) >= 50, f"only {other}, not {category}"
    # Rows are not in time order: the highest id is not always the current state.
    assert any(current != by_id for *_, current, by_id in histories)


# --- the bundled campaigns' audiences ------------------------------------------------------------


@pytest.mark.parametrize("campaign", _campaigns(), ids=lambda c: c.key)
def test_audience_returns_what_the_campaign_needs(engine: sa.Engine, campaign: Campaign) -> None:
    config = load_config()
    template = config.template_for(campaign)
    with engine.connect() as conn:
        rows = _audience(conn, campaign, PARTITION)
    assert rows, f"{campaign.key}: empty audience on {PARTITION}"
    needed = {campaign.customer_id_column, campaign.phone_column, campaign.country_column}
    needed |= set(campaign.variables.columns())
    assert needed <= set(rows[0]), needed - set(rows[0])
    # Every value a variable reads is a sendable WhatsApp parameter.
    body_only = template.header_count == 0
    for component, mapping in (
        ("header", campaign.variables.header),
        ("body", campaign.variables.body),
    ):
        for source in mapping.values():
            values = [row[source.column] for row in rows] if source.column else [source.literal]
            for value in values:
                assert parameter_violation(str(value), component, body_only) is None, value


def test_order_ready_audience_is_the_orders_ready_that_day(engine: sa.Engine) -> None:
    campaign = load_config().campaign("order_ready")
    with engine.connect() as conn:
        for day in ("2026-01-01", PARTITION, "2027-12-31"):
            rows = _audience(conn, campaign, day)
            ready = conn.execute(
                sa.text("SELECT order_ref FROM orders WHERE ready_date = :d"), {"d": day}
            ).all()
            assert 20 <= len(rows) <= 40
            assert sorted(r["order_ref"] for r in rows) == sorted(r[0] for r in ready)
        assert _audience(conn, campaign, "2025-12-31") == []


def test_winter_offers_audience_changes_every_business_day(engine: sa.Engine) -> None:
    campaign = load_config().campaign("winter_offers")
    start = dt.date(2026, 11, 23)  # a Monday
    business_days = [
        d for d in (start + dt.timedelta(days=i) for i in range(10)) if d.weekday() < 5
    ][:7]
    with engine.connect() as conn:
        members = {
            r[0]
            for r in conn.execute(
                sa.text(
                    "SELECT customer_id FROM customers WHERE loyalty_tier IN ('gold', 'silver')"
                )
            )
        }
        audiences = [
            {r["customer_id"] for r in _audience(conn, campaign, d.isoformat())}
            for d in business_days
        ]
        saturday = {r["customer_id"] for r in _audience(conn, campaign, "2026-11-28")}
    for audience in audiences:
        assert 150 <= len(audience) <= 350  # a few hundred a day
    # Consecutive business days reach different people, and 7 of them reach every member once.
    assert sum(len(a) for a in audiences) == len(members)
    assert set().union(*audiences) == members
    # A manual weekend run repeats Friday's slice rather than finding nobody.
    assert saturday == audiences[4]


# --- PostgreSQL ----------------------------------------------------------------------------------


def _postgres_url() -> sa.URL:
    raw = os.environ.get("OUTBOUND_TEST_POSTGRES_URL")
    if not raw:
        pytest.skip(
            "OUTBOUND_TEST_POSTGRES_URL is not set (e.g. postgresql+psycopg://postgres@127.0.0.1:5432/test)"
        )
    url = sa.make_url(raw)
    if url.drivername in ("postgresql", "postgres"):
        url = url.set(drivername="postgresql+psycopg")
    return url


@pytest.fixture
def postgres_engine() -> Iterator[sa.Engine]:
    """A database of its own on the server, dropped afterwards: never collides with other tests."""
    url = _postgres_url()
    name = f"outbound_test_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(url, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    engine = sa.create_engine(url.set(database=name), poolclass=sa.pool.NullPool)
    try:
        yield engine
    finally:
        engine.dispose()
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


@pytest.mark.postgres
def test_postgres_seed_and_audiences_match_sqlite(
    postgres_engine: sa.Engine, engine: sa.Engine, seeded: tuple[sa.Engine, dict[str, int]]
) -> None:
    assert not demo_is_seeded(postgres_engine)
    counts = seed_demo(postgres_engine)
    assert counts == seeded[1]
    assert demo_is_seeded(postgres_engine)
    with pytest.raises(DemoAlreadySeededError):
        seed_demo(postgres_engine)
    with postgres_engine.connect() as pg, engine.connect() as lite:
        for table, expected in counts.items():
            assert _count(pg, table) == expected, table
        for campaign in _campaigns():
            on_pg = _audience(pg, campaign, PARTITION)
            assert on_pg, campaign.key
            # Same seed, same SQL: both engines give exactly the same audience.
            assert on_pg == _audience(lite, campaign, PARTITION), campaign.key
        current_pg = sorted(tuple(r) for r in pg.execute(sa.text(CONSENT_HISTORIES_SQL)))
        current_lite = sorted(tuple(r) for r in lite.execute(sa.text(CONSENT_HISTORIES_SQL)))
        assert current_pg == current_lite
