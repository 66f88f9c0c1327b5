"""The dialect layer (warehouse/dialects) on SQLite, PostgreSQL and DuckDB: what goes in comes back
(text with unicode, integers, floats, booleans, dates, timestamps in UTC, NULLs), through each
engine's bulk path (COPY, NumPy columns, executemany) and the portable fallback; upserts keep the
last row of a key; a partition's replacement is idempotent and leaves the others alone."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
import sqlalchemy as sa

from outbound_pipeline.warehouse import (
    StageWrites,
    WarehouseError,
    date_parameter,
    dialects,
    insert_rows,
    loader_for,
    one_of,
    quote_name,
    replace_partition,
    replace_partition_from,
    upsert_rows,
)
from outbound_pipeline.warehouse.dialects import postgres
from outbound_pipeline.warehouse.dialects import sqlite as sqlite_dialect
from outbound_pipeline_tests.dialect_sample import (
    ENGINES,
    PARIS,
    emptied,
    meta,
    row,
    sample,
    sample_engine,
    stored,
)

engine = pytest.fixture(scope="module", params=ENGINES)(sample_engine)
empty = pytest.fixture(autouse=True)(emptied)


def test_values_of_every_type_and_nulls_come_back_as_written(engine: sa.Engine) -> None:
    nulls = {name: None for name in ("label", "count", "ratio", "flag", "day", "seen_at")}
    rows = [row("a"), row("b", flag=False, count=-7, ratio=1e-3), row("c", **nulls)]
    with engine.begin() as conn:
        insert_rows(conn, sample, rows)
    got = stored(engine)
    assert got == {(r["part"], r["key"]): r for r in rows}
    assert got[("2026-11-25", "a")]["flag"] is True


def test_timestamps_are_stored_as_instants_a_naive_one_being_utc(engine: sa.Engine) -> None:
    paris = dt.datetime(2026, 11, 25, 11, 0, tzinfo=PARIS)
    naive = dt.datetime(2026, 11, 25, 9, 0)
    with engine.begin() as conn:
        insert_rows(conn, sample, [row("paris", seen_at=paris), row("naive", seen_at=naive)])
    got = stored(engine)
    assert got[("2026-11-25", "paris")]["seen_at"] == dt.datetime(2026, 11, 25, 9, 0, tzinfo=dt.UTC)
    assert got[("2026-11-25", "naive")]["seen_at"] == dt.datetime(2026, 11, 25, 9, 0, tzinfo=dt.UTC)


@pytest.mark.parametrize("size", [3, 1200])  # 1,200 rows: PostgreSQL's COPY path
def test_upsert_keeps_the_last_row_of_each_key(engine: sa.Engine, size: int) -> None:
    first = [row(f"k{i:05d}", count=i) for i in range(size)]
    with engine.begin() as conn:
        upsert_rows(conn, sample, first)
    # Out of key order: of one key, the last given wins.
    again = [row("k00002", count=-3, label="first"), row("k00001", count=-1, label="first")]
    again += [row("k00002", count=-4, label="last"), row("k00001", count=-2, label="last")]
    again += [row("new", count=None)]
    with engine.begin() as conn:
        upsert_rows(conn, sample, again)
    got = stored(engine)
    assert len(got) == size + 1
    assert got[("2026-11-25", "k00001")]["count"] == -2
    assert got[("2026-11-25", "k00001")]["label"] == "last"
    assert got[("2026-11-25", "k00002")]["count"] == -4
    assert got[("2026-11-25", "k00000")] == first[0]


def test_a_row_without_its_key_is_the_databases_error_naming_the_table(engine: sa.Engine) -> None:
    """A key column left empty among others: the database refuses it, and the error names the
    table."""
    rows = [row("k00001", count=1), row(None, count=2), row("k00000", count=3)]  # type: ignore[arg-type]
    with pytest.raises(WarehouseError, match=sample.name), engine.begin() as conn:
        upsert_rows(conn, sample, rows)
    assert stored(engine) == {}


# A stage's rows added as they are, or packed as its workers pack them (StageWrites.pack: a record
# batch on DuckDB, the rows as they are elsewhere).
PACKED = pytest.mark.parametrize("packed", [False, True], ids=["rows", "packed"])


def _added(writes: StageWrites, rows: list[tuple[Any, ...]], packed: bool) -> None:
    writes.add(writes.pack(rows) if packed else rows)


@PACKED
def test_a_stages_row_without_its_key_fails_with_the_databases_error(
    engine: sa.Engine, packed: bool
) -> None:
    """Also where a stage inserts first (DuckDB, PostgreSQL): the upsert after the failed insert
    fails the same way, the insert's error its cause, and nothing of the transaction is written."""
    columns = ("part", "key", "count")
    rows = [("2026-11-25", "k00001", 1), ("2026-11-25", None, 2), ("2026-11-25", "k00000", 3)]
    with engine.connect() as write:
        writes = StageWrites(write, sample, columns)
        with pytest.raises(WarehouseError, match=sample.name) as failure:
            _added(writes, rows, packed)
            writes.flush()
    inserts_first = loader_for(engine.dialect).stage_inserts_first
    assert isinstance(failure.value.__cause__, WarehouseError) == inserts_first
    assert stored(engine) == {}


def test_rows_given_as_sequences_with_their_columns(engine: sa.Engine) -> None:
    columns = ("part", "key", "count")
    with engine.begin() as conn:
        insert_rows(conn, sample, [("2026-11-25", "t", 5), ("2026-11-25", "u", None)], columns)
    got = stored(engine)
    assert got[("2026-11-25", "t")]["count"] == 5 and got[("2026-11-25", "u")]["label"] is None


@PACKED
def test_a_stage_writes_in_transactions_of_its_dialects_size(
    engine: sa.Engine, packed: bool
) -> None:
    """Each chunk committed as it comes on PostgreSQL; on SQLite and DuckDB, chunks gathered until
    they hold `stage_rows` rows, the rest at `flush`."""
    size = loader_for(engine.dialect).stage_rows
    assert size == {"sqlite": 50_000, "postgresql": 1, "duckdb": 20_000}[engine.dialect.name]
    chunk = max(700, size // 4)
    chunks = [
        [("2026-11-25", f"k{start + i:06d}", start + i) for i in range(chunk)]
        for start in range(0, 2 * size + 3 * chunk, chunk)
    ]
    committed, expected, pending, total = [], [], 0, 0
    with engine.connect() as write:
        writes = StageWrites(write, sample, ("part", "key", "count"))
        for rows in chunks:
            _added(writes, rows, packed)
            with engine.connect() as conn:  # what other connections see: the rows committed
                committed.append(
                    conn.execute(sa.select(sa.func.count()).select_from(sample)).scalar()
                )
            pending += len(rows)
            if pending >= size:
                total, pending = total + pending, 0
            expected.append(total)
        writes.flush()
        assert len(stored(engine)) == len(chunks) * chunk
        _added(writes, [("2026-11-25", "never-flushed", 0)], packed)
    assert committed == expected
    # On SQLite and DuckDB, some chunks waited for the next transaction.
    assert (committed == [chunk * (n + 1) for n in range(len(chunks))]) == (size == 1)
    got = stored(engine)
    assert len(got) == len(chunks) * chunk + (size == 1)
    assert got[("2026-11-25", "k000701")]["count"] == 701
    # A row added after the last flush: written at once where a chunk is a transaction, else never.
    assert (("2026-11-25", "never-flushed") in got) == (size == 1)


@PACKED
def test_a_stage_writes_over_the_keys_a_concurrent_run_wrote(
    engine: sa.Engine, packed: bool
) -> None:
    """A key already in the table (a concurrent run of the partition wrote it) or given twice in
    one transaction: the stage's last row of the key wins, nothing fails, no row is lost; also
    where a stage inserts first (DuckDB, PostgreSQL), the insert's failure rolled back before the
    upsert."""
    with engine.begin() as conn:
        upsert_rows(conn, sample, [row("k00003", label="concurrent", count=-1)])
    size = loader_for(engine.dialect).stage_rows
    columns = ("part", "key", "label", "count")
    rows = [("2026-11-25", f"k{i:05d}", "stage", i) for i in range(max(size, 10))]
    rows.append(("2026-11-25", "k00005", "stage, again", 55))
    with engine.connect() as write:
        writes = StageWrites(write, sample, columns)
        _added(writes, rows, packed)
        writes.flush()
    got = stored(engine)
    assert len(got) == max(size, 10)
    assert (got[("2026-11-25", "k00003")]["label"], got[("2026-11-25", "k00003")]["count"]) == (
        "stage",
        3,
    )
    assert got[("2026-11-25", "k00005")]["label"] == "stage, again"
    assert got[("2026-11-25", "k00004")]["count"] == 4


@PACKED
def test_a_stages_rows_of_every_type_come_back_as_written(engine: sa.Engine, packed: bool) -> None:
    """Packed or not: text with unicode, integers, floats, booleans, dates, NULLs, and timestamps
    as instants (an aware one in UTC, a naive one being UTC); rows added as they are, then packed
    ones, in one stage."""
    paris = dt.datetime(2026, 11, 25, 11, 0, tzinfo=PARIS)
    naive = dt.datetime(2026, 11, 25, 9, 0)
    columns = tuple(sample.c.keys())
    nulls = {name: None for name in ("label", "count", "ratio", "flag", "day", "seen_at")}
    given = [
        row("a"),
        row("b", flag=False, count=-7, ratio=1e-3),
        row("c", **nulls),
        row("paris", seen_at=paris),
        row("naive", seen_at=naive),
    ]
    rows = [tuple(r[name] for name in columns) for r in given]
    with engine.connect() as write:
        writes = StageWrites(write, sample, columns)
        writes.add(rows[:1])
        _added(writes, rows[1:], packed)
        writes.flush()
    got = stored(engine)
    utc = dt.datetime(2026, 11, 25, 9, 0, tzinfo=dt.UTC)
    expected = {(r["part"], r["key"]): r for r in given}
    expected[("2026-11-25", "paris")]["seen_at"] = expected[("2026-11-25", "naive")]["seen_at"] = (
        utc
    )
    assert got == expected
    assert got[("2026-11-25", "b")]["flag"] is False and got[("2026-11-25", "a")]["flag"] is True
    # DuckDB's workers pack an Arrow batch; elsewhere the rows travel as they are.
    assert (type(writes.pack(rows)) is not list) == (engine.dialect.name == "duckdb")


def test_a_keys_last_row_wins_whether_it_came_as_rows_or_packed(engine: sa.Engine) -> None:
    """A stage adding rows, then a packed batch, then rows again (on DuckDB each kind written
    apart): each key keeps the row added last."""
    columns = ("part", "key", "label")
    with engine.connect() as write:
        writes = StageWrites(write, sample, columns)
        writes.add([("2026-11-25", "a", "rows, first")])
        writes.add(
            writes.pack([("2026-11-25", "a", "packed, after"), ("2026-11-25", "b", "packed")])
        )
        writes.add([("2026-11-25", "b", "rows, after")])
        writes.flush()
    got = stored(engine)
    assert {key: got[("2026-11-25", key)]["label"] for key in ("a", "b")} == {
        "a": "packed, after",
        "b": "rows, after",
    }


def _replace(engine: sa.Engine, part: str, rows: list[dict[str, Any]]) -> int:
    with engine.begin() as conn:
        return replace_partition(
            conn,
            sample,
            sample.c.part == part,
            (rows[i : i + 700] for i in range(0, len(rows), 700)),
        )


def test_replacing_a_partition_is_idempotent_and_leaves_the_others(engine: sa.Engine) -> None:
    other = [row("x", part="2026-11-24")]
    day = [row(f"k{i}", count=i) for i in range(1500)]
    assert _replace(engine, "2026-11-24", other) == 1
    assert _replace(engine, "2026-11-25", day) == 1500
    assert _replace(engine, "2026-11-25", day) == 1500
    got = stored(engine)
    assert len(got) == 1501 and got[("2026-11-24", "x")] == other[0]
    assert _replace(engine, "2026-11-25", day[:10]) == 10
    assert len(stored(engine)) == 11


def _copy_into_sample(engine: sa.Engine, query: sa.Select[Any], chunk_rows: int) -> int:
    """The 2026-11-25 partition of the sample table replaced by what `query` selects, read on
    another connection (the publication's path)."""
    with engine.connect() as read, engine.begin() as write:
        return replace_partition_from(
            read.execution_options(read_only=True),
            query,
            write,
            sample,
            sample.c.part == "2026-11-25",
            chunk_rows=chunk_rows,
        )


def test_a_partition_replaced_from_a_query_on_another_connection(
    engine: sa.Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The publication's path: PostgreSQL streams COPY into COPY (text escaping of tabs, newlines,
    # backslashes and NULLs both ways), SQLite copies the values as stored, the others read in
    # chunks and write through their loader.
    source = sa.Table(
        "dialect_source", meta, *(c.copy() for c in sample.columns), extend_existing=True
    )
    tricky = "tab\there, new\nline, back\\slash \\N, ; 'quote' \"dq\" Zoé 🎉"
    day = [row(f"k{i}", count=i, label=tricky if i % 2 else None) for i in range(1200)]
    day.append(row("at", seen_at=dt.datetime(2026, 11, 25, 11, 0, tzinfo=PARIS), flag=None))
    source.create(engine, checkfirst=True)
    piped: list[int | None] = []
    stored_values: list[int] = []

    def spied_pipe(*args: Any) -> int | None:
        piped.append(postgres.pipe_copy(*args))
        return piped[-1]

    def spied_copy(*args: Any) -> int:
        stored_values.append(sqlite_dialect.copy_stored_values(*args))
        return stored_values[-1]

    monkeypatch.setattr(dialects, "pipe_copy", spied_pipe)
    monkeypatch.setattr(dialects, "copy_stored_values", spied_copy)
    try:
        with engine.begin() as conn:
            conn.execute(sa.delete(source))
            insert_rows(conn, source, day + [row("other-day", part="2026-11-24")])
        _replace(engine, "2026-11-25", [row("stale")])
        query = sa.select(source).where(source.c.part == "2026-11-25")
        for _ in range(2):  # idempotent
            assert _copy_into_sample(engine, query, chunk_rows=500) == len(day)
            got = stored(engine)
            assert got == {(r["part"], r["key"]): r for r in day}
        assert got[("2026-11-25", "k1")]["label"] == tricky
        # PostgreSQL took the COPY pipe (the rows never became Python values), SQLite copied the
        # values as stored; the others read in chunks.
        assert piped == ([len(day)] * 2 if engine.dialect.name == "postgresql" else [])
        assert stored_values == ([len(day)] * 2 if engine.dialect.name == "sqlite" else [])
        assert got[("2026-11-25", "at")]["seen_at"] == dt.datetime(
            2026, 11, 25, 9, 0, tzinfo=dt.UTC
        )
    finally:
        source.drop(engine)
        meta.remove(source)


def test_a_failed_replacement_leaves_the_partition_as_it_was(engine: sa.Engine) -> None:
    _replace(engine, "2026-11-25", [row("a"), row("b")])
    # The second batch breaks the key (a row twice): the whole replacement is rolled back.
    batches = [[row("c")], [row("d"), row("d")]]
    with pytest.raises(WarehouseError), engine.begin() as conn:
        replace_partition(conn, sample, sample.c.part == "2026-11-25", batches)
    assert sorted(k for _, k in stored(engine)) == ["a", "b"]


def test_a_partition_replaced_from_a_query_with_lists_and_timestamps(engine: sa.Engine) -> None:
    """The copy binds the query's parameters as SQLAlchemy does: a list expanded (PostgreSQL's
    COPY of a statement included), a timestamp as the column stores it (SQLite's stored-values
    path included)."""
    source = sa.Table(
        "dialect_source", meta, *(c.copy() for c in sample.columns), extend_existing=True
    )
    source.create(engine, checkfirst=True)
    seen = dt.datetime(2026, 11, 25, 9, 30, tzinfo=dt.UTC)
    day = [row(f"k{i}", seen_at=seen if i % 2 else None) for i in range(10)]
    try:
        with engine.begin() as conn:
            conn.execute(sa.delete(source))
            insert_rows(conn, source, day)
        query = sa.select(source).where(
            source.c.key.in_(["k1", "k2", "k3", "k5"]), source.c.seen_at == seen
        )
        assert _copy_into_sample(engine, query, chunk_rows=2) == 3
        assert sorted(k for _, k in stored(engine)) == ["k1", "k3", "k5"]
    finally:
        source.drop(engine, checkfirst=True)


def test_a_partition_date_binds_against_a_date_column(engine: sa.Engine) -> None:
    with engine.begin() as conn:
        insert_rows(conn, sample, [row("a"), row("b", day=dt.date(2026, 11, 24))])
    day = date_parameter(engine.dialect, "2026-11-25")
    with engine.connect() as conn:
        # The brand's SQL as a campaign writes it: its DATE column against :partition_date.
        keys = conn.execute(
            sa.text(
                f"SELECT key FROM {quote_name(engine.dialect, 'dialect_sample')} WHERE day = :d"
            ),
            {"d": day},
        ).scalars()
        assert list(keys) == ["a"]


def test_one_of_a_long_list_matches_exactly_its_values(engine: sa.Engine) -> None:
    awkward = ["it's", 'say "hi"', "Zoé 🎉", "back\\slash", "%s", ":name", "?", "a,b", "[1]", ""]
    keys = [*awkward, *(f"k{n}" for n in range(3000))]
    with engine.begin() as conn:
        insert_rows(conn, sample, [row(k) for k in keys])
    # Every awkward value, one key of every hundred, and values that are no key at all.
    asked = [*awkward, *keys[10::100], "k-1", "K1", "k1 ", "k3000"]
    with engine.connect() as conn:
        found = set(
            conn.scalars(sa.select(sample.c.key).where(one_of(conn.dialect, sample.c.key, asked)))
        )
        nothing = conn.scalars(
            sa.select(sample.c.key).where(one_of(conn.dialect, sample.c.key, []))
        )
        assert list(nothing) == []
    assert found == {*awkward, *keys[10::100]}


def test_quoting_and_the_loader_of_each_dialect(engine: sa.Engine) -> None:
    assert quote_name(engine.dialect, "brand.customers") == "brand.customers"
    assert quote_name(engine.dialect, "Order") == '"Order"'
    expected = {
        "postgresql": "PostgresLoader",
        "duckdb": "DuckDBLoader",
        "sqlite": "ExecutemanyLoader",
    }
    assert type(loader_for(engine.dialect)).__name__ == expected[engine.dialect.name]

    # 1,200 rows in the size test below cover PostgreSQL's COPY path.
    assert postgres.COPY_MIN_ROWS <= 1000


@pytest.mark.parametrize("engine", ["sqlite"], indirect=True)
def test_a_sqlite_connection_writes_ahead_and_caches_a_large_days_pages(engine: sa.Engine) -> None:
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar_one() == "wal"
        # Negative: KiB. 64 MiB, not SQLite's 2 MiB.
        assert conn.exec_driver_sql("PRAGMA cache_size").scalar_one() == -65536
