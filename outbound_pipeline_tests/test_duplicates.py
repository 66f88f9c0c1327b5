"""One message per phone and per customer a day: the first eligible row in query order keeps it,
whichever chunk of the stream the later rows arrive in."""

from __future__ import annotations

import datetime as dt
from collections import Counter
from typing import Any

import pytest
import sqlalchemy as sa

from outbound_pipeline.audience import extract
from outbound_pipeline.audience.duplicates import FirstEligible
from outbound_pipeline.config import OutboundConfig
from outbound_pipeline.demo.tables import orders_table
from outbound_pipeline.warehouse import audience
from outbound_pipeline_tests.stores import Warehouse

COLUMNS = tuple(audience.c.keys())


def _row(customer: str | None, recipient: str | None, eligible: bool = True) -> list[Any]:
    row: list[Any] = [None] * len(COLUMNS)
    row[COLUMNS.index("customer_id")] = customer
    row[COLUMNS.index("recipient")] = recipient
    row[COLUMNS.index("eligible")] = eligible
    row[COLUMNS.index("reason")] = None if eligible else "opted_out"
    return row


def test_later_rows_of_a_phone_or_customer_are_marked_across_chunks() -> None:
    chunks = [
        [
            _row("c1", "+33612345678"),
            _row("c2", "+33698765432", eligible=False),  # not eligible: keeps nothing
        ],
        [
            _row("c3", "+33612345678"),  # the phone of c1: duplicate_recipient
            _row("c2", "+33698765432"),  # first eligible row of c2 and of its phone
            _row("c1", "+33611111111"),  # c1 with another phone: duplicate_customer
        ],
        [
            # c3's row was a duplicate phone: it did not claim c3, so this row keeps it.
            _row("c3", "+33622222222"),
            _row("c4", "+33611111111"),  # a phone only a duplicate row had: it still counts
            _row(None, "+33633333333"),  # no customer ID: only its phone is compared
        ],
    ]
    reasons: Counter[str] = Counter(eligible=8)
    first = FirstEligible()
    marked = [first.mark(chunk, reasons) for chunk in chunks]

    def outcome(row: list[Any]) -> tuple[bool, str | None]:
        return row[COLUMNS.index("eligible")], row[COLUMNS.index("reason")]

    assert [[outcome(r) for r in chunk] for chunk in chunks] == [
        [(True, None), (False, "opted_out")],
        [(False, "duplicate_recipient"), (True, None), (False, "duplicate_customer")],
        [(True, None), (False, "duplicate_recipient"), (True, None)],
    ]
    assert marked == [0, 2, 1]
    assert reasons == Counter(eligible=5, duplicate_recipient=2, duplicate_customer=1)


@pytest.mark.parametrize("warehouse", ["sqlite"], indirect=True)
def test_extraction_row_by_row_sends_each_phone_and_customer_once(
    small: Warehouse, demo_config: OutboundConfig
) -> None:
    """Every customer of the day with a second order: read back, the stored rows keep the rule,
    with every row in a chunk of its own (a duplicate's first row in an earlier one)."""
    campaign = demo_config.campaign("order_ready")
    day = "2026-11-25"
    with small.engine.begin() as conn:
        orders = (
            conn.execute(
                sa.select(orders_table).where(
                    orders_table.c.ready_date == dt.date.fromisoformat(day)
                )
            )
            .mappings()
            .all()
        )
        # A second order for every customer of the day, read after all the first ones.
        conn.execute(
            orders_table.insert(),
            [
                {**o, "order_id": 10**8 + o["order_id"], "order_ref": "ZZ" + o["order_ref"]}
                for o in orders
            ],
        )
    summary = extract(small.engine, campaign, demo_config, day, "run", chunk_rows=1)
    a = audience.c
    with small.engine.connect() as conn:
        stored = conn.execute(
            sa.select(a.customer_id, a.recipient, a.eligible, a.reason)
            .where(a.campaign_key == campaign.key, a.partition_date == day)
            .order_by(a.row_number)
        ).all()
    duplicates = ("duplicate_recipient", "duplicate_customer")
    # The rule, applied to the rows that were eligible before it.
    phones: set[str] = set()
    customers: set[str] = set()
    expected: list[str | None] = []
    for customer, recipient, eligible, reason in stored:
        if not (eligible or reason in duplicates):
            expected.append(reason)
            continue
        if recipient in phones:
            expected.append("duplicate_recipient")
            continue
        phones.add(recipient)
        if customer in customers:
            expected.append("duplicate_customer")
            continue
        customers.add(customer)
        expected.append(None)
    assert [reason for *_, reason in stored] == expected
    assert expected.count("duplicate_recipient") == summary.eligible > 10
    assert summary.eligible == sum(1 for *_, eligible, _ in stored if eligible)
    for reason in duplicates:
        assert summary.reasons[reason] == expected.count(reason)
