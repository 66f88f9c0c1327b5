"""Demo warehouse: the brand tables the bundled campaigns read, filled with realistic, messy data.

Only the embedded default warehouse is seeded (see `warehouse.ensure_demo_seeded`). The data is
deterministic for a given seed and deliberately imperfect, so that a fresh checkout exercises every
rule of the pipeline: phones in national format, foreign and malformed numbers, phones shared by a
family, consent histories that changed over time, names with accents and apostrophes.

Tables (SQLAlchemy Core, portable between SQLite and PostgreSQL):

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

import datetime as dt
import random
from collections.abc import Callable, Iterable, Sequence
from decimal import Decimal
from typing import Any

import phonenumbers
import sqlalchemy as sa

DEMO_TABLES: tuple[str, ...] = ("customers", "whatsapp_consents", "orders", "offer_calendar")
CONSENT_CATEGORIES: tuple[str, ...] = ("order_updates", "offers")
# Orders and the offer calendar cover every partition a demo run is likely to ask for.
FIRST_DAY = dt.date(2026, 1, 1)
LAST_DAY = dt.date(2027, 12, 31)
OFFER_SEGMENTS = 7
_CHUNK = 5_000

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

STORES: tuple[str, ...] = (
    "Lyon Part-Dieu",
    "Paris Rivoli",
    "Paris La Défense",
    "Marseille Prado",
    "Toulouse Wilson",
    "Bordeaux Sainte-Catherine",
    "Lille Euralille",
    "Villeneuve-d'Ascq V2",
    "Nantes Atlantis",
    "Strasbourg Kléber",
    "Nice Étoile",
    "Montpellier Odysseum",
    "Rennes Alma",
    "Grenoble Grand'Place",
)

# fmt: off
FR_FIRST_NAMES: tuple[str, ...] = (
    "Zoé", "Élodie", "Chloé", "Hélène", "Léa", "Noémie", "Jérôme", "François", "Loïc", "Anaïs",
    "Maëlle", "Raphaël", "Benoît", "Cédric", "Gaëlle", "Inès", "Joël", "Mélanie", "Agnès", "Céline",
    "Camille", "Lucas", "Hugo", "Emma", "Louis", "Manon", "Nathan", "Sarah", "Julien", "Thomas",
    "Marie", "Pierre", "Sophie", "Nicolas", "Claire", "Antoine", "Laura", "Maxime", "Julie", "Paul",
    "Jean-Luc", "Marie-Hélène", "Anne-Sophie", "N'Golo", "D'Arcy", "Yasmine", "Mamadou", "Aïcha",
)
FR_LAST_NAMES: tuple[str, ...] = (
    "Martin", "Bernard", "Dubois", "Thomas", "Robert", "Richard", "Petit", "Durand", "Leroy",
    "Moreau", "Simon", "Laurent", "Lefèvre", "Michel", "Garcia", "David", "Bertrand", "Roux",
    "Vincent", "Fournier", "Morel", "Girard", "André", "Mercier", "Dupont", "Lambert", "Bonnet",
    "François", "Gonçalves", "N'Diaye", "Le Gall", "de La Fontaine", "Traoré", "Nguyen", "Müller",
)
BE_FIRST_NAMES: tuple[str, ...] = ("Wout", "Lotte", "Sien", "Maxime", "Amélie", "Thibault", "Noé")
BE_LAST_NAMES: tuple[str, ...] = ("Peeters", "Janssens", "Maes", "Dubois", "Lemaire", "Claes")
US_FIRST_NAMES: tuple[str, ...] = ("Emily", "Michael", "Jessica", "Dwayne", "Siobhán", "O'Shea")
US_LAST_NAMES: tuple[str, ...] = ("Smith", "Johnson", "O'Brien", "Williams", "Brown")

# fmt: on

# Area codes with the fictional 555-01XX exchange: valid for libphonenumber, nobody's phone.
US_AREA_CODES: tuple[str, ...] = ("212", "415", "312", "617", "305", "206", "512", "303")

OFFERS: tuple[str, ...] = (
    "-20 % sur tout le rayon hiver",
    "10 € offerts dès 50 € d'achat",
    "-30 % sur le deuxième article",
    "-15 % sur les manteaux",
)
# fmt: off
FRENCH_MONTHS: tuple[str, ...] = (
    "janvier", "février", "mars", "avril", "mai", "juin",
    "juillet", "août", "septembre", "octobre", "novembre", "décembre",
)

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
    customer_rows = _customers(rng, customers)
    consent_rows = _consents(rng, [row["customer_id"] for row in customer_rows])
    order_rows = _orders(rng, customer_rows)
    calendar_rows = _offer_calendar()

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


# --- customers -------------------------------------------------------------------------------


def _digits(rng: random.Random, count: int) -> str:
    return "".join(rng.choice("0123456789") for _ in range(count))


def _valid(e164: str) -> bool:
    return phonenumbers.is_valid_number(phonenumbers.parse(e164, None))


def _unique_valid(used: set[str], make: Callable[[], str]) -> str:
    while True:
        candidate = make()
        if candidate not in used and _valid(candidate):
            used.add(candidate)
            return candidate


def _french_mobile(rng: random.Random, used: set[str]) -> str:
    # Mostly 06, some 07, as in the French mobile plan.
    return _unique_valid(
        used, lambda: "+33" + rng.choices("67", weights=(75, 25))[0] + _digits(rng, 8)
    )


def _national(e164: str, rng: random.Random) -> str:
    """'+33612345678' -> '06 12 34 56 78' or '0612345678', as customers type them in forms."""
    national = "0" + e164[3:]
    if rng.random() < 0.5:
        return " ".join(national[i : i + 2] for i in range(0, 10, 2))
    return national


def _malformed(rng: random.Random) -> str | None:
    kind = rng.randrange(5)
    if kind == 0:
        return "+33 6 " + _digits(rng, 2)  # too short
    if kind == 1:
        return f"+33 6 {_digits(rng, 2)} AB {_digits(rng, 2)} {_digits(rng, 2)}"  # letters
    if kind == 2:
        return ""
    if kind == 3:
        return None
    return "06" + _digits(rng, 5)  # truncated national number


def _customers(rng: random.Random, count: int) -> list[dict[str, Any]]:
    used: set[str] = set()
    rows: list[dict[str, Any]] = []
    epoch = dt.datetime(2019, 1, 1, tzinfo=dt.UTC)
    for index in range(1, count + 1):
        draw = rng.random()
        if draw < 0.08:
            country = "BE"
            phone: str | None = _unique_valid(used, lambda: "+324" + _digits(rng, 8))
            first, last = rng.choice(BE_FIRST_NAMES), rng.choice(BE_LAST_NAMES)
        elif draw < 0.11:
            country = "US"
            phone = _unique_valid(
                used, lambda: f"+1{rng.choice(US_AREA_CODES)}55501{_digits(rng, 2)}"
            )
            first, last = rng.choice(US_FIRST_NAMES), rng.choice(US_LAST_NAMES)
        else:
            country = "FR"
            first, last = rng.choice(FR_FIRST_NAMES), rng.choice(FR_LAST_NAMES)
            if draw < 0.13:
                phone = _malformed(rng)
            elif draw < 0.23:
                phone = _national(_french_mobile(rng, used), rng)
            else:
                phone = _french_mobile(rng, used)
        tier = rng.choices(("gold", "silver", "bronze"), weights=(18, 35, 47))[0]
        rows.append(
            {
                "customer_id": f"C{index:06d}",
                "phone": phone,
                "first_name": first,
                "last_name": last,
                "country": country,
                "loyalty_tier": tier,
                "preferred_store": rng.choice(STORES),
                "offer_segment": index % OFFER_SEGMENTS,
                "created_at": epoch + dt.timedelta(seconds=rng.randrange(7 * 365 * 86_400)),
            }
        )
    _share_family_phones(rng, rows)
    return rows


def _share_family_phones(rng: random.Random, rows: list[dict[str, Any]]) -> None:
    # About 1 customer in 150 shares a French mobile with another (a household): two customer_ids,
    # one recipient; the pipeline must not message that phone twice in a day.
    french = [
        row
        for row in rows
        if row["country"] == "FR" and row["phone"] and str(row["phone"]).startswith("+33")
    ]
    pairs = min(len(french) // 2, max(1, len(rows) // 150)) if len(french) >= 2 else 0
    chosen = rng.sample(french, pairs * 2)
    for owner, relative in zip(chosen[::2], chosen[1::2], strict=True):
        relative["phone"] = owner["phone"]
        relative["last_name"] = owner["last_name"]


# --- consents --------------------------------------------------------------------------------


def _consents(rng: random.Random, customer_ids: Sequence[str]) -> list[dict[str, Any]]:
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


# --- orders and the offer calendar -----------------------------------------------------------


def _days() -> Iterable[dt.date]:
    day = FIRST_DAY
    while day <= LAST_DAY:
        yield day
        day += dt.timedelta(days=1)


def _orders(rng: random.Random, customers: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    per_day = [(day, rng.randint(20, 40)) for day in _days()]
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


def french_date(day: dt.date) -> str:
    """2026-12-08 -> '8 décembre 2026': a template parameter needs the text, not the date."""
    return f"{day.day} {FRENCH_MONTHS[day.month - 1]} {day.year}"


def _offer_calendar() -> list[dict[str, Any]]:
    """One row per date: weekdays rotate through the segments, so a Monday-to-Friday schedule
    reaches every segment once in 7 business days; Saturday and Sunday repeat Friday's segment
    (a manual run on a weekend still has an audience)."""
    rows: list[dict[str, Any]] = []
    business_day = -1
    for day in _days():
        if day.weekday() < 5 or business_day < 0:
            business_day += 1
        rows.append(
            {
                "offer_date": day,
                "segment": business_day % OFFER_SEGMENTS,
                "offer_label": OFFERS[(business_day // OFFER_SEGMENTS) % len(OFFERS)],
                "valid_until": french_date(day + dt.timedelta(days=7)),
            }
        )
    return rows
