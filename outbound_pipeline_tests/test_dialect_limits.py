"""Where a driver bounds a statement: the portable loader's batches, and the multi-row loader of
BigQuery and Databricks (their drivers send a statement per row of an executemany), on SQLite,
PostgreSQL and DuckDB: what they write is what the fast paths write, in statements that stay
within the bound."""

from __future__ import annotations

import datetime as dt
from types import SimpleNamespace
from typing import Any

import pytest
import sqlalchemy as sa

from outbound_pipeline.warehouse import loader_for
from outbound_pipeline.warehouse.dialects import Loader
from outbound_pipeline.warehouse.dialects.portable import MultiRowLoader
from outbound_pipeline.warehouse.dialects.prepared import prepare
from outbound_pipeline_tests.dialect_sample import (
    ENGINES,
    emptied,
    row,
    sample,
    sample_engine,
    stored,
)

engine = pytest.fixture(scope="module", params=ENGINES)(sample_engine)
empty = pytest.fixture(autouse=True)(emptied)


def test_the_portable_loader_writes_and_upserts_as_the_fast_paths(engine: sa.Engine) -> None:
    portable = Loader()
    deletes: list[int] = []

    def count_deletes(_conn: Any, _cursor: Any, statement: str, params: Any, *_: Any) -> None:
        if statement.lstrip().upper().startswith("DELETE"):
            deletes.append(len(params) if isinstance(params, list) else 1)

    # Two partitions' keys, one of them more than one DELETE holds.
    days = ["2026-11-24"] * 1500 + ["2026-11-25"] * 700
    upserted = [row(f"k{i}", count=i, part=day) for i, day in enumerate(days)]
    sa.event.listen(engine, "before_cursor_execute", count_deletes)
    try:
        with engine.begin() as conn:
            columns = tuple(row("a"))
            prepared = prepare(conn.dialect, sample, columns, False)
            portable.insert(conn, prepared, [row("a"), row("k1", part="2026-11-24")])
            portable.upsert(conn, prepared, upserted)
    finally:
        sa.event.remove(engine, "before_cursor_execute", count_deletes)
    got = stored(engine)
    assert len(got) == 1 + len(upserted)
    assert got[("2026-11-24", "k1")]["count"] == 1 and got[("2026-11-25", "a")]["count"] == 42
    assert got[("2026-11-25", "k2199")]["count"] == 2199
    # One DELETE per partition and thousand keys, each a single statement: not one per row.
    assert deletes == [1, 1, 1]


def test_a_multi_row_loader_keeps_every_statement_within_its_parameters(engine: sa.Engine) -> None:
    """For drivers that send a statement per row of an executemany (BigQuery, Databricks): rows
    go in multi-row INSERTs, and no statement, INSERT or an upsert's DELETE, binds more than the
    engine's limit of parameters; what is written is what the fast paths write."""
    budget = 40  # 5 rows of the sample's 8 columns
    multi_row = MultiRowLoader(statement_parameters=budget)
    statements: list[tuple[str, int, bool]] = []

    def record(
        _conn: Any, _cursor: Any, statement: str, params: Any, _ctx: Any, many: bool
    ) -> None:
        count = len(params) if isinstance(params, list | tuple | dict) else 0
        statements.append((statement.lstrip().split()[0].upper(), count, many))

    days = ["2026-11-24"] * 100 + ["2026-11-25"] * 23
    upserted = [row(f"k{i}", count=i, part=day) for i, day in enumerate(days)]
    sa.event.listen(engine, "before_cursor_execute", record)
    try:
        with engine.begin() as conn:
            prepared = prepare(conn.dialect, sample, tuple(row("a")), False)
            multi_row.insert(conn, prepared, [row(f"i{i}") for i in range(12)])
            multi_row.upsert(conn, prepared, [*upserted, row("k3", count=-3, part="2026-11-24")])
    finally:
        sa.event.remove(engine, "before_cursor_execute", record)
    writes = [
        (kind, count, many) for kind, count, many in statements if kind in ("INSERT", "DELETE")
    ]
    assert not any(many for *_, many in writes), "an executemany: a statement per row"
    assert max(count for _, count, _ in writes) <= budget
    inserts = [count for kind, count, _ in writes if kind == "INSERT"]
    deletes = [count for kind, count, _ in writes if kind == "DELETE"]
    # 12 rows, then 123: five rows a statement; 100 + 23 keys, 39 a DELETE (the day is one).
    assert len(inserts) == 3 + 25 and len(deletes) == 3 + 1
    got = stored(engine)
    assert len(got) == 12 + len(upserted)
    assert got[("2026-11-24", "k3")]["count"] == -3 and got[("2026-11-25", "k122")]["count"] == 122
    assert got[("2026-11-25", "i11")] == {**row("i11"), "seen_at": row("i11")["seen_at"]}


def test_bigquery_and_databricks_get_multi_row_statements_within_their_limits() -> None:
    """Their drivers are not installed here: the dialect layer's choice for each, by name."""
    bigquery, databricks = (loader_for(SimpleNamespace(name=n)) for n in ("bigquery", "databricks"))  # type: ignore[arg-type]
    assert isinstance(bigquery, MultiRowLoader) and isinstance(databricks, MultiRowLoader)
    # BigQuery compares a DATE column only with a DATE; Databricks binds 255 parameters at most.
    assert bigquery.date_parameter("2026-11-25") == dt.date(2026, 11, 25)
    assert databricks.date_parameter("2026-11-25") == "2026-11-25"
    assert databricks.statement_parameters == 255
    # An IN list within it, beside the statement's other parameters; no bound elsewhere.
    assert databricks.values_per_statement(1000, others=2) == 253
    assert bigquery.values_per_statement(5000) == 1000
    assert Loader().values_per_statement(5000) == 5000
