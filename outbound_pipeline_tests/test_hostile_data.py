"""Hostile data through the whole pipeline, on SQLite and PostgreSQL, with the sandbox over a socket.

A brand's tables are built here with a few thousand rows mixing quotes, SQL fragments, emoji,
right-to-left text, combining characters, 10,000-character strings, NULLs, whitespace-only strings,
duplicated customer IDs, shared phones, phones with letters, opt-outs and missing consents. Each row
is generated with the outcome it must get, written down from the rules (not computed by pipeline
code): sent with exactly these parameters, or skipped with exactly this reason. Then:

- the run completes;
- the sandbox receives exactly the expected messages, each rendered exactly, each recipient once;
- every row the audience query returned has one ledger outcome with that reason;
- the day's figures add up.
"""

from __future__ import annotations

import datetime as dt
import decimal
import random
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import phonenumbers
import pytest
import sqlalchemy as sa
import yaml
from babel.numbers import format_currency

from outbound_pipeline.audience import AudienceQueryError, audience_sql, extract
from outbound_pipeline.config import OutboundConfig, load_config
from outbound_pipeline.demo import customers_table
from outbound_pipeline.iadvize import forget_tokens
from outbound_pipeline.ledger import send_ledger
from outbound_pipeline.sandbox import SandboxServer
from outbound_pipeline.warehouse import audience, daily_stats, deliveries
from outbound_pipeline.whatsapp import mask
from outbound_pipeline_tests.conftest import (
    DAY,
    Warehouse,
    materialize_campaign,
    resources_for,
    seeded_postgres_warehouse,
)

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


class Generator:
    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.used_phones: set[str] = set()
        self.customers: list[dict[str, Any]] = []
        self.consents: list[dict[str, Any]] = []
        self.orders: list[dict[str, Any]] = []
        self.rows: list[Row] = []  # in the query's order
        self.valid: list[Row] = []  # sent rows of plain customers, for duplicates to point at
        self.n = 0
        self.blank_ids = 0

    # -- building blocks --------------------------------------------------------------------------

    def mobile(self, prefix: str = "+336", digits: int = 8) -> str:
        while True:
            e164 = prefix + "".join(self.rng.choice("0123456789") for _ in range(digits))
            if e164 not in self.used_phones and phonenumbers.is_valid_number(
                phonenumbers.parse(e164)
            ):
                self.used_phones.add(e164)
                return e164

    def consent(self, customer_id: str | None, *history: str, category: str = CATEGORY) -> None:
        # Timestamps out of insertion order: the latest by updated_at is the current state.
        base = dt.datetime(2026, 1, 1) + dt.timedelta(minutes=self.rng.randrange(100_000))
        for i, status in reversed(list(enumerate(history))):
            self.consents.append(
                {
                    "customer_id": customer_id,
                    "category": category,
                    "status": status,
                    "updated_at": base + dt.timedelta(hours=i),
                }
            )

    def add(self, row: Row, *, customer_rows: int = 1, order: bool = True, day: str = DAY) -> Row:
        self.n += 1
        if order:
            self.orders.append(
                {
                    "seq": self.n,
                    "customer_id": row.customer_id,
                    "code": row.code,
                    "store": row.store,
                    "amount": row.amount,
                    "ready_date": day,
                }
            )
        if customer_rows and row.customer_id is not None:
            self.customers.append(
                {
                    "row_id": self.n,
                    "customer_id": row.customer_id,
                    "phone": row.phone,
                    "country": row.country,
                    "first_name": row.first_name,
                }
            )
        if day == DAY:
            self.rows.append(row)
        return row

    def fresh(self, **values: Any) -> Row:
        """A consented customer with valid values, then `values` on top."""
        n = self.n + 1
        e164 = self.mobile()
        row = Row(
            customer_id=f"cust-{n}",
            phone=e164,
            country=None,
            first_name=self.rng.choice(NAMES),
            code=self.rng.choice(CODES),
            store=self.rng.choice(STORES),
            amount=self.rng.choice(AMOUNTS),
            recipient=e164,
        )
        for name, value in values.items():
            setattr(row, name, value)
        return row

    # -- the kinds of rows ------------------------------------------------------------------------

    def valid_row(self) -> None:
        row = self.fresh(
            customer_id=self.rng.choice(
                ["cust-{n}", "o'hara-{n}", '"; DROP TABLE x; --{n}', "ü-{n}"]
            ).format(n=self.n + 1)
        )
        style = self.rng.randrange(6)
        if style == 1:  # national format read with the customer's country
            row.phone, row.country = "0" + row.recipient[3:4] + " " + row.recipient[4:], "FR"  # type: ignore[index]
        elif style == 2:  # national format, no country: the campaign's region
            row.phone = "0" + row.recipient[3:]  # type: ignore[index]
        elif style == 3:
            row.phone = "00" + row.recipient[1:]  # type: ignore[index]
        elif style == 4:  # Belgian number written nationally, country BE
            row.recipient = self.mobile("+324", 8)
            row.phone, row.country = "0" + row.recipient[3:], "BE"
        elif style == 5:  # British mobile in international format with separators
            row.recipient = self.mobile("+447", 9)
            row.phone = f"+44 {row.recipient[3:7]} {row.recipient[7:]}"
        if self.rng.random() < 0.2:
            self.consent(row.customer_id, "opted_in", "opted_out", "opted_in")
        else:
            self.consent(row.customer_id, "opted_in")
        self.valid.append(self.add(row))

    def render_skip(self) -> None:
        column, (value, rule, cleaned) = self.rng.choice(
            [("first_name", b) for b in HEADER_BREAKS]
            + [("code", b) for b in CODE_BREAKS]
            + [("store", b) for b in STORE_BREAKS]
        )
        label = {
            "first_name": "header {{1}} (first_name)",
            "code": "body {{2}} (code)",
            "store": "body {{3}} (store)",
        }[column]
        row = self.fresh(
            **{column: value},
            reason=f"parameter_rule: {label} {rule}",
            clean_reason=None,
            cleaned={column: cleaned},
        )
        self.consent(row.customer_id, "opted_in")
        self.add(row)

    def empty_value(self) -> None:
        column, value, label = self.rng.choice(
            [
                ("code", None, "body {{2}} (code)"),
                ("store", "   ", "body {{3}} (store)"),
                ("store", "\t\n", "body {{3}} (store)"),
                ("first_name", "\u200b\u200f", "header {{1}} (first_name)"),
                ("first_name", None, "header {{1}} (first_name)"),
                ("amount", None, "body {{4}} (amount)"),
            ]
        )
        row = self.fresh(**{column: value}, reason=f"empty_value: {label} is empty")
        self.consent(row.customer_id, "opted_in")
        self.add(row)

    def unformattable(self) -> None:
        row = self.fresh(
            amount=self.rng.choice(["NaN", "Infinity", "12,5", "abc", "1 000"]),
            reason="unformattable_value: body {{4}} (amount) is not a currency",
        )
        self.consent(row.customer_id, "opted_in")
        self.add(row)

    def audience_skip(self) -> None:
        kind = self.rng.randrange(13)
        row = self.fresh()
        if kind == 0:
            row.reason = "opted_out"
            self.consent(row.customer_id, "opted_in", "opted_out")
        elif kind == 1:  # opt-in and opt-out at the same instant: doubt never sends
            row.reason = "opted_out"
            self.consents.append(
                {
                    "customer_id": row.customer_id,
                    "category": CATEGORY,
                    "status": "opted_in",
                    "updated_at": dt.datetime(2026, 5, 1),
                }
            )
            self.consents.append(
                {
                    "customer_id": row.customer_id,
                    "category": CATEGORY,
                    "status": "opted_out",
                    "updated_at": dt.datetime(2026, 5, 1),
                }
            )
        elif kind == 2:
            row.reason = "no_consent"
        elif kind == 3:
            row.reason = "no_consent"
            self.consent(row.customer_id, "opted_in", category="order_updates")
        else:
            self.consent(row.customer_id, "opted_in")
            row.phone, row.reason = {
                4: ("06 12 AB 56 78", "phone_has_letters"),
                5: ("+33 6 12", "phone_invalid"),
                6: (None, "phone_missing"),
                7: ("   ", "phone_missing"),
                8: ("6" * 10_000, "phone_too_long"),
                9: (
                    "+1 202-555-" + f"{self.rng.randrange(10_000):04d}",
                    "marketing_not_delivered_to_us",
                ),
                10: ("Robert'); DROP TABLE customers;--", "phone_has_letters"),
                11: ("06 12 34 56", "phone_invalid"),
                12: ("+33 6 ١٢ ٣٤ ٥٦", "phone_invalid"),
            }[kind]
        self.add(row)

    def bad_customer_id(self) -> None:
        kind = self.rng.randrange(3)
        if kind == 0:  # the order has no customer: the join gives no phone either
            row = self.fresh(
                customer_id=None,
                phone=None,
                country=None,
                first_name=None,
                reason="customer_id_missing",
            )
            self.add(row, customer_rows=0)
        # Unique IDs: a repeated one would join every customer row holding it (another case).
        elif kind == 1:
            self.blank_ids += 1
            row = self.fresh(customer_id=" " * self.blank_ids, reason="customer_id_missing")
            self.consent(row.customer_id, "opted_in")
            self.add(row)
        else:
            row = self.fresh(
                customer_id=f"{self.n:06d}".ljust(10_000, "C"), reason="customer_id_too_long"
            )
            self.consent(row.customer_id, "opted_in")
            self.add(row)

    def duplicate(self) -> None:
        kind = self.rng.randrange(3)
        first = self.rng.choice(self.valid)
        if kind == 0:  # another consented customer sharing an earlier recipient's phone
            row = self.fresh(
                phone=first.phone,
                country=first.country,
                recipient=first.recipient,
                reason="duplicate_recipient",
            )
            self.consent(row.customer_id, "opted_in")
            self.add(row)
        elif kind == 1:  # the same customer ordered twice: the join repeats its only customer row
            row = Row(
                first.customer_id,
                first.phone,
                first.country,
                first.first_name,
                "B-2",
                "Lyon",
                "1",
                reason="duplicate_recipient",
                recipient=first.recipient,
            )
            self.add(row, customer_rows=0)
        else:  # a customer ID with two phones in `customers`: the first row keeps the message
            keep = self.fresh(customer_id=f"twice-{self.n + 1}")
            self.consent(keep.customer_id, "opted_in")
            self.valid_twin(keep)

    def valid_twin(self, keep: Row) -> None:
        self.add(keep)
        other = self.mobile()
        twin = Row(
            keep.customer_id,
            other,
            None,
            "Autre",
            keep.code,
            keep.store,
            keep.amount,
            reason="duplicate_customer",
            recipient=other,
        )
        self.n += 1
        self.customers.append(
            {
                "row_id": self.n,
                "customer_id": twin.customer_id,
                "phone": other,
                "country": None,
                "first_name": "Autre",
            }
        )
        self.rows.append(twin)

    def generate(self) -> None:
        for _ in range(30):
            self.valid_row()
        kinds = (
            [self.valid_row] * 10
            + [self.render_skip] * 3
            + [self.empty_value, self.unformattable]
            + [self.audience_skip] * 4
            + [self.bad_customer_id, self.duplicate]
        )
        while len(self.orders) < ORDERS:
            self.rng.choice(kinds)()
        # Another day's orders: not in this partition's audience.
        for _ in range(25):
            row = self.fresh()
            self.consent(row.customer_id, "opted_in")
            self.add(row, day="2026-11-25")


@pytest.fixture(scope="module")
def generated() -> Generator:
    generator = Generator(seed=20261124)
    generator.generate()
    return generator


def _write_config(tmp_path: Path, policy: str) -> OutboundConfig:
    raw = {
        "templates": [
            {
                "name": "hostile_offer_v1",
                "language": "fr",
                "category": "MARKETING",
                "header": HEADER,
                "body": BODY,
            }
        ],
        "campaigns": [
            {
                "key": KEY,
                "campaign_id": "7a1c2e4b-0d3f-4a5e-8b6c-9d0e1f2a3b4c",
                # Its own sender: the process paces a sender at the lowest rate any campaign gave it,
                # and the demo campaigns of other tests give theirs 80 messages/s.
                "sender": "+33644646099",
                "template": "hostile_offer_v1",
                "language": "fr",
                "consent_category": CATEGORY,
                "audience_sql": AUDIENCE_SQL,
                "variables": {
                    "header": {1: "first_name"},
                    "body": {
                        1: "first_name",
                        2: "code",
                        3: "store",
                        4: {"column": "amount", "format": "currency", "currency": "EUR"},
                    },
                },
                "phone_region": "FR",
                "country_column": "country",
                "parameter_policy": policy,
                "start_date": "2026-01-01",
                "messaging_limit": {"tier": "unlimited"},
                "max_send_rate": 1000,
                "min_interval_seconds": 0,
            }
        ],
    }
    path = tmp_path / "hostile.yaml"
    path.write_text(yaml.safe_dump(raw, allow_unicode=True), encoding="utf-8")
    return load_config(path)


@pytest.fixture
def hostile_sandbox(tmp_path: Path) -> Iterator[tuple[OutboundConfig, SandboxServer]]:
    config = _write_config(tmp_path, "skip")
    forget_tokens()
    with SandboxServer(config.templates) as server:
        yield config, server
    forget_tokens()


def _load_brand_tables(engine: sa.Engine, generator: Generator) -> None:
    brand.create_all(engine)
    with engine.begin() as conn:
        conn.execute(sa.insert(customers), generator.customers)
        conn.execute(sa.insert(consents), generator.consents)
        conn.execute(sa.insert(orders), generator.orders)


def _expected_text(header: list[str], body: list[str]) -> str:
    # Written out with str.replace, independently of the pipeline's renderer; values hold no '{{'
    # that a later replacement could hit, except on purpose ('{{1}}', '{{2}}'), so substitute from a
    # split of the template instead.
    def fill(template: str, values: list[str]) -> str:
        out = template
        for i in range(len(values), 0, -1):
            out = out.replace(f"{{{{{i}}}}}", f"\x00{i}\x00")
        parts = out.split("\x00")
        return "".join(values[int(p) - 1] if k % 2 else p for k, p in enumerate(parts))

    return fill(HEADER, header) + "\n" + fill(BODY, body)


@pytest.mark.parametrize("policy", ["skip", "clean"])
def test_hostile_rows_are_sent_exactly_or_skipped_with_a_reason(
    warehouse: Warehouse,
    generated: Generator,
    hostile_sandbox: tuple[OutboundConfig, SandboxServer],
    tmp_path: Path,
    policy: str,
) -> None:
    if warehouse.kind == "postgres" and policy == "clean":
        pytest.skip(
            "policy 'clean' only changes rendering, which is the same Python on both backends"
        )
    config = _write_config(tmp_path, policy)
    _, sandbox = hostile_sandbox
    _load_brand_tables(warehouse.engine, generated)
    rows = generated.rows
    kinds = Counter((r.outcome(policy) or "sent").split(":")[0] for r in rows)
    # The mix is what the test claims: every kind of row is there, in numbers.
    assert len(rows) > ORDERS and kinds["sent"] > 800
    for reason in (
        "parameter_rule",
        "empty_value",
        "unformattable_value",
        "opted_out",
        "no_consent",
        "phone_has_letters",
        "phone_invalid",
        "phone_missing",
        "phone_too_long",
        "marketing_not_delivered_to_us",
        "customer_id_missing",
        "customer_id_too_long",
        "duplicate_recipient",
        "duplicate_customer",
    ):
        assert kinds[reason] >= (5 if policy == "skip" or reason != "parameter_rule" else 0), reason

    result = materialize_campaign(config, KEY, resources_for(warehouse, sandbox))
    assert result.success

    # Every row the audience query returned has one outcome, with the reason the rules give.
    with warehouse.engine.connect() as conn:
        ledger = conn.execute(
            sa.select(
                audience.c.row_number,
                deliveries.c.status,
                deliveries.c.reason,
                deliveries.c.recipient,
                deliveries.c.message_text,
            )
            .select_from(
                audience.outerjoin(
                    deliveries,
                    sa.and_(
                        deliveries.c.campaign_key == audience.c.campaign_key,
                        deliveries.c.partition_date == audience.c.partition_date,
                        deliveries.c.row_key == audience.c.row_key,
                    ),
                )
            )
            .where(audience.c.campaign_key == KEY, audience.c.partition_date == DAY)
            .order_by(audience.c.row_number)
        ).all()
        stats = (
            conn.execute(
                sa.select(daily_stats).where(
                    daily_stats.c.campaign_key == KEY, daily_stats.c.partition_date == DAY
                )
            )
            .mappings()
            .one()
        )
    assert [r.row_number for r in ledger] == list(range(len(rows))), (
        "one ledger row per audience row"
    )
    mismatches = []
    for row, outcome in zip(rows, ledger, strict=True):
        want = row.outcome(policy)
        got = (outcome.status, outcome.reason if outcome.status != "sent" else None)
        if got != ("skipped" if want else "sent", want) or (
            want is None and outcome.recipient != row.recipient
        ):
            mismatches.append(
                (outcome.row_number, repr(row.customer_id)[:40], repr(row.phone)[:40], want, got)
            )
    assert not mismatches, mismatches[:10]
    assert all(r.reason for r in ledger), "every outcome has a reason"

    # The sandbox received exactly the expected messages, each rendered exactly, each recipient once.
    expected = {r.recipient: r for r in rows if r.outcome(policy) is None}
    received = sandbox.messages()
    by_recipient = {f"+{m['recipient_id']}": m for m in received}
    assert len(by_recipient) == len(received), "a recipient received two messages"
    assert set(by_recipient) == set(expected)
    for recipient, message in by_recipient.items():
        header, body = expected[recipient].params(policy)
        assert (message["header_variables"], message["body_variables"]) == (header, body), recipient
        assert message["message_text"] == _expected_text(header, body)
        assert message["campaign_id"] == config.campaign(KEY).campaign_id

    # The figures add up.
    sent = len(expected)
    assert (stats["audience_rows"], stats["sent"], stats["skipped"]) == (
        len(rows),
        sent,
        len(rows) - sent,
    )
    assert (stats["failed"], stats["deferred"], stats["unknown"], stats["pending"]) == (0, 0, 0, 0)
    eligible_rows = sum(1 for r in rows if (r.reason or "").split(":")[0] not in _AUDIENCE_REASONS)
    assert stats["eligible"] == eligible_rows
    assert stats["rendered"] == sent


_AUDIENCE_REASONS = {
    "opted_out",
    "no_consent",
    "phone_has_letters",
    "phone_invalid",
    "phone_missing",
    "phone_too_long",
    "phone_unparseable",
    "marketing_not_delivered_to_us",
    "customer_id_missing",
    "customer_id_too_long",
    "duplicate_recipient",
    "duplicate_customer",
}


def _failure_message(result: Any) -> str:
    """The audience step's error and its causes, as the UI shows them."""
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    assert failure.step_key == f"{KEY}__audience"
    messages, error = [], failure.event_specific_data.error
    while error is not None:
        messages.append(error.message)
        error = error.cause
    return "\n".join(messages)


def test_an_audience_query_without_the_needed_columns_fails_before_any_send(
    warehouse: Warehouse,
    generated: Generator,
    hostile_sandbox: tuple[OutboundConfig, SandboxServer],
) -> None:
    config, sandbox = hostile_sandbox
    _load_brand_tables(warehouse.engine, generated)
    campaign = config.campaign(KEY)
    broken = config.model_copy(
        update={
            "campaigns": [
                campaign.model_copy(
                    update={
                        "audience_sql": AUDIENCE_SQL.replace(
                            "o.code, o.store", "o.code AS promo_code"
                        )
                    }
                )
            ]
        }
    )
    result = materialize_campaign(
        broken, KEY, resources_for(warehouse, sandbox), raise_on_error=False
    )
    assert not result.success
    message = _failure_message(result)
    assert (
        "campaign hostile: the audience query does not return the column(s) code, store" in message
    )
    assert sandbox.messages() == []

    failing = config.model_copy(
        update={
            "campaigns": [
                campaign.model_copy(
                    update={"audience_sql": "SELECT * FROM no_such_table WHERE d = :partition_date"}
                )
            ]
        }
    )
    result = materialize_campaign(
        failing, KEY, resources_for(warehouse, sandbox), raise_on_error=False
    )
    message = _failure_message(result)
    assert (
        "campaign hostile: the audience query failed for 2026-11-24" in message
        and "no_such_table" in message
    )
    assert sandbox.messages() == []
    with warehouse.engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(send_ledger)).scalar_one() == 0


@pytest.mark.postgres
def test_an_audience_query_error_that_quotes_a_phone_number_shows_it_masked(
    demo_config: OutboundConfig,
) -> None:
    # PostgreSQL quotes the value a cast choked on; the error reaches the run's log and the UI.
    with seeded_postgres_warehouse(customers=40) as warehouse:
        with warehouse.engine.connect() as conn:
            phones = [p for p in conn.execute(sa.select(customers_table.c.phone)).scalars() if p]
        campaign = demo_config.campaign("order_ready")
        casting = campaign.model_copy(
            update={
                "audience_sql": "SELECT customer_id, CAST(phone AS bigint) AS phone, first_name FROM customers "
                "WHERE CAST(:partition_date AS date) IS NOT NULL ORDER BY customer_id"
            }
        )
        with pytest.raises(AudienceQueryError) as failure:
            extract(warehouse.engine, casting, demo_config, DAY, "run")
    text = str(failure.value)
    assert "campaign order_ready: the audience query failed" in text and "bigint" in text
    assert not [p for p in phones if p in text], f"a full phone number in: {text}"
    assert [p for p in phones if mask(p) in text], f"no masked phone number in: {text}"


def test_values_reach_sql_only_as_bound_parameters(
    warehouse: Warehouse,
    generated: Generator,
    hostile_sandbox: tuple[OutboundConfig, SandboxServer],
) -> None:
    config, _ = hostile_sandbox
    _load_brand_tables(warehouse.engine, generated)
    category = "offers'); DROP TABLE whatsapp_consents; --"
    chosen = generated.valid[:5]
    with warehouse.engine.begin() as conn:
        conn.execute(
            sa.insert(consents),
            [
                {
                    "customer_id": r.customer_id,
                    "category": category,
                    "status": "opted_in",
                    "updated_at": dt.datetime(2026, 6, 1),
                }
                for r in chosen
            ],
        )
    campaign = config.campaign(KEY).model_copy(update={"consent_category": category})
    hostile_config = config.model_copy(update={"campaigns": [campaign]})
    sql = audience_sql(campaign, hostile_config, warehouse.engine.dialect)
    assert category not in sql and DAY not in sql and ":outbound_consent_category" in sql

    summary = extract(warehouse.engine, campaign, hostile_config, DAY, "run")
    assert summary.rows == len(generated.rows)
    assert summary.eligible == len(chosen)  # only the customers opted in under that exact category
    with warehouse.engine.connect() as conn:
        eligible = set(
            conn.execute(
                sa.select(audience.c.customer_id).where(
                    audience.c.campaign_key == KEY, audience.c.eligible == sa.true()
                )
            ).scalars()
        )
        assert eligible == {r.customer_id for r in chosen}
        assert conn.execute(sa.select(sa.func.count()).select_from(consents)).scalar_one() == len(
            generated.consents
        ) + len(chosen)
