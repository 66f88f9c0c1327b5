"""Scale-out: a campaign partition on a Dagster instance whose storage is the PostgreSQL server.

The instance is built from deploy/dagster.yaml itself (the documented deployment configuration:
PostgreSQL run/event/schedule storage, queued run coordinator, the `iadvize_send` pool limit), with
DAGSTER_PG_URL pointing at a fresh database of the server. The warehouse is PostgreSQL too: nothing
of the run lives in the process or on local disk.

Needs OUTBOUND_TEST_POSTGRES_URL; skips without it, fails under CI=true.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as sa

from outbound_pipeline.defs.campaigns.assets import SEND_POOL
from outbound_pipeline.ledger import send_ledger
from outbound_pipeline.warehouse import create_engine
from outbound_pipeline_tests.conftest import DAY, campaign_assets, resources_for
from outbound_pipeline_tests.stores import postgres_server_url, scratch_postgres_database

DEPLOY_YAML = Path(__file__).resolve().parent.parent / "deploy" / "dagster.yaml"
CAMPAIGN = "order_ready"

pytestmark = pytest.mark.postgres


@pytest.fixture
def instance_database() -> Iterator[str]:
    """A fresh database on the PostgreSQL server for the Dagster instance, dropped afterwards."""
    with scratch_postgres_database(postgres_server_url(), prefix="outbound_dagster") as url:  # type: ignore[arg-type]
        # dagster-postgres is written for psycopg2 (its NOTIFY takes a client-side parameter), and
        # SQLAlchemy 2.1 reads a bare postgresql:// as psycopg 3: name the driver.
        yield (
            sa.make_url(url)
            .set(drivername="postgresql+psycopg2")
            .render_as_string(hide_password=False)
        )


@pytest.fixture
def postgres_instance(
    instance_database: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[dg.DagsterInstance]:
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(DEPLOY_YAML, home / "dagster.yaml")
    monkeypatch.setenv("DAGSTER_PG_URL", instance_database)
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    instance = dg.DagsterInstance.from_config(str(home))
    try:
        yield instance
    finally:
        instance.dispose()


@pytest.mark.parametrize("warehouse", ["postgres"], indirect=True)
def test_partition_runs_on_a_postgres_instance(
    postgres_instance, instance_database, seeded, sandbox, demo_config
) -> None:  # type: ignore[no-untyped-def]
    instance = postgres_instance
    # The deployment configuration as documented: every storage in PostgreSQL, runs queued.
    assert type(instance.run_storage).__name__ == "PostgresRunStorage"
    assert type(instance.event_log_storage).__name__ == "PostgresEventLogStorage"
    assert type(instance.schedule_storage).__name__ == "PostgresScheduleStorage"
    assert type(instance.run_coordinator).__name__ == "QueuedRunCoordinator"

    result = dg.materialize(
        campaign_assets(demo_config, CAMPAIGN),
        partition_key=DAY,
        resources=resources_for(seeded, sandbox),
        instance=instance,
    )
    assert result.success
    sent = sandbox.stats().get("accepted", 0)
    assert sent > 0

    # The run, its materialisations and their partition are in the PostgreSQL instance storage:
    # read back through a second instance on the same database, and straight from its tables.
    expected = {
        dg.AssetKey([CAMPAIGN, name])
        for name in ("audience", "messages", "deliveries", "conversations", "report")
    }
    other = dg.DagsterInstance.from_config(instance.root_directory)
    try:
        run = other.get_run_by_id(result.run_id)
        assert run is not None and run.status == dg.DagsterRunStatus.SUCCESS
        assert run.tags.get("dagster/partition") == DAY
        for key in expected:
            event = other.get_latest_materialization_event(key)
            assert event is not None and event.run_id == result.run_id
            assert event.asset_materialization.partition == DAY
        record = other.get_latest_materialization_event(dg.AssetKey([CAMPAIGN, "deliveries"]))
        assert record.asset_materialization.metadata["status_breakdown"].value["sent"] == sent
    finally:
        other.dispose()

    storage = create_engine(instance_database)
    try:
        with storage.connect() as conn:
            status = conn.execute(
                sa.text("SELECT status FROM runs WHERE run_id = :r"), {"r": result.run_id}
            ).scalar_one()
            materialized = conn.execute(
                sa.text(
                    "SELECT asset_key, partition FROM event_logs "
                    "WHERE run_id = :r AND dagster_event_type = 'ASSET_MATERIALIZATION'"
                ),
                {"r": result.run_id},
            ).all()
    finally:
        storage.dispose()
    assert status == "SUCCESS"
    assert {dg.AssetKey.from_db_string(key) for key, _ in materialized} == expected
    assert {partition for _, partition in materialized} == {DAY}

    # The send step ran in the iadvize_send pool, whose limit comes from deploy/dagster.yaml, and
    # released its slot when done.
    pool = instance.event_log_storage.get_concurrency_info(SEND_POOL)
    assert pool.slot_count == 1
    assert pool.active_slot_count == 0 and pool.pending_step_count == 0

    # And the warehouse (PostgreSQL) holds the outcome: what any other process would resume from.
    with seeded.engine.connect() as conn:
        in_ledger = conn.execute(
            sa.select(sa.func.count()).where(
                send_ledger.c.campaign_key == CAMPAIGN,
                send_ledger.c.partition_date == DAY,
                send_ledger.c.status == "sent",
            )
        ).scalar_one()
    assert in_ledger == sent
