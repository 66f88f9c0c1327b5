"""The generator of hostile rows: every kind of row a brand's tables can hold (valid ones in many
written forms, rule breaks, empty values, opt-outs, bad phones and IDs, duplicates), each written
down with the outcome the rules give it, not computed by pipeline code.

Used by test_hostile_data.py.
"""

from __future__ import annotations

import datetime as dt
import random
from typing import Any

import phonenumbers

from outbound_pipeline_tests.conftest import (
    DAY,
)
from outbound_pipeline_tests.hostile_values import (
    AMOUNTS,
    CATEGORY,
    CODE_BREAKS,
    CODES,
    HEADER_BREAKS,
    NAMES,
    ORDERS,
    STORE_BREAKS,
    STORES,
    Row,
)


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
