"""The state store's transactions never wait on the warehouse, and the warehouse is held only for
an operation: while another process holds the DuckDB warehouse file (a brand's loader, another
run's write), a run that must read it waits outside any state-store transaction, and SQLite's
write lock on the state store stays free for the other runs of a backfill (their outcomes, claims
and plans), which would otherwise give up after the busy timeout."""

from __future__ import annotations

import datetime as dt
import logging
import sqlite3
import threading
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
from outbound_pipeline.warehouse import WarehouseResource
from outbound_pipeline_tests.bulk import assert_no_duplicate_messages, bulk_campaign, bulk_config
from outbound_pipeline_tests.conftest import (
    DAY,
    deliveries_run_config,
    materialize_campaign,
    resources_for,
)
from outbound_pipeline_tests.stores import DemoCopies, Warehouse, hold_duckdb_file

HOLD_SECONDS = 4.0


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


def _in_background(fn: Callable[[], Any]) -> tuple[threading.Thread, list[Any]]:
    box: list[Any] = []
    thread = threading.Thread(target=lambda: box.append(fn()), daemon=True)
    thread.start()
    return thread, box


def _sent(duck: Warehouse) -> int:
    with duck.state.connect() as conn:
        return conn.execute(
            sa.select(sa.func.count()).where(send_ledger.c.status == "sent")
        ).scalar_one()


@pytest.mark.parametrize("stores", ["duckdb+sqlite"], indirect=True)
def test_planning_reads_the_warehouse_before_its_state_store_transaction(
    stores: Warehouse, demo_copies: DemoCopies, sandbox, tmp_path: Path
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

    holder = hold_duckdb_file(duck.url, HOLD_SECONDS, tmp_path)
    runner, result = _in_background(send)
    time.sleep(HOLD_SECONDS / 2)  # the run waits for the file to plan the day
    writable = _state_is_writable(duck)
    assert holder.communicate(timeout=60)[0] == "" and holder.returncode == 0
    runner.join(120)
    assert writable, "the state store was locked while the run waited for the warehouse"
    assert result and result[0].summary.calls == len(sandbox.messages()) > 0


@pytest.mark.parametrize("stores", ["duckdb+sqlite"], indirect=True)
def test_a_claim_polls_the_consents_before_its_state_store_transaction(
    stores: Warehouse, demo_copies: DemoCopies, sandbox, tmp_path: Path
) -> None:
    duck = demo_copies.seed(stores, customers=300)
    # Paced, and a bound of 5 s: the consents are polled every 2 s of a send of about 10 s.
    config = bulk_config(bulk_campaign("bulk", max_send_rate=15))
    resources = resources_for(duck, sandbox)
    resources["warehouse"] = WarehouseResource(url=duck.url, consent_bound_seconds=5.0)
    # No publication while the file is held (it waits for the file too, as it should).
    run_config = deliveries_run_config("bulk", concurrency=4, batch_size=10, publish_seconds=600)
    runner, done = _in_background(
        lambda: materialize_campaign(config, "bulk", resources, run_config=run_config).success
    )
    deadline = time.monotonic() + 60
    while _sent(duck) < 10:
        assert time.monotonic() < deadline and runner.is_alive(), "the run did not start sending"
        time.sleep(0.05)
    holder = hold_duckdb_file(duck.url, HOLD_SECONDS, tmp_path)
    time.sleep(HOLD_SECONDS * 0.75)  # a poll fell due and waits for the file
    writable = _state_is_writable(duck)
    assert holder.communicate(timeout=60)[0] == "" and holder.returncode == 0
    runner.join(120)
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
