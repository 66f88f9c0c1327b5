"""The hostile data's building blocks: the brand's tables (no keys: the brand's data is what it is),
the audience query, the values sent exactly as they are and the values that break a WhatsApp rule
(with the reason and the cleaned value the rules give), and `Row`, one row with its expected outcome.

Used by hostile_rows.py (the generator) and test_hostile_data.py.
"""

from __future__ import annotations

import decimal
from dataclasses import dataclass, field

import sqlalchemy as sa
from babel.numbers import format_currency

KEY = "hostile"
CATEGORY = "offers"
ORDERS = 2000  # orders on the day; a few customers give two rows, so a little more audience rows
HEADER = "Pour {{1}}"
BODY = "Bonjour {{1}}, votre code {{2}} vous attend à {{3}}. Montant : {{4}}."
LONG = "é" * 10_000

brand = sa.MetaData()
# No primary keys: the brand's data is what it is (duplicated and 10,000-character IDs included).
customers = sa.Table(
    "customers",
    brand,
    sa.Column("row_id", sa.Integer),
    sa.Column("customer_id", sa.Text),
    sa.Column("phone", sa.Text),
    sa.Column("country", sa.Text),
    sa.Column("first_name", sa.Text),
)
consents = sa.Table(
    "whatsapp_consents",
    brand,
    sa.Column("customer_id", sa.Text),
    sa.Column("category", sa.Text),
    sa.Column("status", sa.Text),
    sa.Column("updated_at", sa.DateTime),
)
orders = sa.Table(
    "hostile_orders",
    brand,
    sa.Column("seq", sa.Integer),
    sa.Column("customer_id", sa.Text),
    sa.Column("code", sa.Text),
    sa.Column("store", sa.Text),
    sa.Column("amount", sa.Text),
    sa.Column("ready_date", sa.Text),
)

AUDIENCE_SQL = """
SELECT o.customer_id, c.phone, c.country, c.first_name, o.code, o.store, o.amount
FROM hostile_orders AS o
LEFT JOIN customers AS c ON c.customer_id = o.customer_id
WHERE o.ready_date = :partition_date
ORDER BY o.seq, c.row_id
"""

# Values sent exactly as they are: every one is within WhatsApp's rules.
NAMES = [
    "Zoë",
    "O'Brien",
    'Jean "Jojo"',
    "Robert'); DROP TABLE customers;--",
    "😀 Ana",
    "👨‍👩‍👧 Famille",
    "محمد",
    "שרה כהן",
    "e\u0301lodie",
    "Z̴̡a̶l̷g̵o",
    "李小龙",
    "a    b",
    "%s {0} {{1}}",
    "\\N",
    "NULL",
    "  Léa",
    "\u202eevil",
    "x" * 60,
    "😀" * 30,
]
CODES = [
    "A-1",
    "' OR 1=1 --",
    "$1 \\1 \\g<0>",
    "🎁🎁",
    "x" * 1024,
    "0",
    "; SELECT pg_sleep(10);",
    "{{2}}",
]
STORES = [
    "Lyon Part-Dieu",
    "Saint-Étienne",
    "🏬 Centre",
    "القاهرة",
    "תל אביב",
    "Ω\u0301mega",
    "NaN",
]
AMOUNTS = ["12.5", "0", "1234567.891", "-3", "1e3", " 7 "]

# (value that breaks a rule, the reason under policy 'skip', the value sent under policy 'clean')
HEADER_BREAKS = [("N" * 61, "longer_than_60_characters", "N" * 59 + "…")]
CODE_BREAKS = [
    ("A\nB", "newline_or_tab", "A B"),
    ("A\tB", "newline_or_tab", "A B"),
    ("A\r\n\r\nB", "newline_or_tab", "A B"),
    ("A\x1b[0mB", "control_character", "A[0mB"),  # ESC (PostgreSQL text cannot hold NUL)
    ("x" * 1025, "longer_than_1024_characters", "x" * 1023 + "…"),
]
STORE_BREAKS = [
    ("x     y", "more_than_4_consecutive_spaces", "x    y"),
    ("x\u00a0\u00a0\u00a0\u00a0\u00a0y", "more_than_4_consecutive_spaces", "x    y"),
    (LONG, "longer_than_1024_characters", "é" * 1023 + "…"),
]


@dataclass
class Row:
    """One row of the audience query's result and the outcome the rules give it."""

    customer_id: str | None
    phone: str | None
    country: str | None
    first_name: str | None
    code: str | None
    store: str | None
    amount: str | None
    reason: str | None = None  # the skip reason; None: sent
    recipient: str | None = None
    clean_reason: str | None = "same"  # under policy 'clean', when it differs from `reason`
    cleaned: dict[str, str] = field(default_factory=dict)  # column -> value sent under 'clean'

    def outcome(self, policy: str) -> str | None:
        return self.reason if policy == "skip" or self.clean_reason == "same" else self.clean_reason

    def params(self, policy: str) -> tuple[list[str], list[str]]:
        cleaned = self.cleaned if policy == "clean" else {}
        amount = format_currency(decimal.Decimal(str(self.amount).strip()), "EUR", locale="fr")
        # Cleaning is per parameter: a first name too long for the header (60) is whole in the body.
        header = [cleaned.get("first_name", self.first_name)]
        body = [
            self.first_name,
            cleaned.get("code", self.code),
            cleaned.get("store", self.store),
            amount,
        ]
        return header, body  # type: ignore[return-value]
