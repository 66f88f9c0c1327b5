"""Two stores: the state store (SQLite or PostgreSQL) holds the ledger and everything that coordinates
sending; the brand's warehouse (here DuckDB, an analytical engine with a single writer) holds the
brand's tables and the analysts' tables, the ledger's published copy among them.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import sqlalchemy as sa

from outbound_pipeline.ledger import StateStoreError, publish_partition, send_ledger
from outbound_pipeline.ledger import publish as publish_module
from outbound_pipeline.warehouse import create_engine, daily_stats, deliveries
from outbound_pipeline_tests.bulk import (
    assert_no_duplicate_messages,
    assert_one_outcome_per_audience_row,
    bulk_campaign,
    published_columns,
    signal_when,
    statuses,
    write_config,
)
from outbound_pipeline_tests.conftest import (
    DAY,
    DUCKDB_STORES,
    DemoCopies,
    Warehouse,
    cli_materialize,
    deliveries_run_config,
    materialize_campaign,
    resources_for,
)

KEY = "order_ready"


@pytest.fixture
def duck(stores: Warehouse, demo_copies: DemoCopies) -> Warehouse:
    """The demo's brand tables in the warehouse, as the brand's loader put them there."""
    return demo_copies.seed(stores, customers=300)


def _rows(engine: sa.Engine, table: sa.Table, key: str = KEY) -> list[dict[str, Any]]:
    return published_columns(engine, table, key, DAY)


def _materialization(result: dg.ExecuteInProcessResult, name: str) -> dict[str, Any]:
    (event,) = result.asset_materializations_for_node(f"{KEY}__{name}")
    return {k: getattr(v, "value", v) for k, v in event.metadata.items()}


def _has_table(engine: sa.Engine, name: str) -> bool:
    with engine.connect() as conn:
        return sa.inspect(conn).has_table(name)


@pytest.mark.parametrize("stores", DUCKDB_STORES, indirect=True)
def test_the_whole_flow_on_a_duckdb_warehouse_with_the_state_apart(
    duck: Warehouse, sandbox, demo_config
) -> None:
    result = materialize_campaign(demo_config, KEY, resources_for(duck, sandbox))
    assert result.success
    rows = assert_one_outcome_per_audience_row(duck.state, KEY, DAY, duck.engine)
    sent = [r for r in rows if r.status == "sent"]
    assert sent and len(sent) == len(sandbox.messages())
    assert_no_duplicate_messages(sandbox.messages())

    # The analysts' copy in DuckDB is the ledger, row for row and column for column.
    published = _rows(duck.engine, deliveries)
    assert published == _rows(duck.state, send_ledger) and len(published) == len(rows)
    metadata = _materialization(result, "deliveries")
    assert metadata["published_rows"] == len(rows) and metadata["published_at"]
    with duck.engine.connect() as conn:
        stats = conn.execute(sa.select(daily_stats)).mappings().one()
    assert (stats["audience_rows"], stats["sent"]) == (len(rows), len(sent))
    # Each store holds its own tables only.
    assert not _has_table(duck.engine, "outbound_ledger")
    assert not _has_table(duck.state, "outbound_audience")

    # A rerun sends nothing more and publishes the same rows.
    assert materialize_campaign(demo_config, KEY, resources_for(duck, sandbox)).success
    assert len(sandbox.messages()) == len(sent)
    assert _rows(duck.engine, deliveries) == _rows(duck.state, send_ledger)


def _tamper_with_the_copy(warehouse: sa.Engine, ledger: list[dict[str, Any]]) -> None:
    """Rows of the published copy deleted, changed, and one added that the ledger never had."""
    with warehouse.begin() as conn:
        conn.execute(sa.delete(deliveries).where(deliveries.c.status == "skipped"))
        conn.execute(sa.update(deliveries).values(status="sent", reason="tampered"))
        stray = {**ledger[0], "delivery_key": "+33600000000", "row_key": "not-in-the-ledger"}
        conn.execute(sa.insert(deliveries), [stray])


@pytest.mark.parametrize("stores", ["duckdb+sqlite"], indirect=True)
def test_publication_is_idempotent_and_repairs_the_copy(
    duck: Warehouse, sandbox, demo_config
) -> None:
    assert materialize_campaign(demo_config, KEY, resources_for(duck, sandbox)).success
    ledger = _rows(duck.state, send_ledger)
    first = publish_partition(duck.state, duck.engine, KEY, DAY)
    second = publish_partition(duck.state, duck.engine, KEY, DAY)
    assert first.rows == second.rows == len(ledger)
    assert _rows(duck.engine, deliveries) == ledger
    # Whatever happened to the copy, the next publication makes it the ledger again.
    _tamper_with_the_copy(duck.engine, ledger)
    publish_partition(duck.state, duck.engine, KEY, DAY)
    assert _rows(duck.engine, deliveries) == ledger


def test_one_database_publishes_the_ledger_as_two_stores_do_idempotently(
    small: Warehouse, sandbox, demo_config, monkeypatch: pytest.MonkeyPatch
) -> None:
    """State store and warehouse in one database (the default): the step's publications read the
    ledger and write its copy as between two stores (no statement spans the two), the same rows."""
    copies: list[str] = []
    real = publish_module.replace_partition_from

    def the_one_flow(*args: Any, **kwargs: Any) -> int:
        copies.append(args[3].name)
        return real(*args, **kwargs)

    monkeypatch.setattr(publish_module, "replace_partition_from", the_one_flow)
    result = materialize_campaign(demo_config, KEY, resources_for(small, sandbox))
    assert result.success and "publication_error" not in _materialization(result, "deliveries")
    ledger = _rows(small.state, send_ledger)
    assert ledger and _materialization(result, "deliveries")["published_rows"] == len(ledger)
    assert _rows(small.engine, deliveries) == ledger
    assert copies and set(copies) == {"outbound_deliveries"}
    _tamper_with_the_copy(small.engine, ledger)
    for _ in range(2):
        assert publish_partition(small.state, small.engine, KEY, DAY).rows == len(ledger)
        assert _rows(small.engine, deliveries) == ledger


@pytest.mark.parametrize("warehouse", ["sqlite"], indirect=True)
def test_a_publication_that_failed_is_made_by_the_next_run(
    small: Warehouse, sandbox, demo_config
) -> None:
    """The warehouse refuses the end-of-step publication (a trigger here, as a warehouse gone away
    would): the sends stand, the step says so, and the next run publishes the whole day."""
    with small.engine.begin() as conn:
        conn.exec_driver_sql(
            "CREATE TRIGGER refuse_publication BEFORE INSERT ON outbound_deliveries "
            "BEGIN SELECT RAISE(ABORT, 'the warehouse is unavailable'); END"
        )
    resources = resources_for(small, sandbox)
    first = materialize_campaign(demo_config, KEY, resources)
    assert first.success
    metadata = _materialization(first, "deliveries")
    assert metadata["published_rows"] == 0 and "unavailable" in metadata["publication_error"]
    sent = [r for r in _rows(small.state, send_ledger) if r["status"] == "sent"]
    assert sent and not _rows(small.engine, deliveries)

    with small.engine.begin() as conn:
        conn.exec_driver_sql("DROP TRIGGER refuse_publication")
    again = materialize_campaign(demo_config, KEY, resources, selection=["deliveries"])
    assert again.success and "publication_error" not in _materialization(again, "deliveries")
    assert _rows(small.engine, deliveries) == _rows(small.state, send_ledger)
    assert len(sandbox.messages()) == len(sent)
    assert_no_duplicate_messages(sandbox.messages())


# Each process, once both are ready, writes one row per transaction and keeps the file a moment:
# the other must wait for it.
_WRITER = """
import pathlib, sys, time
import sqlalchemy as sa
from outbound_pipeline.warehouse import create_engine
url, who, ready, rows = sys.argv[1], sys.argv[2], pathlib.Path(sys.argv[3]), int(sys.argv[4])
engine = create_engine(url)
(ready / who).touch()
while len(list(ready.iterdir())) < 2:
    time.sleep(0.01)
for i in range(rows):
    with engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO writes VALUES (:who, :i)"), {"who": who, "i": i})
        time.sleep(0.05)
"""


def test_two_processes_writing_one_duckdb_file_both_succeed(tmp_path: Path) -> None:
    url = f"duckdb:///{tmp_path / 'warehouse.duckdb'}"
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE writes (who VARCHAR, i INTEGER)")
    ready = tmp_path / "ready"
    ready.mkdir()
    writers = [
        subprocess.Popen(
            [sys.executable, "-c", _WRITER, url, who, str(ready), "15"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for who in ("first", "second")
    ]
    for writer in writers:
        _, err = writer.communicate(timeout=120)
        assert writer.returncode == 0, err[-2000:]
    with engine.connect() as conn:
        counts = dict(conn.exec_driver_sql("SELECT who, count(*) FROM writes GROUP BY who").all())
    engine.dispose()
    assert counts == {"first": 15, "second": 15}


def test_a_warehouse_that_cannot_hold_state_fails_loading_with_one_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from outbound_pipeline import cli, definitions, settings

    secret_path = tmp_path / "s3cret-warehouse.duckdb"
    monkeypatch.setenv("OUTBOUND_WAREHOUSE_URL", f"duckdb:///{secret_path}")
    monkeypatch.delenv("OUTBOUND_STATE_URL", raising=False)
    with pytest.raises(Exception) as raised:
        definitions.defs()
    text = "".join(str(e) for e in _chain(raised.value))
    assert "OUTBOUND_STATE_URL is not set" in text and "duckdb" in text
    assert "SQLite" in text and "PostgreSQL" in text and "s3cret" not in text
    # So do the command's halts, which are in the state store.
    assert cli.main(["halts", "list"]) == 2
    # Named by OUTBOUND_STATE_URL itself, it is refused the same way.
    monkeypatch.setenv("OUTBOUND_STATE_URL", f"duckdb:///{secret_path}")
    with pytest.raises(StateStoreError, match="^OUTBOUND_STATE_URL: it is a duckdb database"):
        settings.state_from_env()


def test_the_state_store_is_the_warehouse_when_it_can_hold_the_state(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from outbound_pipeline import settings

    monkeypatch.delenv("OUTBOUND_STATE_URL", raising=False)
    monkeypatch.delenv("OUTBOUND_WAREHOUSE_URL", raising=False)
    assert settings.state_from_env().url is None  # the embedded warehouse's file
    for url in ("sqlite:////data/warehouse.sqlite", "postgresql://brand:s3cret@db/warehouse"):
        monkeypatch.setenv("OUTBOUND_WAREHOUSE_URL", url)
        state = settings.resources_from_env()["state"]
        # The URL comes from the environment at run time: the resource's config holds its name.
        assert (
            isinstance(state.url, dg.EnvVar) and state.url.env_var_name == "OUTBOUND_WAREHOUSE_URL"
        )
        assert "s3cret" not in repr(state)
    monkeypatch.setenv("OUTBOUND_STATE_URL", "postgresql://outbound:s3cret@db/state")
    state = settings.state_from_env()
    assert isinstance(state.url, dg.EnvVar) and state.url.env_var_name == "OUTBOUND_STATE_URL"


def _chain(exc: BaseException | None) -> list[BaseException]:
    out = []
    while exc is not None:
        out.append(exc)
        exc = exc.__cause__ or exc.__context__
    return out


@pytest.mark.cli
@pytest.mark.parametrize("stores", ["duckdb+sqlite"], indirect=True)
def test_the_cli_refuses_to_run_on_a_warehouse_that_cannot_hold_state(
    stores: Warehouse, sandbox, tmp_path: Path
) -> None:
    config_path = write_config(tmp_path / "bulk.yaml", bulk_campaign("bulk"))
    command, env = cli_materialize(
        "group:bulk", config_path, stores, sandbox, tmp_path / "dagster_home", {}
    )
    env.pop("OUTBOUND_STATE_URL")
    run = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode != 0
    assert "OUTBOUND_STATE_URL is not set, and the warehouse (OUTBOUND_WAREHOUSE_URL)" in run.stderr
    assert not sandbox.messages()


# About 800 audience rows, some 450 eligible: enough to catch a run in the middle of sending.
SMALL = "customer_id < 'C000800'"


def _count(engine: sa.Engine, table: sa.Table) -> int:
    with engine.connect() as conn:
        return conn.execute(
            sa.select(sa.func.count()).where(
                table.c.campaign_key == "bulk", table.c.status.in_(("sent", "sending"))
            )
        ).scalar_one()


@pytest.mark.cli
@pytest.mark.parametrize("stores", ["duckdb+postgres"], indirect=True)
def test_cli_run_killed_mid_send_on_duckdb_and_postgres_then_rerun(
    stores: Warehouse, demo_copies: DemoCopies, sandbox, tmp_path: Path
) -> None:
    big = demo_copies.seed(stores, customers=2500)
    sandbox.configure(latency_ms=25)
    campaign = bulk_campaign("bulk", where=SMALL)
    config_path = write_config(tmp_path / "bulk.yaml", campaign)
    run_config = deliveries_run_config("bulk", concurrency=4, batch_size=10, publish_seconds=0.5)
    command, env = cli_materialize(
        "group:bulk", config_path, big, sandbox, tmp_path / "dagster_home", run_config
    )

    # Killed once the send is under way and a timed publication has reached the warehouse (looked
    # at seldom: each look holds the DuckDB file the run may be waiting for).
    def sending_and_published() -> bool:
        return _count(big.state, send_ledger) >= 60 and _count(big.engine, deliveries) > 0

    signal_when(command, env, signal.SIGKILL, sending_and_published, poll_seconds=0.3, timeout=180)
    assert sandbox.messages()

    # Run again as the operator would: the same command.
    rerun = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    messages = sandbox.messages()
    assert_no_duplicate_messages(messages)
    rows = assert_one_outcome_per_audience_row(big.state, "bulk", DAY, big.engine)
    assert statuses(rows)["sent"] > 0 and not [
        r for r in rows if r.status in ("pending", "sending")
    ]
    # Nothing missing, nothing twice: the warehouse's deliveries are the ledger.
    assert _rows(big.engine, deliveries, "bulk") == _rows(big.state, send_ledger, "bulk")
