"""Engine to engine: a PostgreSQL state store's rows replaced in a DuckDB warehouse's partition
without a Python value per row (PostgreSQL's CSV COPY read by DuckDB's read_csv), exactly as
written: NULL apart from the empty text, quotes, commas, newlines, unicode, instants in UTC."""

from __future__ import annotations

import contextlib
import datetime as dt
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from outbound_pipeline.warehouse import create_engine, dialects, insert_rows, replace_partition_from
from outbound_pipeline.warehouse.dialects import duckdb
from outbound_pipeline_tests.conftest import postgres_server_url, scratch_postgres_database
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


def _versions(engine: sa.Engine) -> dict[str, int]:
    with engine.connect() as conn:
        rows = conn.exec_driver_sql(
            "SELECT key, write_no FROM dialect_sample WHERE part = '2026-11-25'"
        )
        return dict(rows.tuples().all())


@pytest.mark.postgres
def test_a_republication_into_duckdb_writes_only_the_rows_that_changed(tmp_path: Path) -> None:
    # Between two publications of a send only the rows whose outcome came in differ: the others
    # stay as they are (rewriting a million unchanged rows under the key's index took 25 s), and
    # the partition still ends exactly as the source.
    day = [row(f"k{i}", count=i) for i in range(300)]
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

        assert publish() == 300
        before = _versions(warehouse)
        with state.begin() as conn:
            changed = sample.c.key.in_(["k1", "k2"])
            conn.execute(sa.update(sample).where(changed).values(label=None, seen_at=None))
            conn.execute(sa.delete(sample).where(sample.c.key == "k3"))
            insert_rows(conn, sample, [row("new")])
        assert publish() == 300
        after = _versions(warehouse)
        assert set(after) == set(before) - {"k3"} | {"new"}
        rewritten = {key for key in after if key in before and after[key] != before[key]}
        assert rewritten == {"k1", "k2"}
        assert stored(warehouse) == stored(state)
        assert (
            publish() == 300 and _versions(warehouse) == after
        )  # nothing changed: nothing written
