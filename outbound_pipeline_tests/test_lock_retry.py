"""Waiting for a DuckDB warehouse another process holds (warehouse.retry), on real locks: which
errors are waited out, how the waits grow, and when the wait ends; and when the file is
checkpointed (its last connection's close)."""

from __future__ import annotations

import time
from pathlib import Path

import duckdb
import pytest
import sqlalchemy as sa

from outbound_pipeline.warehouse import create_engine, is_lock_conflict, with_lock_retry
from outbound_pipeline.warehouse.engine import is_duckdb_file
from outbound_pipeline.warehouse.retry import FIRST_BACKOFF_SECONDS, MAX_BACKOFF_SECONDS
from outbound_pipeline_tests.stores import hold_duckdb_file


@pytest.fixture
def duck_url(tmp_path: Path) -> str:
    url = f"duckdb:///{tmp_path / 'warehouse.duckdb'}"
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE t (k INTEGER PRIMARY KEY, v INTEGER)")
        conn.exec_driver_sql("INSERT INTO t VALUES (1, 0)")
    engine.dispose()
    return url


def _path(url: str) -> str:
    return str(sa.make_url(url).database)


def test_what_counts_as_a_lock_conflict(duck_url: str, tmp_path: Path) -> None:
    holder = hold_duckdb_file(duck_url, 2.0, tmp_path)
    with pytest.raises(duckdb.Error) as held:
        duckdb.connect(_path(duck_url))
    holder.communicate(timeout=60)
    assert is_lock_conflict(held.value)  # another process holds the file

    first, second = duckdb.connect(_path(duck_url)), None
    try:
        second = first.cursor()
        first.execute("BEGIN; UPDATE t SET v = 1 WHERE k = 1")
        second.execute("BEGIN")
        with pytest.raises(duckdb.Error) as conflict:
            second.execute("UPDATE t SET v = 2 WHERE k = 1")
        assert is_lock_conflict(conflict.value)  # two transactions wrote the same row
        with pytest.raises(duckdb.Error) as other:
            first.execute("SELECT no_such_column FROM t")
        assert not is_lock_conflict(other.value)
    finally:
        if second is not None:
            second.close()
        first.close()
    # As SQLAlchemy wraps it, the driver's error in `orig`.
    wrapped = sa.exc.OperationalError("UPDATE", {}, conflict.value)
    assert is_lock_conflict(wrapped)


def test_an_operation_waits_for_the_file_with_growing_waits(duck_url: str, tmp_path: Path) -> None:
    waits: list[float] = []

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        time.sleep(seconds)

    def count_rows() -> int:
        with duckdb.connect(_path(duck_url)) as conn:
            return conn.execute("SELECT count(*) FROM t").fetchone()[0]  # type: ignore[index]

    holder = hold_duckdb_file(duck_url, 2.5, tmp_path)
    started = time.monotonic()
    assert with_lock_retry(count_rows, sleep=sleep) == 1
    holder.communicate(timeout=60)
    assert time.monotonic() - started > 1.5  # it waited for the holder, not failed
    assert len(waits) >= 3
    # Jittered between half and all of a backoff that doubles from the first to the cap.
    assert FIRST_BACKOFF_SECONDS / 2 <= waits[0] <= FIRST_BACKOFF_SECONDS
    assert all(w <= MAX_BACKOFF_SECONDS for w in waits)
    assert max(waits) > 4 * FIRST_BACKOFF_SECONDS


def test_the_wait_ends_at_its_deadline_and_other_errors_are_not_waited_out(
    duck_url: str, tmp_path: Path
) -> None:
    holder = hold_duckdb_file(duck_url, 5.0, tmp_path)
    started = time.monotonic()
    with pytest.raises(duckdb.Error) as last:
        with_lock_retry(lambda: duckdb.connect(_path(duck_url)), wait_seconds=0.5)
    waited = time.monotonic() - started
    holder.kill()
    holder.communicate(timeout=60)
    assert is_lock_conflict(last.value) and 0.5 <= waited < 2.5

    calls: list[int] = []

    def broken() -> None:
        calls.append(1)
        raise ValueError("not a lock")

    with pytest.raises(ValueError):
        with_lock_retry(broken, sleep=lambda s: pytest.fail("waited for an error that is no lock"))
    assert calls == [1]


def test_a_duckdb_warehouse_checkpoints_when_its_last_connection_closes(tmp_path: Path) -> None:
    # Not each time a commit leaves 16 MiB in the WAL (DuckDB's default): a stage's commits would
    # write the file's indexes again every few transactions. Nothing committed is lost either way.
    path = tmp_path / "warehouse.duckdb"
    wal = tmp_path / "warehouse.duckdb.wal"
    engine = create_engine(f"duckdb:///{path}")
    with engine.connect():  # the file stays open, as while a stage writes
        with engine.begin() as conn:
            conn.exec_driver_sql("CREATE TABLE t (i BIGINT PRIMARY KEY, s VARCHAR)")
        for start in range(0, 400_000, 100_000):
            with engine.begin() as conn:
                conn.exec_driver_sql(
                    "INSERT INTO t SELECT i, repeat('x', 60) || i "
                    f"FROM range({start}, {start + 100_000}) r(i)"
                )
        assert wal.stat().st_size > 16 * 2**20
    assert not wal.exists() or wal.stat().st_size == 0  # written into the file at the close
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM t").scalar() == 400_000


@pytest.mark.parametrize(
    ("database", "a_file"),
    [
        ("/data/warehouse.duckdb", True),
        ("warehouse.duckdb", True),
        ("md:brand", False),
        ("MotherDuck:brand", False),
        (":memory:", False),
        (":memory:named", False),
        ("s3://bucket/warehouse.duckdb", False),
        ("", False),
        (None, False),
    ],
)
def test_the_checkpoint_threshold_is_set_on_files_only(database: str | None, a_file: bool) -> None:
    # MotherDuck and remote databases keep their own settings.
    assert is_duckdb_file(database) is a_file
