"""Engine to engine: a PostgreSQL state store's rows replaced in a DuckDB warehouse's partition
without a Python value per row (PostgreSQL's CSV COPY read by DuckDB's read_csv), exactly as
written: NULL apart from the empty text, quotes, commas, newlines, unicode, instants in UTC."""

from __future__ import annotations

import collections
import contextlib
import datetime as dt
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from outbound_pipeline.warehouse import create_engine, dialects, insert_rows, replace_partition_from
from outbound_pipeline.warehouse.dialects import duckdb, postgres
from outbound_pipeline_tests.stores import postgres_server_url, scratch_postgres_database
from outbound_pipeline_tests.test_dialects import PARIS, meta, row, sample, stored


@pytest.mark.postgres
def test_a_partition_read_from_postgresql_replaced_in_duckdb(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A PostgreSQL state store publishing to a DuckDB warehouse: CSV COPY read by read_csv.
    tricky = "comma, \"quote\" and 'single', new\nline, back\\slash, Zoé 🎉"
    day = [row(f"k{i}", count=i, label=tricky if i % 3 else "") for i in range(900)]
    day.append(row("nulls", label=None, count=None, ratio=None, flag=None, day=None, seen_at=None))
    day.append(row("at", seen_at=dt.datetime(2026, 11, 25, 11, 0, 0, 7, tzinfo=PARIS)))
    with contextlib.ExitStack() as stack:
        url = stack.enter_context(scratch_postgres_database(postgres_server_url()))  # type: ignore[arg-type]
        state = create_engine(url)
        stack.callback(state.dispose)
        warehouse = create_engine(f"duckdb:///{tmp_path / 'w.duckdb'}")
        stack.callback(warehouse.dispose)
        meta.create_all(state)
        meta.create_all(warehouse)
        with state.begin() as conn:
            insert_rows(conn, sample, day + [row("other-day", part="2026-11-24")])
        with warehouse.begin() as conn:
            insert_rows(conn, sample, [row("stale"), row("kept", part="2026-11-24")])
        copies: list[int | None] = []

        def spied(*args: Any) -> int | None:
            copies.append(duckdb.copy_from_postgres(*args))
            return copies[-1]

        monkeypatch.setattr(dialects, "copy_from_postgres", spied)
        query = sa.select(sample).where(sample.c.part == "2026-11-25")
        for _ in range(2):  # idempotent
            with state.connect() as read, warehouse.begin() as write:
                copied = replace_partition_from(
                    read, query, write, sample, sample.c.part == "2026-11-25", chunk_rows=500
                )
            assert copied == len(day)
        assert copies == [len(day)] * 2  # the CSV path, not the row-by-row fallback
        got = stored(warehouse)
        assert got == {(r["part"], r["key"]): r for r in [*day, row("kept", part="2026-11-24")]}
        assert (
            got[("2026-11-25", "k0")]["label"] == ""
            and got[("2026-11-25", "k1")]["label"] == tricky
        )


def _number_the_writes(engine: sa.Engine) -> None:
    """Each row the warehouse's table receives gets the next number: a row deleted and inserted
    again gets a new one, a row left as it was keeps its own (the copy never names the column)."""
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE SEQUENCE dialect_sample_writes")
        conn.exec_driver_sql(
            "ALTER TABLE dialect_sample ADD COLUMN write_no BIGINT "
            "DEFAULT nextval('dialect_sample_writes')"
        )


@contextlib.contextmanager
def _writes(engine: sa.Engine) -> Iterator[collections.Counter[str]]:
    """The rows each kind of statement wrote into dialect_sample meanwhile, as the database counted
    them (DuckDB reports the rows an INSERT, UPDATE or DELETE touched)."""
    counted: collections.Counter[str] = collections.Counter()

    def count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        words = statement.split(None, 3)
        if "dialect_sample" in words[1:3] and words[0] in ("INSERT", "UPDATE", "DELETE"):
            counted[words[0]] += max(cursor.rowcount, 0)

    sa.event.listen(engine, "after_cursor_execute", count)
    try:
        yield counted
    finally:
        sa.event.remove(engine, "after_cursor_execute", count)


def _versions(engine: sa.Engine) -> dict[str, int]:
    with engine.connect() as conn:
        rows = conn.exec_driver_sql(
            "SELECT key, write_no FROM dialect_sample WHERE part = '2026-11-25'"
        )
        return dict(rows.tuples().all())


@contextlib.contextmanager
def _postgres_state_and_duckdb_warehouse(
    tmp_path: Path, day: list[dict[str, Any]]
) -> Iterator[tuple[sa.Engine, sa.Engine, Callable[[], int]]]:
    """A PostgreSQL state store holding `day`, an empty DuckDB warehouse numbering its writes, and
    the publication of the day from one to the other (its rows after it)."""
    with contextlib.ExitStack() as stack:
        state = create_engine(stack.enter_context(scratch_postgres_database(postgres_server_url())))  # type: ignore[arg-type]
        stack.callback(state.dispose)
        warehouse = create_engine(f"duckdb:///{tmp_path / 'w.duckdb'}")
        stack.callback(warehouse.dispose)
        meta.create_all(state)
        meta.create_all(warehouse)
        _number_the_writes(warehouse)
        with state.begin() as conn:
            insert_rows(conn, sample, day)
        query = sa.select(sample).where(sample.c.part == "2026-11-25")

        def publish() -> int:
            with state.connect() as read, warehouse.begin() as write:
                return replace_partition_from(
                    read, query, write, sample, sample.c.part == "2026-11-25", chunk_rows=100
                )

        yield state, warehouse, publish


@pytest.mark.postgres
def test_a_republication_into_duckdb_writes_only_the_rows_that_changed(tmp_path: Path) -> None:
    # Between two publications of a send only the rows whose outcome came in differ: the others
    # stay as they are (rewriting a million unchanged rows under the key's index took 25 s), and
    # the partition still ends exactly as the source.
    day = [row(f"k{i}", count=i) for i in range(300)]
    with _postgres_state_and_duckdb_warehouse(tmp_path, day) as (state, warehouse, publish):
        assert publish() == 300
        before = _versions(warehouse)
        with state.begin() as conn:
            changed = sample.c.key.in_(["k1", "k2"])
            conn.execute(sa.update(sample).where(changed).values(label=None, seen_at=None))
            conn.execute(sa.delete(sample).where(sample.c.key == "k3"))
            insert_rows(conn, sample, [row("new")])
        with _writes(warehouse) as written:
            assert publish() == 300
        assert written == {"UPDATE": 2, "DELETE": 1, "INSERT": 1}
        after = _versions(warehouse)
        assert set(after) == set(before) - {"k3"} | {"new"}
        # The changed rows updated in place; only the new one inserted.
        assert {key: after[key] for key in before if key in after} == {
            key: number for key, number in before.items() if key != "k3"
        }
        assert after["new"] not in before.values()
        assert stored(warehouse) == stored(state)
        with _writes(warehouse) as written:
            assert publish() == 300
        assert not written and _versions(warehouse) == after  # nothing changed: nothing written
        with state.begin() as conn:  # every row gone: an empty file, the partition emptied
            conn.execute(sa.delete(sample))
        assert publish() == 0 and not _versions(warehouse)


@pytest.mark.postgres
def test_a_republication_into_duckdb_where_every_row_changed_updates_them_in_place(
    tmp_path: Path,
) -> None:
    # Deleting and inserting a million rows again under the key's index took 32 s: rows whose key
    # is still there are updated. Every change must be seen, the smallest too: NULL to the empty
    # text and back, a timestamp a microsecond later.
    at = dt.datetime(2026, 11, 25, 9, 30, 15, 123456, tzinfo=dt.UTC)
    labels = ("", None, "x")
    day = [row(f"k{i}", label=labels[i % 3], seen_at=at) for i in range(300)]
    with _postgres_state_and_duckdb_warehouse(tmp_path, day) as (state, warehouse, publish):
        assert publish() == 300
        before = _versions(warehouse)
        with state.begin() as conn:
            conn.execute(sa.update(sample).where(sample.c.label == "").values(label=None))
            conn.execute(
                sa.update(sample)
                .where(
                    sample.c.label.is_(None), sample.c.key.in_([f"k{i}" for i in range(1, 300, 3)])
                )
                .values(label="")
            )
            conn.execute(
                sa.update(sample)
                .where(sample.c.label == "x")
                .values(seen_at=at + dt.timedelta(microseconds=1))
            )
        assert stored(state) != stored(warehouse)
        with _writes(warehouse) as written:
            assert publish() == 300
        assert written == {"UPDATE": 300}
        assert _versions(warehouse) == before  # not one row deleted and inserted again
        got = stored(warehouse)
        assert got == stored(state)
        assert (
            got[("2026-11-25", "k0")]["label"] is None and got[("2026-11-25", "k1")]["label"] == ""
        )
        assert got[("2026-11-25", "k2")]["seen_at"] == at + dt.timedelta(microseconds=1)


@pytest.mark.postgres
def test_postgresql_to_postgresql_copies_binary_only_between_the_same_types() -> None:
    # Binary COPY reads each value as the receiving column's type: an int8 sent to an int4 column
    # would fail, so a source of other types goes as text; the same types go binary, exactly.
    wide = sa.Table(  # its own metadata: the other tests' create_all must not make it
        "dialect_wide",
        sa.MetaData(),
        *(c.copy() for c in sample.columns if c.name != "count"),
        sa.Column("count", sa.BigInteger),
    )
    tricky = "tab\there, new\nline, back\\slash \\N, 'quote' \"dq\" Zoé 🎉"
    day = [row(f"k{i}", count=i, label=tricky if i % 2 else "") for i in range(600)]
    day.append(row("nulls", label=None, count=None, ratio=None, flag=None, day=None, seen_at=None))
    with contextlib.ExitStack() as stack:
        state = create_engine(stack.enter_context(scratch_postgres_database(postgres_server_url())))  # type: ignore[arg-type]
        stack.callback(state.dispose)
        warehouse = create_engine(
            stack.enter_context(scratch_postgres_database(postgres_server_url()))
        )  # type: ignore[arg-type]
        stack.callback(warehouse.dispose)
        meta.create_all(state, tables=[sample])
        wide.create(state)
        meta.create_all(warehouse, tables=[sample])
        with state.begin() as conn:
            insert_rows(conn, sample, day)
            insert_rows(conn, wide, day)
        for source in (sample, wide):
            query = sa.select(*(source.c[c.name] for c in sample.columns))
            with state.connect() as read, warehouse.begin() as write:
                same = postgres._same_types(
                    read,
                    query,
                    write,
                    write.connection.driver_connection.cursor(),
                    sample,  # type: ignore[union-attr]
                    tuple(query.selected_columns.keys()),
                )
                assert same is (source is sample)
                copied = replace_partition_from(
                    read, query, write, sample, sample.c.part == "2026-11-25", chunk_rows=100
                )
            assert copied == len(day)
            assert stored(warehouse) == stored(state)
