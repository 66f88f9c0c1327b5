"""The warehouse's bulk writes: upserts run as compiled driver SQL (and, on PostgreSQL, through COPY
for large batches) must keep SQLAlchemy's behaviour."""

from __future__ import annotations

import traceback
from typing import Any

import pytest
import sqlalchemy as sa

from outbound_pipeline.warehouse import WarehouseError, audience, messages, upsert_rows
from outbound_pipeline.warehouse.dialects import postgres as warehouse_module
from outbound_pipeline_tests.stores import Warehouse


@pytest.fixture(autouse=True, params=["executemany", "copy"])
def write_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Each test on both write paths: COPY (PostgreSQL) from the first row, or never."""
    monkeypatch.setattr(warehouse_module, "COPY_MIN_ROWS", 1 if request.param == "copy" else 10**9)
    return str(request.param)


def _audience_row(key: str, **values: Any) -> dict[str, Any]:
    row = {
        "campaign_key": "c",
        "partition_date": "2026-11-25",
        "row_key": key,
        "row_number": 1,
        "customer_id": "C1",
        "phone_raw": "06 12 34 56 78",
        "recipient": "+33612345678",
        "phone_region": "FR",
        "consent_status": "opted_in",
        "consent_updated_at": None,
        "consent_category": "offers",
        "consent_record_json": None,
        "variant": None,
        "eligible": True,
        "reason": None,
        "fields_json": '{"first_name": "Zoé 🎉"}',
        "run_id": "r1",
    }
    return {**row, **values}


def _stored(warehouse: Warehouse) -> dict[str, dict[str, Any]]:
    with warehouse.engine.connect() as conn:
        return {r["row_key"]: dict(r) for r in conn.execute(sa.select(audience)).mappings()}


def test_upsert_rows_inserts_then_replaces_each_key_with_the_last_values(
    warehouse: Warehouse,
) -> None:
    first = [
        _audience_row("a"),
        _audience_row("b", eligible=False, reason="opted_out", row_number=2),
    ]
    with warehouse.engine.begin() as conn:
        upsert_rows(conn, audience, first)
    again = [
        _audience_row("b", row_number=3, reason=None, customer_id="C2"),
        _audience_row("c", row_number=4, recipient=None),
    ]
    with warehouse.engine.begin() as conn:
        upsert_rows(conn, audience, again)

    stored = _stored(warehouse)
    assert sorted(stored) == ["a", "b", "c"]
    assert stored["a"] == _audience_row("a")
    assert stored["b"] == _audience_row("b", row_number=3, customer_id="C2")
    assert stored["c"]["recipient"] is None and stored["c"]["row_number"] == 4
    # Booleans come back as booleans on both backends (SQLite stores 0/1).
    assert stored["a"]["eligible"] is True


def test_upsert_rows_applies_the_column_types_checks(warehouse: Warehouse) -> None:
    # Written as driver SQL, the values still go through SQLAlchemy's conversions: a boolean column
    # refuses a string instead of SQLite storing 'yes'.
    with pytest.raises(TypeError, match="boolean"), warehouse.engine.begin() as conn:
        upsert_rows(conn, audience, [_audience_row("a", eligible="yes")])
    assert _stored(warehouse) == {}


def test_upsert_rows_of_another_table_or_column_set_use_their_own_statement(
    warehouse: Warehouse,
) -> None:
    message = {
        "campaign_key": "c",
        "partition_date": "2026-11-25",
        "row_key": "a",
        "customer_id": "C1",
        "recipient": "+33612345678",
        "template_name": "t",
        "language": "fr",
        "category": "UTILITY",
        "rendered": False,
        "reason": "empty_value: body {{1}} (first_name) is empty",
        "run_id": "r1",
    }
    with warehouse.engine.begin() as conn:
        upsert_rows(conn, audience, [_audience_row("a")])
        upsert_rows(conn, messages, [message])
    with warehouse.engine.connect() as conn:
        stored = dict(conn.execute(sa.select(messages)).mappings().one())
    assert stored == {
        **message,
        "header_params_json": None,
        "body_params_json": None,
        "preview_text": None,
        "variant": None,
    }


def test_upsert_rows_keeps_the_last_of_rows_with_one_key_and_each_call_writes_only_its_rows(
    warehouse: Warehouse,
) -> None:
    with warehouse.engine.begin() as conn:
        upsert_rows(
            conn,
            audience,
            [
                _audience_row("a", run_id="first"),
                _audience_row("b"),
                _audience_row("a", run_id="last"),
            ],
        )
        # A second call in the same transaction: the first call's rows are not written again over it.
        upsert_rows(conn, audience, [_audience_row("b", run_id="second call")])
    stored = _stored(warehouse)
    assert {key: row["run_id"] for key, row in stored.items()} == {"a": "last", "b": "second call"}


def test_a_large_upsert_writes_every_row(warehouse: Warehouse) -> None:
    rows = [
        _audience_row(f"k{i:05d}", row_number=i, eligible=i % 3 == 0, customer_id=f"C{i}")
        for i in range(2500)
    ]
    with warehouse.engine.begin() as conn:
        upsert_rows(conn, audience, rows)
    stored = _stored(warehouse)
    assert len(stored) == 2500
    assert sum(row["eligible"] for row in stored.values()) == 834
    assert stored["k01234"] == rows[1234]


def test_a_failed_write_names_no_phone_number(warehouse: Warehouse) -> None:
    # The error reaches the run's logs and the UI: the driver's message and SQLAlchemy's would both
    # quote the rows (phones included) if left alone. A missing row_number breaks NOT NULL anywhere.
    rows = [
        _audience_row(f"k{i}", recipient="+33612345678", phone_raw="06 12 34 56 78")
        for i in range(3)
    ]
    rows.append(
        _audience_row("bad", row_number=None, recipient="+33698765432", phone_raw="06 98 76 54 32")
    )
    with pytest.raises(WarehouseError) as info, warehouse.engine.begin() as conn:
        upsert_rows(conn, audience, rows)
    shown = "".join(traceback.format_exception(info.value))
    assert "row_number" in shown or "null" in shown.lower()
    for phone in ("33612345678", "612345678", "33698765432", "698765432", "06 98 76 54 32"):
        assert phone not in shown, shown
    assert _stored(warehouse) == {}
