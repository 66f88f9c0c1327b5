"""The brand tables the benchmarks read: `customers` and `whatsapp_consents` (the contract's
columns), generated with messy phones and consent histories, written by each engine's bulk path.
"""

from __future__ import annotations

import datetime as dt
import itertools
import random
import time
from collections.abc import Iterator
from typing import Any

import sqlalchemy as sa

from benchmarks._common import CONSENT_CATEGORY
from outbound_pipeline.ledger import create_state_tables
from outbound_pipeline.warehouse import (
    create_warehouse_tables,
)

FIRST_NAMES = (
    "Zoé",
    "Élodie",
    "Chloé",
    "Léa",
    "Jérôme",
    "François",
    "Loïc",
    "Anaïs",
    "Camille",
    "Lucas",
    "Hugo",
    "N'Golo",
)
STORES = (
    "Lyon Part-Dieu",
    "Paris Rivoli",
    "Marseille Prado",
    "Lille Euralille",
    "Nice Étoile",
    "Grenoble Grand'Place",
)


# -- brand tables ----------------------------------------------------------------------------

brand_metadata = sa.MetaData()
customers = sa.Table(
    "customers",
    brand_metadata,
    sa.Column("customer_id", sa.String(16), primary_key=True),
    sa.Column("phone", sa.String(40)),
    sa.Column("first_name", sa.String(80)),
    sa.Column("last_name", sa.String(80)),
    sa.Column("country", sa.String(2)),
    sa.Column("preferred_store", sa.String(80)),
)
consents = sa.Table(
    "whatsapp_consents",
    brand_metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("customer_id", sa.String(16), nullable=False),
    sa.Column("category", sa.String(40), nullable=False),
    sa.Column("status", sa.String(12), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    sa.Index("ix_bench_consents_customer_category", "customer_id", "category", "updated_at"),
)
_MALFORMED = (
    "12345",
    "06 12",
    "+33 6 AB CD EF GH",
    "  ",
    "0033",
    "+999123456789",
    "06-00-00-00-00-00-00",
)


def _customer_rows(count: int, seed: int, messy: bool) -> Iterator[tuple[Any, ...]]:
    """(customer_id, phone, first_name, last_name, country, store): unique valid French mobiles when
    clean; when messy about 80 % E.164, 10 % national format, 4 % Belgian, 3 % malformed, 1 %
    missing and 2 % a phone shared with an earlier customer (the mix a real base has)."""
    rng = random.Random(seed)
    for i in range(count):
        mobile = f"+3361{i:07d}" if i < 10_000_000 else f"+3375{i % 10_000_000:07d}"
        country: str | None = "FR"
        phone: str | None = mobile
        if messy:
            r = rng.random()
            if r < 0.80:
                pass
            elif r < 0.90:
                digits = "0" + mobile[3:]
                phone = " ".join(digits[k : k + 2] for k in range(0, 10, 2))
            elif r < 0.94:
                phone, country = f"+3247{i % 10_000_000:07d}", "BE"
            elif r < 0.97:
                phone = rng.choice(_MALFORMED)
            elif r < 0.98:
                phone, country = None, None
            elif i > 0:
                phone = f"+3361{rng.randrange(i):07d}"
        yield (
            f"C{i:08d}",
            phone,
            FIRST_NAMES[i % len(FIRST_NAMES)],
            "Martin",
            country,
            STORES[(i // 7) % len(STORES)],
        )


def _consent_rows(count: int, seed: int, messy: bool) -> Iterator[tuple[Any, ...]]:
    """(id, customer_id, category, status, updated_at): one current row per customer (opted in when
    clean); when messy 88 % opted in, 6 % opted out, 6 % none, and a quarter with an older row of the
    other status (the latest row wins)."""
    rng = random.Random(seed + 1)
    base = dt.datetime(2025, 6, 1, tzinfo=dt.UTC)
    next_id = 1
    for i in range(count):
        customer_id = f"C{i:08d}"
        when = base + dt.timedelta(minutes=i % 500_000)
        if not messy:
            yield (next_id, customer_id, CONSENT_CATEGORY, "opted_in", when)
            next_id += 1
            continue
        r = rng.random()
        if r < 0.06:
            continue
        status = "opted_in" if r < 0.94 else "opted_out"
        if rng.random() < 0.25:
            older = "opted_out" if status == "opted_in" else "opted_in"
            yield (next_id, customer_id, CONSENT_CATEGORY, older, when - dt.timedelta(days=30))
            next_id += 1
        yield (next_id, customer_id, CONSENT_CATEGORY, status, when)
        next_id += 1


def generate_brand_tables(
    engine: sa.Engine, count: int, *, seed: int = 7, messy: bool = False
) -> dict[str, Any]:
    """Create and fill `customers` and `whatsapp_consents` (bulk: COPY on PostgreSQL, executemany on
    SQLite, the dialect layer's NumPy columns on DuckDB), plus the pipeline's own tables (and the
    state store's, in the same database, unless the warehouse is DuckDB). Returns row counts and
    seconds."""
    started = time.perf_counter()
    brand_metadata.drop_all(engine)
    brand_metadata.create_all(engine)
    create_warehouse_tables(engine)
    if engine.dialect.name == "duckdb":
        counts = _generate_with_loader(engine, count, seed, messy)
        return {**counts, "seconds": round(time.perf_counter() - started, 2)}
    create_state_tables(engine)  # the state store is the same database
    counts = {"customers": 0, "whatsapp_consents": 0}
    raw = engine.raw_connection()
    try:
        cur = raw.cursor()
        if engine.dialect.name == "postgresql":
            with cur.copy(  # type: ignore[attr-defined]
                "COPY customers (customer_id, phone, first_name, last_name, country, preferred_store) FROM STDIN"
            ) as copy:
                for row in _customer_rows(count, seed, messy):
                    copy.write_row(row)
                    counts["customers"] += 1
            with cur.copy(  # type: ignore[attr-defined]
                "COPY whatsapp_consents (id, customer_id, category, status, updated_at) FROM STDIN"
            ) as copy:
                for row in _consent_rows(count, seed, messy):
                    copy.write_row(row)
                    counts["whatsapp_consents"] += 1
            cur.execute("ANALYZE customers")
            cur.execute("ANALYZE whatsapp_consents")
        else:
            cur.execute("BEGIN")
            batch: list[tuple[Any, ...]] = []
            for table, rows, sql in (
                (
                    "customers",
                    _customer_rows(count, seed, messy),
                    "INSERT INTO customers VALUES (?, ?, ?, ?, ?, ?)",
                ),
                (
                    "whatsapp_consents",
                    _consent_rows(count, seed, messy),
                    "INSERT INTO whatsapp_consents VALUES (?, ?, ?, ?, ?)",
                ),
            ):
                for row in rows:
                    if table == "whatsapp_consents":
                        # The text SQLAlchemy's DateTime writes on SQLite.
                        row = (*row[:4], row[4].strftime("%Y-%m-%d %H:%M:%S.%f"))
                    batch.append(row)
                    if len(batch) >= 50_000:
                        cur.executemany(sql, batch)
                        counts[table] += len(batch)
                        batch.clear()
                cur.executemany(sql, batch)
                counts[table] += len(batch)
                batch.clear()
            cur.execute("COMMIT")
            cur.execute("ANALYZE")
        cur.close()
        raw.commit()
    finally:
        raw.close()
    return {**counts, "seconds": round(time.perf_counter() - started, 2)}


def _generate_with_loader(engine: sa.Engine, count: int, seed: int, messy: bool) -> dict[str, int]:
    from outbound_pipeline.warehouse import insert_rows  # the dialect layer (not in older code)

    counts = {}
    with engine.begin() as conn:
        for table, rows in (
            (brand_metadata.tables["customers"], _customer_rows(count, seed, messy)),
            (brand_metadata.tables["whatsapp_consents"], _consent_rows(count, seed, messy)),
        ):
            columns = [c.name for c in table.columns]
            counts[table.name] = 0
            while batch := list(itertools.islice(rows, 50_000)):
                insert_rows(conn, table, batch, columns)
                counts[table.name] += len(batch)
    return counts
