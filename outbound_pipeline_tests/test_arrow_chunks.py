"""A query's rows as Arrow record batches on DuckDB (warehouse.query_chunks): taken only where each
value comes back as DuckDB's cursor gives it (the same Python type and value, a zoned timestamp in
the session's time zone); any other type read through the cursor; a failure on a later batch raised
as SQLAlchemy raises it; batches made tuples again (rows_of) and a stage's rows packed as a batch of
its table's columns (StageWrites.pack)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
import sqlalchemy as sa

from outbound_pipeline.warehouse import (
    columns_of,
    create_engine,
    every_column,
    query_chunks,
    rows_of,
)
from outbound_pipeline.warehouse.dialects.arrow import (
    _UTC_ZONES,
    SAME_VALUES,
    BatchPacker,
    as_rows,
    iso_texts,
)
from outbound_pipeline.warehouse.dialects.rows import streaming

# Values of every type read through Arrow, as DuckDB literals: extremes, unicode, NULL.
LITERALS: dict[str, list[str]] = {
    "VARCHAR": ["'Zoé 🎉 «ünïcødé» 日本'", "''", "'+33 6 12 34 56 78'", "NULL"],
    "BOOLEAN": ["true", "false", "NULL"],
    "TINYINT": ["-128", "127", "NULL"],
    "SMALLINT": ["-32768", "32767", "NULL"],
    "INTEGER": ["-2147483648", "2147483647", "NULL"],
    "BIGINT": ["-9223372036854775808", "9223372036854775807", "NULL"],
    "UTINYINT": ["0", "255", "NULL"],
    "USMALLINT": ["0", "65535", "NULL"],
    "UINTEGER": ["0", "4294967295", "NULL"],
    "UBIGINT": ["0", "18446744073709551615", "NULL"],
    "FLOAT": ["1.5", "-0.1", "'nan'", "'inf'", "NULL"],
    "DOUBLE": ["0.1", "-1e308", "'nan'", "'-inf'", "NULL"],
    "DATE": ["'2026-12-05'", "'1900-01-01'", "'9999-12-31'", "NULL"],
    # Past Python's edges (a batch of its own: read by DuckDB, as its cursor reads them).
    "DATE edges": ["'infinity'", "'-infinity'", "'10000-01-01'", "'0001-01-01 (BC)'", "NULL"],
    "TIMESTAMP": [
        "'2026-12-05 10:11:12.123456'",
        "'1900-01-01 00:00:00'",
        "'9999-12-30 23:59:59.999999'",
        "'0001-01-02 00:00:00'",
        "NULL",
    ],
    "TIMESTAMP edges": [
        "'9999-12-31 23:59:59.999999'",
        "'infinity'",
        "'-infinity'",
        "'10000-01-01'",
        "'0001-01-01 (BC)'",
        "NULL",
    ],
    "TIMESTAMP WITH TIME ZONE": [
        "'2026-03-29 01:30:00+00'",  # Paris's change to summer time
        "'2026-10-25 00:59:59.999999+00'",
        "'1900-01-01 00:00:00+00'",  # local mean time offsets (+00:09:21 in Paris)
        "'2026-10-25 01:30:00+00'",  # the hour Paris lives twice: the second time (fold 1)
        "'9999-12-30 00:00:00+00'",
        "NULL",
    ],
    "TIMESTAMP WITH TIME ZONE edges": [
        # Read in batches of two: a time of Python's range, a day from its edge, with another.
        "'0001-01-01 00:30:00+00'",  # before year 1 in Los Angeles
        "'2026-01-01 00:00:00+00'",
        "'9999-12-31 23:30:00+00'",  # past year 9999 in Paris
        "'infinity'",
        "'-infinity'",
        "NULL",
    ],
    '"NULL"': ["NULL"],
}


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[sa.Engine]:
    engine = create_engine(f"duckdb:///{Path(tmp_path_factory.mktemp('arrow')) / 'w.duckdb'}")
    yield engine
    engine.dispose()


def _values_query(name: str) -> str:
    # `"NULL"` is the type of a bare NULL: its column is written as one.
    type_name = name.removesuffix(" edges")
    cast = "{}" if type_name == '"NULL"' else f"CAST({{}} AS {type_name})"
    values = " UNION ALL ".join(
        f"SELECT {n} AS n, {cast.format(literal)} AS v" for n, literal in enumerate(LITERALS[name])
    )
    return f"SELECT v FROM ({values}) ORDER BY n"


def _same(arrow: list[tuple[Any, ...]], cursor: list[tuple[Any, ...]]) -> bool:
    """The same values, of the same types; datetimes with the same offset; NaN as NaN."""

    def key(value: Any) -> Any:
        if isinstance(value, float) and value != value:
            return ("nan", float)
        if isinstance(value, dt.datetime):
            return (value.isoformat(), value.utcoffset(), type(value))
        return (value, type(value))

    return [tuple(map(key, r)) for r in arrow] == [tuple(map(key, r)) for r in cursor]


def test_every_type_read_through_arrow_is_tested() -> None:
    assert {name.removesuffix(" edges") for name in LITERALS} == SAME_VALUES


ZONES = [
    "UTC",
    "Etc/UTC",
    "Europe/Paris",
    "America/Sao_Paulo",
    "America/Los_Angeles",
    "Asia/Kolkata",
]
# Each type in UTC; a zoned timestamp's values, whose conversion depends on the session's time
# zone, in each of ZONES.
CASES = [
    (name, zone)
    for name in sorted(LITERALS)
    for zone in (ZONES if name.startswith("TIMESTAMP WITH TIME ZONE") else ["UTC"])
]


@pytest.mark.parametrize(("type_name", "time_zone"), CASES)
def test_values_through_arrow_are_those_of_duckdbs_cursor(
    engine: sa.Engine, type_name: str, time_zone: str
) -> None:
    query = _values_query(type_name)
    with engine.connect() as conn:
        conn.exec_driver_sql(f"SET TimeZone = '{time_zone}'")
        try:
            cursor = [tuple(r) for r in conn.exec_driver_sql(query).fetchall()]
            chunks = list(query_chunks(conn, sa.text(query), {}, 2).chunks)
        finally:
            conn.exec_driver_sql("RESET TimeZone")
    assert all(isinstance(chunk, pa.RecordBatch) for chunk in chunks)  # the Arrow path, taken
    assert [len(chunk) for chunk in chunks][:1] == [min(2, len(LITERALS[type_name]))]
    arrow = [row for chunk in chunks for row in rows_of(chunk)]
    assert len(cursor) == len(LITERALS[type_name])
    assert _same(arrow, cursor), (arrow, cursor)


@pytest.mark.parametrize(
    "expression",
    [
        "CAST(1.25 AS DECIMAL(9, 2))",  # Decimal either way, but not a type Arrow was tested on
        "CAST('00000000-0000-0000-0000-000000000001' AS UUID)",  # bytes through Arrow
        "INTERVAL 3 DAY",  # Arrow's MonthDayNano, the cursor's timedelta
        "CAST(1 AS HUGEINT)",
        "[1, 2]",
    ],
)
def test_any_other_type_is_read_through_the_cursor(engine: sa.Engine, expression: str) -> None:
    query = f"SELECT 1 AS n, {expression} AS v UNION ALL SELECT 2, NULL ORDER BY n"
    with engine.connect() as conn:
        cursor = [tuple(r) for r in conn.exec_driver_sql(query).fetchall()]
        read = query_chunks(conn, sa.text(query), {}, 5)
        chunks = list(read.chunks)
    assert read.names == ("n", "v")
    assert chunks == [cursor] and isinstance(chunks[0], list)


def test_parameters_bind_in_a_text_query_and_in_a_select(engine: sa.Engine) -> None:
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE OR REPLACE TABLE arrow_people (id INTEGER, name VARCHAR)")
        conn.exec_driver_sql("INSERT INTO arrow_people SELECT i, 'p' || i FROM range(10) AS t(i)")
    people = sa.table("arrow_people", sa.column("id"), sa.column("name"))
    textual = sa.text(
        "SELECT id, name FROM arrow_people WHERE id >= :low AND name <> :name AND id >= :low "
        "ORDER BY id"
    )
    selected = sa.select(people.c.id, people.c.name).where(people.c.id < 3).order_by(people.c.id)
    with engine.connect() as conn:
        conn = conn.execution_options(**streaming(conn.dialect, 3))
        with query_chunks(conn, textual, {"low": 4, "name": "p5"}, 3) as read:
            assert read.names == ("id", "name")
            assert [rows_of(c) for c in read.chunks] == [
                [(4, "p4"), (6, "p6"), (7, "p7")],
                [(8, "p8"), (9, "p9")],
            ]
        with query_chunks(conn, selected, {}, 3) as read:
            assert [rows_of(c) for c in read.chunks] == [[(0, "p0"), (1, "p1"), (2, "p2")]]


def test_a_select_whose_parameters_sqlalchemy_converts_or_expands_is_read_through_the_cursor(
    engine: sa.Engine,
) -> None:
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE OR REPLACE TABLE arrow_days (id INTEGER, day DATE)")
        conn.exec_driver_sql(
            "INSERT INTO arrow_days "
            "SELECT i, DATE '2026-12-01' + CAST(i AS INTEGER) FROM range(5) AS t(i)"
        )
    days = sa.table("arrow_days", sa.column("id", sa.Integer), sa.column("day", sa.Date))
    listed = sa.select(days.c.id).where(days.c.id.in_([1, 3])).order_by(days.c.id)
    plain = sa.select(days.c.id).where(days.c.id >= 3).order_by(days.c.id)
    with engine.connect() as conn:
        with query_chunks(conn, listed, {}, 10) as read:
            chunks = list(read.chunks)
        assert chunks == [[(1,), (3,)]]  # tuples: SQLAlchemy expanded the list
        with query_chunks(conn, plain, {}, 10) as read:
            batches = list(read.chunks)
        assert isinstance(batches[0], pa.RecordBatch) and rows_of(batches[0]) == [(3,), (4,)]


def test_a_query_left_before_its_end_leaves_the_connection_usable(engine: sa.Engine) -> None:
    """Until its reader is closed, DuckDB's connection runs nothing else, not even the rollback
    that returns it to the pool."""
    with engine.connect() as conn:
        with query_chunks(conn, sa.text("SELECT * FROM range(100000)"), {}, 1000) as read:
            first = next(read.chunks)
        assert len(first) == 1000
        assert conn.execute(sa.text("SELECT 42")).scalar() == 42
        conn.rollback()


def test_a_query_failing_at_the_start_or_on_a_later_batch_fails_as_sqlalchemy_raises_it(
    engine: sa.Engine,
) -> None:
    with engine.connect() as conn, pytest.raises(sa.exc.DBAPIError, match="no_such_table"):
        query_chunks(conn, sa.text("SELECT * FROM no_such_table"), {}, 10)
    # A cast that fails on a row far down, after the first batches came: streamed, not sorted.
    later = (
        "SELECT CAST(CASE WHEN i < 900000 THEN CAST(i AS VARCHAR) ELSE 'x' END AS INTEGER) AS v "
        "FROM range(1000000) AS t(i)"
    )
    got: list[tuple[Any, ...]] = []
    with engine.connect() as conn:
        conn.exec_driver_sql("SET threads = 1")  # the first batches before the failing row
        try:
            with (
                query_chunks(conn, sa.text(later), {}, 1000) as read,
                pytest.raises(sa.exc.DBAPIError, match="Could not convert"),
            ):
                for chunk in read.chunks:
                    got.extend(rows_of(chunk))
        finally:
            conn.rollback()
            conn.exec_driver_sql("RESET threads")
    assert got[:3] == [(0,), (1,), (2,)] and 0 < len(got) < 900000


def test_some_columns_of_rows_or_of_a_batch() -> None:
    rows = [("a", 1, None), ("b", 2, "x")]
    batch = pa.RecordBatch.from_pylist(
        [{"s": "a", "n": 1, "t": None}, {"s": "b", "n": 2, "t": "x"}]
    )
    assert columns_of(rows, (0, 2)) == columns_of(batch, (0, 2)) == [["a", "b"], [None, "x"]]
    assert rows_of(batch) == rows and rows_of(rows) is rows
    every = [["a", "b"], [1, 2], [None, "x"]]
    assert [list(c) for c in every_column(rows, 3)] == every_column(batch, 3) == every
    assert every_column([], 3) == [(), (), ()]


def _times(zone: str | None) -> pa.Array:
    """Times with and without microseconds, before 1970 and near Python's edges, and a NULL."""
    utc = dt.UTC
    values = [
        dt.datetime(2026, 12, 5, 9, 0, tzinfo=utc),
        dt.datetime(2026, 12, 5, 9, 0, 0, 1, tzinfo=utc),
        dt.datetime(1969, 12, 31, 23, 59, 59, 999_999, tzinfo=utc),
        dt.datetime(1000, 1, 1, 0, 0, 0, 120_000, tzinfo=utc),
        dt.datetime(1, 1, 3, 12, 30, tzinfo=utc),
        dt.datetime(9999, 12, 29, 23, 59, 59, tzinfo=utc),
        None,
    ]
    return pa.array(values, type=pa.timestamp("us", tz=zone) if zone else pa.timestamp("us"))


@pytest.mark.parametrize("zone", [*sorted(_UTC_ZONES), None])
def test_times_written_by_arrow_as_isoformat_writes_them(zone: str | None) -> None:
    column = _times(zone)
    datetimes = [v for (v,) in rows_of(pa.record_batch([column], ["t"]))]
    expected = [None if v is None else v.isoformat() for v in datetimes]
    assert iso_texts(column) == expected
    assert expected[0] == ("2026-12-05T09:00:00+00:00" if zone else "2026-12-05T09:00:00")
    batch = pa.record_batch([column, pa.array(["a"] * len(column))], ["t", "s"])
    assert every_column(batch, 2, as_iso=[0]) == [expected, ["a"] * len(column)]
    assert every_column(batch, 2)[0] == datetimes


def test_times_arrow_cannot_write_as_isoformat_does_are_left_to_python() -> None:
    # A zone whose offset changes, another unit, a date, a time at the very edge: None.
    assert iso_texts(_times("Europe/Paris")) is None
    assert iso_texts(_times("UTC").cast(pa.timestamp("ms", tz="UTC"), safe=False)) is None
    assert iso_texts(pa.array([dt.date(2026, 12, 5)])) is None
    edge = pa.array([dt.datetime(9999, 12, 31, 23, 59)], type=pa.timestamp("us"))
    assert iso_texts(edge) is None
    batch = pa.record_batch([_times("Europe/Paris")], ["t"])
    assert every_column(batch, 1, as_iso=[0]) == every_column(batch, 1)


def test_rows_pack_as_a_batch_of_the_tables_types_or_stay_rows_where_arrow_refuses_a_value() -> (
    None
):
    table = sa.Table(
        "packed",
        sa.MetaData(),
        sa.Column("key", sa.String(10), primary_key=True),
        sa.Column("n", sa.Integer),
        sa.Column("ok", sa.Boolean),
        sa.Column("at", sa.DateTime(timezone=True)),
    )
    pack = BatchPacker.of(table, ("key", "n", "ok", "at"))
    assert pack is not None
    at = dt.datetime(2026, 12, 5, 9, 0, tzinfo=dt.UTC)
    batch = pack([("a", 1, True, at), ("b", None, None, None)])
    assert isinstance(batch, pa.RecordBatch)
    assert [str(t) for t in batch.schema.types] == [
        "string",
        "int64",
        "bool",
        "timestamp[us, tz=UTC]",
    ]
    assert rows_of(batch) == [("a", 1, True, at), ("b", None, None, None)]
    # A datetime for a text column: the rows as they are, for the loader to cast as any rows.
    odd = [(at, 1, True, None)]
    assert pack(odd) is odd
    # The same from the rows' columns: the batch, or rows as lists a caller may change.
    assert pack.columns([("a", "b"), (1, None), (True, None), (at, None)]).equals(batch)
    assert (
        pack.columns([(at,), (1,), (True,), (None,)])
        == as_rows([(at,), (1,), (True,), (None,)])
        == [[at, 1, True, None]]
    )
    # A column type Arrow has no mapping for here: no packer (StageWrites keeps rows as they are).
    assert BatchPacker.of(sa.Table("t", sa.MetaData(), sa.Column("d", sa.Numeric)), ("d",)) is None


@pytest.mark.parametrize(
    "values",
    [
        ["bench"] * 5,  # one text repeated: repeated by Arrow
        ["bench", "bench", "other", "bench"],  # not every value the first
        ["bench", "bench", None],
        [None, None],
        ["bench"],
        ["é" * 3, "é" * 3],
    ],
)
def test_a_column_of_one_repeated_text_packs_as_its_values_convert(
    values: list[str | None],
) -> None:
    table = sa.Table("repeated", sa.MetaData(), sa.Column("t", sa.String(20)))
    pack = BatchPacker.of(table, ("t",))
    assert pack is not None
    batch = pack.columns([values])
    assert batch.column(0).equals(pa.array(values, pa.string()))
    assert batch.column(0).to_pylist() == values
