"""One message per phone and per customer a day: the first eligible row in query order keeps it,
whichever chunk of the stream the later rows arrive in, after the suppression list."""

from __future__ import annotations

import datetime as dt
import random
from collections import Counter
from typing import Any

import pytest
import sqlalchemy as sa

from outbound_pipeline.audience import extract
from outbound_pipeline.audience.duplicates import (
    DuplicateColumns,
    DuplicatesNotMarked,
    duplicate_columns,
    mark_duplicates,
)
from outbound_pipeline.audience.rows import ROW_COLUMNS
from outbound_pipeline.config import OutboundConfig
from outbound_pipeline.demo.tables import orders_table
from outbound_pipeline.ledger import suppressed_phones
from outbound_pipeline.outcomes import Reason
from outbound_pipeline.unsubscribe import SuppressionSource, suppress
from outbound_pipeline.warehouse import audience
from outbound_pipeline.warehouse.dialects.arrow import BatchPacker
from outbound_pipeline_tests.bulk import bulk_campaign, bulk_config
from outbound_pipeline_tests.stores import Warehouse


def _stored(warehouse: Warehouse, key: str, day: str, *columns: str) -> list[tuple[Any, ...]]:
    """The day's audience rows in query order, as tuples of `columns`."""
    a = audience.c
    with warehouse.engine.connect() as conn:
        return [
            tuple(r)
            for r in conn.execute(
                sa.select(*(a[c] for c in columns))
                .where(a.campaign_key == key, a.partition_date == day)
                .order_by(a.row_number)
            )
        ]


# DuckDB too: its duplicates are marked by one UPDATE of all their keys (Loader.key_lists).
@pytest.mark.parametrize("warehouse", ["sqlite", "duckdb+sqlite"], indirect=True)
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
    stored = _stored(small, campaign.key, day, "customer_id", "recipient", "eligible", "reason")
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


@pytest.mark.parametrize("warehouse", ["sqlite"], indirect=True)
def test_a_customers_suppressed_first_phone_leaves_the_message_to_its_second(
    small: Warehouse, demo_config: OutboundConfig
) -> None:
    """The suppression list applies before the rule: a row kept out as unsubscribed claims
    neither its phone nor its customer, so the customer's next row, on another phone, is sent."""
    other_phone = "+33699000001"
    with small.engine.connect() as conn:
        customer, phone = conn.execute(
            sa.text(
                "SELECT customer_id, phone FROM customers WHERE phone LIKE '+336%' "
                "ORDER BY customer_id LIMIT 1"
            )
        ).one()
    sql = (
        "SELECT customer_id, phone, country, first_name FROM ("
        f"SELECT customer_id, phone, country, first_name, 1 AS pref FROM customers "
        f"WHERE customer_id = '{customer}' UNION ALL "
        f"SELECT customer_id, '{other_phone}', country, first_name, 2 FROM customers "
        f"WHERE customer_id = '{customer}') q ORDER BY pref"
    )
    config = bulk_config(bulk_campaign("bulk", audience_sql=sql))
    with small.engine.begin() as conn:  # its latest consent: opted in
        conn.execute(
            sa.text(
                "INSERT INTO whatsapp_consents (customer_id, category, status, updated_at, source) "
                "VALUES (:customer, 'order_updates', 'opted_in', '2026-11-24 00:00:00', 'test')"
            ),
            {"customer": customer},
        )
    with small.state.begin() as conn:
        suppress(conn, phone, SuppressionSource.CLI, dt.datetime(2026, 11, 25, tzinfo=dt.UTC))
    summary = extract(
        small.engine,
        config.campaign("bulk"),
        config,
        "2026-11-25",
        "run",
        chunk_rows=1,
        suppressed=suppressed_phones(small.state),
    )
    stored = _stored(small, "bulk", "2026-11-25", "recipient", "eligible", "reason")
    assert stored == [(phone, False, "unsubscribed"), (other_phone, True, None)]
    assert (summary.eligible, summary.reasons) == (1, Counter(unsubscribed=1))


@pytest.mark.parametrize("warehouse", ["sqlite"], indirect=True)
def test_one_customer_id_stored_as_a_number_and_as_text_keeps_both_rows(
    small: Warehouse, demo_config: OutboundConfig
) -> None:
    """SQLite lets one column hold 42 and '42': the same text, so the same customer to the row key,
    two values to SQL. Both rows are kept under keys of their own (numbered as their text); with
    one key, the second would have been written over the first, its verdict lost."""
    with small.engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE mixed_ids (customer_id, phone, country, first_name)")
        conn.exec_driver_sql(
            "INSERT INTO mixed_ids VALUES (42, '+33612345678', 'FR', 'Ann'), "
            "('42', '+33612345678', 'FR', 'Ann')"
        )
        conn.exec_driver_sql(
            "INSERT INTO whatsapp_consents (customer_id, category, status, updated_at, source) "
            "VALUES ('42', 'order_updates', 'opted_in', '2026-01-01 00:00:00', 'test')"
        )
    sql = "SELECT customer_id, phone, country, first_name FROM mixed_ids ORDER BY rowid"
    config = bulk_config(bulk_campaign("bulk", audience_sql=sql))
    summary = extract(small.engine, config.campaign("bulk"), config, "2026-11-25", "run")
    stored = _stored(small, "bulk", "2026-11-25", "row_key", "eligible", "reason")
    assert len({key for key, *_ in stored}) == 2
    # The consent table's '42' is not SQLite's 42: the number has no consent.
    assert [r[1:] for r in stored] == [(False, "no_consent"), (True, None)]
    assert (summary.rows, summary.eligible) == (2, 1)


def _key(n: int) -> str:
    return f"{n:032x}"


def _written_row(n: int, customer: str | None, phone: str | None, eligible: bool) -> list[Any]:
    """A row as the audience stage writes it (ROW_COLUMNS), its key n in hexadecimal."""
    values = {
        "row_key": _key(n),
        "row_number": n,
        "customer_id": customer,
        "recipient": phone,
        "eligible": eligible,
        "reason": None if eligible else "opted_out",
    }
    return [values.get(name) for name in ROW_COLUMNS]


@pytest.mark.parametrize("packed", [False, True], ids=["lists", "batch"])
def test_the_later_rows_are_told_from_the_written_rows_in_query_order(packed: bool) -> None:
    """The rule on the rows as the stage wrote them, chunk after chunk: the first eligible row of
    a phone keeps it, then the first eligible row left of a customer; a row not eligible claims
    nothing, a null is nobody's duplicate, values compare exactly."""
    chunks = [
        [
            _written_row(1, "c1", "+33600000001", True),
            _written_row(2, "c2", "+33600000002", False),  # not eligible: claims nothing
            _written_row(3, "c3", "+33600000002", True),  # so this one keeps the phone
        ],
        [
            _written_row(4, "c4", "+33600000001", True),  # row 1's phone: duplicate_recipient
            _written_row(5, "c1", "+33600000005", True),  # row 1's customer: duplicate_customer
            # Row 4's customer, but row 4 lost its phone to row 1: it claims nothing.
            _written_row(6, "c4", "+33600000006", True),
            _written_row(7, None, None, True),  # no phone, no customer: nobody's duplicate
            _written_row(8, None, None, True),
            _written_row(9, "C1", "+33600000009", True),  # not c1: another customer
        ],
        [_written_row(10, "c3", "+33600000002", True)],  # row 3's phone, and its customer
    ]
    packer = BatchPacker.of(audience, ROW_COLUMNS)
    assert packer is not None
    written = DuplicateColumns()
    for chunk in chunks:
        columns = [list(column) for column in zip(*chunk, strict=True)]
        rows = packer(chunk) if packed else chunk
        written.add(rows, duplicate_columns(columns))
    assert written.later_rows() == {
        Reason.DUPLICATE_RECIPIENT: [_key(4), _key(10)],
        Reason.DUPLICATE_CUSTOMER: [_key(5)],
    }


def test_a_day_of_no_row_or_one_has_no_duplicate() -> None:
    nothing = {Reason.DUPLICATE_RECIPIENT: [], Reason.DUPLICATE_CUSTOMER: []}
    assert DuplicateColumns().later_rows() == nothing
    one = DuplicateColumns()
    row = _written_row(1, "c1", "+33600000001", True)
    one.add([row], duplicate_columns([[value] for value in row]))
    assert one.later_rows() == nothing


def test_the_columns_are_kept_up_to_their_bound_and_let_go_past_it() -> None:
    rows = [_written_row(n, f"c{n}", f"+3360000000{n}", True) for n in (1, 2)]
    columns = duplicate_columns([list(c) for c in zip(*rows, strict=True)])
    size = columns.nbytes + len(rows)  # the columns and the eligibility, a byte a row
    at_bound, past_it = DuplicateColumns(max_bytes=size), DuplicateColumns(max_bytes=size - 1)
    for gathered in (at_bound, past_it):
        gathered.add(rows, columns)
    assert at_bound.complete and not past_it.complete
    assert past_it.rows == at_bound.rows == 2
    with pytest.raises(RuntimeError, match="let go"):
        past_it.later_rows()


def test_rows_given_the_columns_of_other_rows_are_refused() -> None:
    rows = [_written_row(n, f"c{n}", f"+3360000000{n}", True) for n in (1, 2)]
    columns = [list(column) for column in zip(*rows, strict=True)]
    with pytest.raises(ValueError, match="1 rows told by 2 rows' columns"):
        DuplicateColumns().add(rows[:1], duplicate_columns(columns))


def _stored_row(
    day: str, n: int, customer: str | None, phone: str | None, eligible: bool
) -> dict[str, Any]:
    """An outbound_audience row of `day` (campaign "dups"), its key n in hexadecimal."""
    row = dict(zip(ROW_COLUMNS, _written_row(n, customer, phone, eligible), strict=True))
    return {
        **row,
        "campaign_key": "dups",
        "partition_date": day,
        "phone_raw": phone,
        "consent_status": "opted_in",
        "fields_json": "{}",
        "run_id": "test",
    }


def _random_day(seed: int) -> list[tuple[int, str | None, str | None, bool]]:
    """Rows (number, customer, phone, eligible) sharing phones and customers, with nulls, an
    empty ID and IDs that differ only in case."""
    rng = random.Random(seed)
    customers = [None, "", *(f"c{i}" for i in range(30)), "C1", "C2"]
    phones = [None, *(f"+3360000{i:04d}" for i in range(25))]
    return [
        (n, rng.choice(customers), rng.choice(phones), rng.random() < 0.8) for n in range(1, 201)
    ]


@pytest.mark.parametrize("gathered_most", [2**20, 2000], ids=["gathered", "too-many-bytes"])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_duplicates_told_from_the_written_rows_are_those_the_window_queries_find(
    warehouse: Warehouse, seed: int, gathered_most: int
) -> None:
    """The same day twice: one marked by the window queries over the stored rows, the other from
    its rows as written (in chunks of random sizes); every row ends with the same verdict. A day
    of more rows than are kept is marked by the window queries."""
    day = _random_day(seed)
    with warehouse.engine.begin() as conn:
        for date in ("2026-11-01", "2026-11-02"):
            conn.execute(sa.insert(audience), [_stored_row(date, *row) for row in day])
    gathered = DuplicateColumns(max_bytes=gathered_most)
    rng = random.Random(seed)
    rows = [_written_row(*row) for row in day]
    while rows:
        size = rng.randint(1, 40)
        chunk, rows = rows[:size], rows[size:]
        columns = [list(column) for column in zip(*chunk, strict=True)]
        gathered.add(chunk, duplicate_columns(columns))
    assert gathered.complete is (gathered_most > 2000)
    by_windows = mark_duplicates(warehouse.engine, "dups", "2026-11-01")
    from_rows = mark_duplicates(warehouse.engine, "dups", "2026-11-02", gathered)
    assert from_rows == by_windows
    assert by_windows["duplicate_recipient"] > 0 and by_windows["duplicate_customer"] > 0
    first, second = (
        _stored(warehouse, "dups", date, "row_number", "eligible", "reason")
        for date in ("2026-11-01", "2026-11-02")
    )
    assert first == second


def _gathered(rows: list[list[Any]]) -> DuplicateColumns:
    gathered = DuplicateColumns()
    gathered.add(rows, duplicate_columns([list(c) for c in zip(*rows, strict=True)]))
    return gathered


def test_a_later_row_the_table_no_longer_holds_eligible_stops_the_stage(
    warehouse: Warehouse,
) -> None:
    """Fewer rows marked than found means the day changed while it was written: the stage fails
    rather than leave a duplicate eligible."""
    day = [(1, "c1", "+33600000001", True), (2, "c2", "+33600000001", True)]
    with warehouse.engine.begin() as conn:
        conn.execute(sa.insert(audience), [_stored_row("2026-11-01", *row) for row in day])
    gathered = _gathered([_written_row(*row) for row in day])
    with warehouse.engine.begin() as conn:  # another run's verdict on the day, say
        conn.execute(sa.update(audience).where(audience.c.row_number == 2).values(eligible=False))
    with pytest.raises(
        DuplicatesNotMarked, match="1 rows of 2026-11-01 are duplicate_recipient, 0"
    ):
        mark_duplicates(warehouse.engine, "dups", "2026-11-01", gathered)


def test_a_day_holding_rows_the_stage_did_not_write_is_told_by_the_window_queries(
    warehouse: Warehouse,
) -> None:
    """A run of the same day at the same time can add rows this one never saw: then the day as
    stored is marked, by the window queries, not the rows this one wrote."""
    day = [(1, "c1", "+33600000001", True), (2, "c2", "+33600000001", True)]
    gathered = _gathered([_written_row(*row) for row in day])
    with warehouse.engine.begin() as conn:
        conn.execute(
            sa.insert(audience),
            [_stored_row("2026-11-01", *row) for row in [*day, (3, "c3", "+33600000001", True)]],
        )
    assert gathered.complete
    assert mark_duplicates(warehouse.engine, "dups", "2026-11-01", gathered) == {
        "duplicate_recipient": 2,
        "duplicate_customer": 0,
    }
