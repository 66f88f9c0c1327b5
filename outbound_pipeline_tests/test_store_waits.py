"""The state store's transactions never wait on the warehouse, and the warehouse is held only for
an operation: while another process holds the DuckDB warehouse file (a brand's loader, another
run's write), a run that must read it waits outside any state-store transaction, and SQLite's
write lock on the state store stays free for the other runs of a backfill (their outcomes, claims
and plans), which would otherwise give up after the busy timeout."""

from __future__ import annotations

import datetime as dt
import logging
import sqlite3
import subprocess
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from outbound_pipeline.defs.campaigns.deliveries_asset import DeliveriesConfig
from outbound_pipeline.ledger import StateStoreResource, send_ledger
from outbound_pipeline.sending import DeliveryOptions, campaign_day, send_partition
from outbound_pipeline.warehouse import WarehouseResource, deliveries
from outbound_pipeline_tests.bulk import (
    DAY_AUDIENCE_SQL,
    assert_no_duplicate_messages,
    assert_one_outcome_per_audience_row,
    assign_days,
    bulk_campaign,
    bulk_config,
    published_columns,
    started_in_thread,
    statuses,
    wait_until_sent,
    write_config,
)
from outbound_pipeline_tests.conftest import (
    DAY,
    cli_materialize,
    deliveries_run_config,
    materialize_campaign,
    resources_for,
)
from outbound_pipeline_tests.stores import DemoCopies, Warehouse, hold_duckdb_file

HOLD_SECONDS = 4.0


def _waited_for_the_file(caplog: pytest.LogCaptureFixture) -> bool:
    """Whether an operation of the run met the holder's lock and waited (warehouse.retry says so)."""
    return any("waiting for it" in r.getMessage() for r in caplog.records)


def _state_is_writable(duck: Warehouse) -> bool:
    """Whether another writer gets the state store's write lock within a second."""
    path = sa.make_url(duck.state_url or "").database
    connection = sqlite3.connect(path, timeout=1.0, isolation_level=None)  # type: ignore[arg-type]
    try:
        connection.execute("BEGIN IMMEDIATE")
        connection.execute("COMMIT")
        return True
    except sqlite3.OperationalError as exc:
        assert "locked" in str(exc)
        return False
    finally:
        connection.close()


def _probe_while_held(
    duck: Warehouse,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    after: float,
    start: Callable[[], object] = lambda: None,
) -> tuple[bool, bool]:
    """Another process holds the DuckDB file for HOLD_SECONDS; `start` runs once it does, and
    `after` seconds later: whether the state store is writable, and whether the run has waited
    for the file. Returns once the holder let go."""
    caplog.set_level(logging.INFO, logger="outbound_pipeline.warehouse.retry")
    holder = hold_duckdb_file(duck.url, HOLD_SECONDS, tmp_path)
    start()
    time.sleep(after)
    writable = _state_is_writable(duck)
    waited = _waited_for_the_file(caplog)
    assert holder.communicate(timeout=60)[0] == "" and holder.returncode == 0
    return writable, waited


@pytest.mark.parametrize("stores", ["duckdb+sqlite"], indirect=True)
def test_planning_reads_the_warehouse_before_its_state_store_transaction(
    stores: Warehouse,
    demo_copies: DemoCopies,
    sandbox,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    duck = demo_copies.seed(stores, customers=90)
    config = bulk_config(bulk_campaign("bulk"))
    resources = resources_for(duck, sandbox)
    assert materialize_campaign(
        config, "bulk", resources, selection=["audience", "messages"]
    ).success
    day = campaign_day(duck.engine, config.campaign("bulk"), config, DAY)
    options = DeliveryOptions(**DeliveriesConfig().model_dump())

    def send() -> Any:
        now = lambda: dt.datetime.now(dt.UTC)  # noqa: E731
        log = logging.getLogger("test_store_waits")
        return send_partition(
            duck.state, duck.engine, day, resources["iadvize"], now, "run-1", options, log
        )

    started: list[Any] = []
    # The run waits for the file to plan the day.
    writable, waited = _probe_while_held(
        duck, tmp_path, caplog, HOLD_SECONDS / 2, lambda: started.append(started_in_thread(send))
    )
    runner, result = started[0]
    runner.join(120)
    assert waited, "the run never waited for the file: the test did not test"
    assert writable, "the state store was locked while the run waited for the warehouse"
    assert result and result[0].summary.calls == len(sandbox.messages()) > 0


@pytest.mark.parametrize("stores", ["duckdb+sqlite"], indirect=True)
def test_a_claim_polls_the_consents_before_its_state_store_transaction(
    stores: Warehouse,
    demo_copies: DemoCopies,
    sandbox,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    duck = demo_copies.seed(stores, customers=150)
    # Paced, and a bound of 5 s: the consents are polled every 2 s of a send of about 5 s and the
    # file held for 4 s of it.
    config = bulk_config(bulk_campaign("bulk", max_send_rate=20))
    resources = resources_for(duck, sandbox)
    resources["warehouse"] = WarehouseResource(url=duck.url, consent_bound_seconds=5.0)
    # No publication while the file is held (it waits for the file too, as it should).
    run_config = deliveries_run_config("bulk", concurrency=4, batch_size=10, publish_seconds=600)
    runner, done = started_in_thread(
        lambda: materialize_campaign(config, "bulk", resources, run_config=run_config).success
    )
    wait_until_sent(duck.state, "bulk", 10)
    # A poll falls due and waits for the file.
    writable, waited = _probe_while_held(duck, tmp_path, caplog, HOLD_SECONDS * 0.75)
    runner.join(120)
    assert waited, "no poll waited for the file: the test did not test"
    assert writable, "the state store was locked while a claim waited for the warehouse"
    assert done == [True]
    assert_no_duplicate_messages(sandbox.messages())


@pytest.mark.parametrize(
    "warehouse", [pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True
)
def test_a_server_warehouse_holds_no_connection_open_between_operations(
    warehouse: Warehouse,
) -> None:
    """Not only a file: a warehouse server gets a connection per operation, closed after it, and
    none is left idle in a pool; the state store keeps its pool (the send loop's transactions)."""
    name = f"outbound-test-{uuid.uuid4().hex[:10]}"
    url = sa.make_url(warehouse.url).update_query_dict({"application_name": name})
    url_text = url.render_as_string(hide_password=False)

    def open_connections() -> int:
        with warehouse.engine.connect() as admin:
            return admin.execute(
                sa.text("SELECT count(*) FROM pg_stat_activity WHERE application_name = :name"),
                {"name": name},
            ).scalar_one()

    stores = {
        "warehouse": WarehouseResource(url=url_text),
        "state": StateStoreResource(url=url_text),
    }
    for resource in stores.values():
        with resource.engine.connect() as conn:
            assert conn.execute(sa.text("SELECT 1")).scalar_one() == 1
        kept = open_connections()
        assert kept == (1 if resource is stores["state"] else 0)
        resource.engine.dispose()


@pytest.mark.cli
@pytest.mark.parametrize("stores", ["duckdb+sqlite"], indirect=True)
def test_a_backfills_parallel_runs_on_one_duckdb_file_all_succeed(
    stores: Warehouse, demo_copies: DemoCopies, sandbox, tmp_path: Path
) -> None:
    """Three days launched at once, one `dagster` process each, as a backfill launches them: the
    DuckDB file admits one process at a time, and each run's operations wait for the others'
    instead of failing; every day sent once, its published copy equal to its ledger."""
    duck = demo_copies.seed(stores, customers=90)
    days = [(dt.date.fromisoformat(DAY) - dt.timedelta(days=n)).isoformat() for n in range(3)]
    assign_days(duck.engine, days, per_day=8)
    campaign = bulk_campaign("backfill", audience_sql=DAY_AUDIENCE_SQL)
    config_path = write_config(tmp_path / "backfill.yaml", campaign)
    run_config = deliveries_run_config("backfill", concurrency=2, batch_size=5, publish_seconds=0.5)
    runs = []
    for day in days:
        command, env = cli_materialize(
            "group:backfill", config_path, duck, sandbox, tmp_path / f"home_{day}", run_config, day
        )
        log = (tmp_path / f"run_{day}.log").open("w")
        runs.append((day, subprocess.Popen(command, env=env, stdout=log, stderr=log), log))
    for day, process, log in runs:
        code = process.wait(timeout=600)
        log.close()
        assert code == 0, (day, (tmp_path / f"run_{day}.log").read_text()[-3000:])

    messages = sandbox.messages()
    assert_no_duplicate_messages(messages)
    sent = 0
    for day in days:
        rows = assert_one_outcome_per_audience_row(duck.state, "backfill", day, duck.engine)
        sent += statuses(rows)["sent"]
        published = published_columns(duck.engine, deliveries, "backfill", day)
        assert published == published_columns(duck.state, send_ledger, "backfill", day)
    assert sent == len(messages) > 0
