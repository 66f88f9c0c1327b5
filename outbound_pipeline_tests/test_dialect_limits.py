"""Where a driver bounds a statement: the portable loader's batches, and the multi-row loader of
BigQuery and Databricks (their drivers send a statement per row of an executemany), on SQLite,
PostgreSQL and DuckDB: what they write is what the fast paths write, in statements that stay
within the bound. And what can be checked of BigQuery and Databricks without an account: their
real SQLAlchemy dialects compile the pipeline's tables and statements, within their drivers'
bound of parameters."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
import sqlalchemy as sa
from databricks.sqlalchemy import DatabricksDialect
from duckdb_engine import Dialect as DuckDBDialect
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy_bigquery import BigQueryDialect

from outbound_pipeline.warehouse import WarehouseError, key_lists, loader_for
from outbound_pipeline.warehouse import metadata as warehouse_metadata
from outbound_pipeline.warehouse.dialects import Loader
from outbound_pipeline.warehouse.dialects.portable import MultiRowLoader
from outbound_pipeline.warehouse.dialects.prepared import prepare
from outbound_pipeline.warehouse.dialects.snowflake import SnowflakeLoader
from outbound_pipeline_tests.dialect_sample import (
    ENGINES,
    bound_parameters,
    bound_values,
    emptied,
    row,
    sample,
    sample_engine,
    stored,
)

engine = pytest.fixture(scope="module", params=ENGINES)(sample_engine)
# Not autouse: the tests of dialects compiled without a database need no engine.
empty = pytest.fixture(emptied)


@pytest.mark.usefixtures("empty")
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


@pytest.mark.usefixtures("empty")
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


# Each key's leading columns as a day's rows have them.
_DAY = {"campaign_key": "order_ready", "partition_date": "2026-11-25"}
_KEYED = [t for t in warehouse_metadata.sorted_tables if len(t.primary_key.columns)]


def _a_day(table: sa.Table, count: int) -> tuple[tuple[str, ...], list[list[Any]]]:
    """`count` rows of one day of `table`, a value of its type in every column (a key of its own
    for each row)."""
    samples: list[tuple[type[Any], Any]] = [
        (sa.Boolean, True),
        (sa.Float, 0.5),
        (sa.DateTime, dt.datetime(2026, 11, 25, 9, 30, tzinfo=dt.UTC)),
        (sa.Date, dt.date(2026, 11, 25)),
    ]
    columns = tuple(c.name for c in table.columns)
    values = []
    for i in range(count):
        one_row = []
        for name in columns:
            kind = table.c[name].type
            value = i if isinstance(kind, sa.Integer) else f"{name}-{i}"
            value = next((v for t, v in samples if isinstance(kind, t)), value)
            one_row.append(_DAY.get(name, value))
        values.append(one_row)
    return columns, values


@pytest.mark.parametrize(
    ("dialect", "deletes_per_day"),
    [(BigQueryDialect(), 1), (DatabricksDialect(), 5)],
    ids=["bigquery", "databricks"],
)
def test_bigquery_and_databricks_statements_stay_within_their_drivers_bound(
    dialect: sa.Dialect, deletes_per_day: int
) -> None:
    """Their real SQLAlchemy dialects compile what the pipeline would send (no account needed):
    a day of every warehouse table in multi-row INSERTs and an upsert's DELETEs, none binding
    more than the driver takes, every row's key in exactly one INSERT and one DELETE. BigQuery
    binds a DELETE's key list as one array: 1,200 keys are one DELETE there, five on Databricks."""
    loader = loader_for(dialect)
    assert isinstance(loader, MultiRowLoader)
    bound = loader.statement_parameters
    for table in _KEYED:
        columns, values = _a_day(table, 300)
        prepared = prepare(dialect, table, columns, False)
        *_, key = prepared.keys
        keys = sorted(v[prepared.key_positions[-1]] for v in values)
        inserts = [bound_parameters(s, dialect) for s in loader.inserts(prepared, values)]
        assert max(len(p) for p in inserts) <= bound, table.name
        assert sorted(k for p in inserts for k in bound_values(p, key)) == keys, table.name
        # As many rows a statement as the bound holds: not one a row.
        assert len(inserts) == -(-len(values) // (bound // len(columns))), table.name
        # An upsert's DELETEs, of more keys than 1,000.
        _, values = _a_day(table, 1_200)
        keys = sorted(v[prepared.key_positions[-1]] for v in values)
        deletes = [bound_parameters(s, dialect) for s in loader.deletes(prepared, values)]
        assert max(len(p) for p in deletes) <= bound, table.name
        assert sorted(k for p in deletes for k in bound_values(p, key)) == keys, table.name
        if prepared.keys[:-1] == tuple(_DAY):  # a day's keys: one group of 1,200
            assert len(deletes) == deletes_per_day, table.name


@pytest.mark.parametrize(
    ("loader", "lists", "longest"),
    [
        (loader_for(sqlite.dialect()), 14, 1_000),
        (loader_for(postgresql.dialect()), 14, 1_000),
        (loader_for(DuckDBDialect()), 1, 14_000),  # each statement scans the day
        (loader_for(BigQueryDialect()), 2, 10_000),  # one array parameter a list
        (loader_for(DatabricksDialect()), 56, 251),  # 255 parameters a statement, 4 of them taken
        # Snowflake's dialect is not importable beside fakesnow's connector: its loader, as
        # loader_for gives it. 14,000 keys of 32 characters: 504,000 bytes of its 512 KiB of text.
        (SnowflakeLoader(), 1, 14_000),
    ],
    ids=["sqlite", "postgresql", "duckdb", "bigquery", "databricks", "snowflake"],
)
def test_a_days_keys_are_listed_for_statements_the_dialect_takes(
    loader: Loader, lists: int, longest: int
) -> None:
    """The keys of a statement by keys (the duplicates' UPDATEs: a million-row day's 14,000):
    each once, in order, in as few lists as the dialect's driver and its cost of a statement
    allow."""
    keys = [f"{i:032x}" for i in range(14_000)]
    listed = list(loader.key_lists(keys, others=4))
    assert [key for keys_ in listed for key in keys_] == keys
    assert (len(listed), max(len(keys_) for keys_ in listed)) == (lists, longest)


def test_the_warehouse_lists_keys_with_its_dialects_loader() -> None:
    keys = [f"{i:032x}" for i in range(2_500)]
    assert [len(k) for k in key_lists(DatabricksDialect(), keys, others=2)] == [253] * 9 + [223]


def test_a_bound_too_small_for_a_row_or_a_statements_own_parameters_is_a_clear_error() -> None:
    tiny = MultiRowLoader(statement_parameters=5)
    prepared = prepare(sqlite.dialect(), sample, tuple(row("a")), False)
    with pytest.raises(WarehouseError, match="a row of 8 columns"):
        tiny.inserts(prepared, [list(row("a").values())])
    with pytest.raises(WarehouseError, match="bound of 5"):
        tiny.values_per_statement(10, others=5)


def test_every_warehouse_table_compiles_for_bigquery_and_databricks() -> None:
    """Their tables are created from the same definitions (without indexes)."""
    for dialect in (BigQueryDialect(), DatabricksDialect()):
        for table in warehouse_metadata.sorted_tables:
            assert str(sa.schema.CreateTable(table).compile(dialect=dialect)).strip()


def test_bigquery_binds_a_day_as_a_date_and_other_loaders_have_no_bound() -> None:
    assert loader_for(BigQueryDialect()).date_parameter("2026-11-25") == dt.date(2026, 11, 25)
    assert loader_for(DatabricksDialect()).date_parameter("2026-11-25") == "2026-11-25"
    # An IN list within the bound, beside the statement's other parameters; none elsewhere.
    assert loader_for(DatabricksDialect()).values_per_statement(1000, others=2) == 253
    assert Loader().values_per_statement(5000) == 5000
