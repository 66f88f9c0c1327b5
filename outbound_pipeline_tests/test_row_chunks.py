"""A query's rows read in chunks as tuples (warehouse.dialects.rows.tuple_chunks, what
warehouse.query_chunks reads through a cursor): straight from the driver's
cursor where that changes nothing, through SQLAlchemy's rows where a column converts its values or
the driver reads ahead; on PostgreSQL from psycopg's own server-side cursor (query_chunks); the
same rows either way, and a failure as SQLAlchemy raises it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa

from outbound_pipeline.warehouse.dialects.rows import query_chunks, streaming, tuple_chunks
from outbound_pipeline_tests.stores import Warehouse

table = sa.Table(
    "row_chunks_sample",
    sa.MetaData(),
    sa.Column("n", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("label", sa.String(40)),
    sa.Column("flag", sa.Boolean),
)
ROWS = [
    {"n": n, "label": None if n % 7 == 0 else f"row {n} «é»", "flag": n % 2 == 0} for n in range(23)
]


def _chunks(
    engine: sa.Engine, query: Any, buffered: bool, size: int = 5
) -> list[list[tuple[Any, ...]]]:
    """Streamed as the stages stream (`streaming`), or with SQLAlchemy's buffer, which reads the
    first row ahead of the driver's cursor (`yield_per`)."""
    with engine.connect() as conn:
        options = {"yield_per": size} if buffered else streaming(conn.dialect, size)
        conn = conn.execution_options(**options)
        return [list(chunk) for chunk in tuple_chunks(conn.execute(query), size)]


@pytest.fixture
def sample_table(warehouse: Warehouse) -> Iterator[sa.Engine]:
    """The warehouse's engine with the sample table holding ROWS, dropped after the test."""
    engine = warehouse.engine
    with engine.begin() as conn:
        table.create(conn)
        conn.execute(table.insert(), ROWS)
    yield engine
    with engine.begin() as conn:
        table.drop(conn)


@pytest.fixture
def through_sqlalchemy(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """One entry for each query whose rows came through SQLAlchemy's rows."""
    calls: list[str] = []
    partitions = sa.engine.CursorResult.partitions

    def counted(self: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append("partitions")
        return partitions(self, *args, **kwargs)

    monkeypatch.setattr(sa.engine.CursorResult, "partitions", counted)
    return calls


@pytest.mark.parametrize("warehouse", ["sqlite", "duckdb+sqlite", "postgres"], indirect=True)
@pytest.mark.parametrize("buffered", [False, True])
def test_every_row_comes_once_in_order_and_chunks_whatever_the_path(
    sample_table: sa.Engine, buffered: bool
) -> None:
    engine = sample_table
    # Text and integers (read straight from the driver on SQLite and DuckDB), a text() query
    # (untyped), and a boolean (SQLite stores an integer: read through SQLAlchemy's rows).
    plain = _chunks(engine, sa.select(table.c.n, table.c.label).order_by(table.c.n), buffered)
    textual = _chunks(
        engine, sa.text("SELECT n, label FROM row_chunks_sample ORDER BY n"), buffered
    )
    flags = _chunks(engine, sa.select(table.c.n, table.c.flag).order_by(table.c.n), buffered)
    expected = [(r["n"], r["label"]) for r in ROWS]
    for chunks in (plain, textual):
        assert [len(c) for c in chunks] == [5, 5, 5, 5, 3]
        assert [tuple(row) for chunk in chunks for row in chunk] == expected
    assert [tuple(row) for chunk in flags for row in chunk] == [(r["n"], r["flag"]) for r in ROWS]
    assert all(type(row[1]) is bool for chunk in flags for row in chunk)


@pytest.mark.parametrize("warehouse", ["sqlite"], indirect=True)
def test_a_query_failing_after_its_first_rows_fails_as_sqlalchemy_raises_it(
    warehouse: Warehouse,
) -> None:
    def fails_at_seven(n: int) -> int:
        if n == 7:
            raise ValueError("seven")
        return n

    with warehouse.engine.connect() as conn:
        conn.connection.driver_connection.create_function("fails_at_seven", 1, fails_at_seven)
        result = conn.execute(
            sa.text(
                "WITH RECURSIVE n(v) AS (SELECT 0 UNION ALL SELECT v + 1 FROM n WHERE v < 20) "
                "SELECT fails_at_seven(v) AS v FROM n"
            )
        )
        got: list[tuple[Any, ...]] = []
        with pytest.raises(sa.exc.OperationalError, match="user-defined function"):
            for chunk in tuple_chunks(result, 3):
                got.extend(chunk)
    assert got == [(0,), (1,), (2,), (3,), (4,), (5,)]


@pytest.mark.parametrize("warehouse", ["sqlite", "duckdb+sqlite"], indirect=True)
def test_text_and_numbers_streamed_on_sqlite_and_duckdb_come_from_the_drivers_cursor(
    warehouse: Warehouse, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The fast path is taken: SQLAlchemy's rows are never built for such a query."""

    def no_rows_objects(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("read through SQLAlchemy's rows")

    monkeypatch.setattr(sa.engine.CursorResult, "partitions", no_rows_objects)
    with warehouse.engine.connect() as conn:
        conn = conn.execution_options(**streaming(conn.dialect, 4))
        query = sa.text("SELECT 1 AS n, 'a' AS label UNION ALL SELECT 2, 'b' ORDER BY n")
        assert list(tuple_chunks(conn.execute(query), 4)) == [[(1, "a"), (2, "b")]]


class _Shouted(sa.types.TypeDecorator[str]):
    """A column type that converts what it reads: its query must go through SQLAlchemy's rows."""

    impl = sa.String
    cache_ok = True

    def process_result_value(self, value: str | None, dialect: sa.Dialect) -> str | None:
        return None if value is None else value.upper()


class _Lowered(sa.types.TypeDecorator[str]):
    """A column type that converts what it binds: its query must go through SQLAlchemy."""

    impl = sa.String
    cache_ok = True

    def process_bind_param(self, value: str | None, dialect: sa.Dialect) -> str | None:
        return None if value is None else value.lower()


@pytest.mark.parametrize("warehouse", ["postgres"], indirect=True)
def test_postgresql_streams_from_the_drivers_own_server_cursor_the_same_rows(
    sample_table: sa.Engine, through_sqlalchemy: list[str]
) -> None:
    engine, calls = sample_table, through_sqlalchemy
    with engine.connect() as conn:
        plain = sa.select(table.c.n, table.c.label).where(table.c.n.in_([1, 2, 3, 8, 9, 21]))
        # An untyped parameter compared with a date, as a brand's audience query does.
        textual = sa.text(
            "SELECT n, label FROM row_chunks_sample WHERE CAST(:day AS date) = DATE "
            "'2026-11-24' AND n < :below ORDER BY n"
        )
        with (
            query_chunks(conn, plain.order_by(table.c.n), {}, 4) as first,
            query_chunks(conn, textual, {"day": "2026-11-24", "below": 12}, 5) as second,
        ):  # both open at once on one connection: each its own cursor
            assert (first.names, second.names) == (("n", "label"), ("n", "label"))
            got_plain, got_text = list(first.chunks), list(second.chunks)
        assert calls == []
        converted = sa.select(table.c.n, sa.cast(table.c.label, _Shouted)).order_by(table.c.n)
        with query_chunks(conn, converted.where(table.c.n < 3), {}, 4) as third:
            got_converted = list(third.chunks)
        assert calls == ["partitions"]
        # A tuple's IN list whose element type converts what it binds (here to lower case).
        label = sa.cast(table.c.label, _Lowered)
        paired = sa.select(table.c.n).where(sa.tuple_(table.c.n, label).in_([(1, "ROW 1 «É»")]))
        with query_chunks(conn, paired, {}, 4) as fourth:
            assert list(fourth.chunks) == [[(1,)]]
        assert calls == ["partitions", "partitions"]
    labels = {r["n"]: r["label"] for r in ROWS}
    assert got_plain == [[(n, labels[n]) for n in (1, 2, 3, 8)], [(9, labels[9]), (21, None)]]
    assert [len(c) for c in got_text] == [5, 5, 2]
    assert [row for chunk in got_text for row in chunk] == [(n, labels[n]) for n in range(12)]
    assert got_converted == [[(0, None), (1, labels[1].upper()), (2, labels[2].upper())]]


@pytest.mark.parametrize("warehouse", ["postgres"], indirect=True)
def test_a_postgresql_query_failing_at_its_start_or_later_fails_as_sqlalchemy_raises_it(
    warehouse: Warehouse,
) -> None:
    query = sa.text("SELECT 10 / (v - :zero_at) AS v FROM generate_series(0, 20) AS v")
    with warehouse.engine.connect() as conn:
        # At its start: the first rows are fetched with the query, as SQLAlchemy fetches them.
        with pytest.raises(sa.exc.DataError, match="division by zero"):
            query_chunks(conn, query, {"zero_at": 2}, 5)
        conn.rollback()
        got: list[tuple[Any, ...]] = []
        with (
            pytest.raises(sa.exc.DataError, match="division by zero"),
            query_chunks(conn, query, {"zero_at": 7}, 3) as rows,
        ):
            for chunk in rows.chunks:
                got.extend(chunk)
    assert [v for (v,) in got] == [int(10 / (v - 7)) for v in range(6)]  # truncated, as PostgreSQL


@pytest.mark.parametrize("warehouse", ["postgres"], indirect=True)
def test_postgresql_lists_expanded_by_sqlalchemy_a_hidden_parameter_and_a_stream_left_unread(
    sample_table: sa.Engine, through_sqlalchemy: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    engine, calls = sample_table, through_sqlalchemy
    with engine.connect() as conn:
        # A list given with the parameters: SQLAlchemy expands it as it executes.
        listed = sa.text("SELECT n FROM row_chunks_sample WHERE n IN :ids ORDER BY n")
        listed = listed.bindparams(sa.bindparam("ids", expanding=True))
        with query_chunks(conn, listed, {"ids": [3, 5, 8]}, 10) as rows:
            assert list(rows.chunks) == [[(3,), (5,), (8,)]]
        assert calls == ["partitions"]
        # Schemas renamed as SQLAlchemy executes (the statement's own map, here a no-op).
        renamed = sa.select(table.c.n).where(table.c.n < 2).order_by(table.c.n)
        renamed = renamed.execution_options(schema_translate_map={None: None})
        with query_chunks(conn, renamed, {}, 10) as rows:
            assert list(rows.chunks) == [[(0,), (1,)]]
        assert calls == ["partitions", "partitions"]
        # Left after its first chunk: the connection goes on with other statements.
        with query_chunks(conn, sa.select(table.c.n).order_by(table.c.n), {}, 4) as rows:
            assert next(rows.chunks) == [(0,), (1,), (2,), (3,)]
        assert conn.execute(sa.select(sa.func.count()).select_from(table)).scalar() == 23
        assert calls == ["partitions", "partitions"]
        # A failing query's parameters are not in its error (one may be a phone number), on
        # the driver's own cursor (SQLAlchemy's execute never called) as through SQLAlchemy.
        failing = sa.text("SELECT CAST(:phone AS text) AS phone, 1 / 0 AS n")
        executed: list[object] = []
        through_execute = sa.engine.Connection.execute

        def recorded(self: Any, *args: Any, **kwargs: Any) -> Any:
            executed.append(args[0])
            return through_execute(self, *args, **kwargs)

        monkeypatch.setattr(sa.engine.Connection, "execute", recorded)
        with pytest.raises(sa.exc.DataError) as failure:
            query_chunks(conn, failing, {"phone": "+33612345678"}, 4)
        assert executed == []
        assert "+33612345678" not in str(failure.value)
        assert "parameters hidden" in str(failure.value)
