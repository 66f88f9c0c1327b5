"""The warehouse's bulk writes: upserts run as compiled driver SQL must keep SQLAlchemy's behaviour."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa

from outbound_pipeline.tables import audience, messages
from outbound_pipeline.warehouse import upsert_rows
from outbound_pipeline_tests.conftest import Warehouse


def _audience_row(key: str, **values: Any) -> dict[str, Any]:
    row = {
        "campaign_key": "c", "partition_date": "2026-11-25", "row_key": key, "row_number": 1,
        "customer_id": "C1", "phone_raw": "06 12 34 56 78", "recipient": "+33612345678", "phone_region": "FR",
        "consent_status": "opted_in", "consent_updated_at": None, "eligible": True, "reason": None,
        "fields_json": '{"first_name": "Zoé 🎉"}', "run_id": "r1",
    }
    return {**row, **values}


def _stored(warehouse: Warehouse) -> dict[str, dict[str, Any]]:
    with warehouse.engine.connect() as conn:
        return {r["row_key"]: dict(r) for r in conn.execute(sa.select(audience)).mappings()}


def test_upsert_rows_inserts_then_replaces_each_key_with_the_last_values(warehouse: Warehouse) -> None:
    first = [_audience_row("a"), _audience_row("b", eligible=False, reason="opted_out", row_number=2)]
    with warehouse.engine.begin() as conn:
        upsert_rows(conn, audience, first)
    again = [_audience_row("b", row_number=3, reason=None, customer_id="C2"), _audience_row("c", row_number=4, recipient=None)]
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
    with pytest.raises((TypeError, sa.exc.StatementError), match="boolean"):
        with warehouse.engine.begin() as conn:
            upsert_rows(conn, audience, [_audience_row("a", eligible="yes")])
    assert _stored(warehouse) == {}


def test_upsert_rows_of_another_table_or_column_set_use_their_own_statement(warehouse: Warehouse) -> None:
    message = {
        "campaign_key": "c", "partition_date": "2026-11-25", "row_key": "a", "customer_id": "C1",
        "recipient": "+33612345678", "template_name": "t", "language": "fr", "category": "UTILITY",
        "rendered": False, "reason": "empty_value: body {{1}} (first_name) is empty", "run_id": "r1",
    }
    with warehouse.engine.begin() as conn:
        upsert_rows(conn, audience, [_audience_row("a")])
        upsert_rows(conn, messages, [message])
    with warehouse.engine.connect() as conn:
        stored = dict(conn.execute(sa.select(messages)).mappings().one())
    assert stored == {**message, "header_params_json": None, "body_params_json": None, "preview_text": None}
