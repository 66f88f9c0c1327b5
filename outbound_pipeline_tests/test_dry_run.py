"""Dry run: every check, what would be sent recorded apart, no call, and no effect on a later real run."""

from __future__ import annotations

import datetime as dt
import threading
from typing import Any

import pytest
import sqlalchemy as sa

from outbound_pipeline import ledger
from outbound_pipeline.clock import utcnow
from outbound_pipeline.defs.campaigns.component import build_definitions
from outbound_pipeline.ledger import dry_run, plan_for, send_ledger
from outbound_pipeline.warehouse import daily_reasons, daily_stats, dry_runs
from outbound_pipeline_tests.bulk import bulk_campaign, bulk_config
from outbound_pipeline_tests.conftest import (
    DAY,
    deliveries_run_config,
    materialize_campaign,
    resources_for,
    send_calls,
)
from outbound_pipeline_tests.stores import consent_for, seeded_postgres_warehouse

KEY = "order_ready"


def ledger_snapshot(engine: sa.Engine, key: str = KEY, day: str = DAY) -> list[tuple[Any, ...]]:
    with engine.connect() as conn:
        return [
            tuple(r)
            for r in conn.execute(
                sa.select(send_ledger)
                .where(send_ledger.c.campaign_key == key, send_ledger.c.partition_date == day)
                .order_by(send_ledger.c.delivery_key)
            )
        ]


def daily_figures(engine: sa.Engine) -> list[tuple[Any, ...]]:
    with engine.connect() as conn:
        stats = conn.execute(
            sa.select(
                daily_stats.c.sent,
                daily_stats.c.skipped,
                daily_stats.c.deferred,
                daily_stats.c.reasons_json,
            )
        ).all()
        reasons = conn.execute(
            sa.select(daily_reasons.c.status, daily_reasons.c.reason, daily_reasons.c.row_count)
        ).all()
    return sorted(tuple(r) for r in stats) + sorted(tuple(r) for r in reasons)


def dry_outcomes(
    engine: sa.Engine, key: str = KEY, day: str = DAY
) -> dict[str, tuple[str, str | None]]:
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(dry_runs.c.delivery_key, dry_runs.c.outcome, dry_runs.c.reason).where(
                dry_runs.c.campaign_key == key, dry_runs.c.partition_date == day
            )
        ).all()
    return {r.delivery_key: (r.outcome, r.reason) for r in rows}


def test_dry_run_calls_nothing_and_predicts_the_real_run_exactly(
    seeded, sandbox, demo_config
) -> None:
    resources = resources_for(seeded, sandbox)
    result = materialize_campaign(
        demo_config, KEY, resources, run_config=deliveries_run_config(KEY, dry_run=True)
    )
    assert result.success

    # Nothing called, not even a login; nothing in the ledger.
    assert sandbox.messages() == []
    assert sandbox.stats().get("graphql_calls", 0) == 0 and sandbox.stats().get("logins", 0) == 0
    assert ledger_snapshot(seeded.engine) == []

    predicted = dry_outcomes(seeded.engine)
    would_send = {k for k, (outcome, _) in predicted.items() if outcome == "would_send"}
    assert len(would_send) > 10
    assert all(reason for outcome, reason in predicted.values() if outcome != "would_send"), (
        "every other row says why"
    )
    with seeded.engine.connect() as conn:
        previews = (
            conn.execute(
                sa.select(dry_runs.c.preview_text).where(dry_runs.c.outcome == "would_send")
            )
            .scalars()
            .all()
        )
    assert all(p and p.startswith("Bonjour ") for p in previews)

    metadata = result.asset_materializations_for_node(f"{KEY}__deliveries")[0].metadata
    assert metadata["dry_run"].value is True and metadata["would_send"].value == len(would_send)

    # The real run sends exactly what the dry run predicted, row for row.
    assert materialize_campaign(demo_config, KEY, resources).success
    sent = {f"+{m['recipient_id']}" for m in sandbox.messages()}
    assert sent == would_send
    real = {r.delivery_key: r.status for r in _rows(seeded.engine)}
    assert set(real) == set(predicted)
    for key_, (outcome, _) in predicted.items():
        assert (real[key_] == "sent") == (outcome == "would_send"), key_

    # A dry run after the real run changes nothing in the ledger nor in the day's figures, and
    # predicts no new send.
    before = ledger_snapshot(seeded.engine)
    figures = daily_figures(seeded.engine)
    calls = send_calls(sandbox)
    assert materialize_campaign(
        demo_config, KEY, resources, run_config=deliveries_run_config(KEY, dry_run=True)
    ).success
    assert ledger_snapshot(seeded.engine) == before
    assert daily_figures(seeded.engine) == figures
    assert send_calls(sandbox) == calls
    after = dry_outcomes(seeded.engine)
    assert not any(outcome == "would_send" for outcome, _ in after.values())
    assert {k for k, (o, _) in after.items() if o == "sent"} == would_send


def _rows(engine: sa.Engine) -> list[Any]:
    with engine.connect() as conn:
        return conn.execute(
            sa.select(send_ledger.c.delivery_key, send_ledger.c.status).where(
                send_ledger.c.campaign_key == KEY, send_ledger.c.partition_date == DAY
            )
        ).all()


def test_dry_run_applies_the_send_checks_and_leaves_deferred_rows_alone(
    seeded, sandbox, demo_config
) -> None:
    """The messaging limit nearly used up by earlier sends: the dry run defers the overflow like a
    real run would, and the real run afterwards still has the whole remaining room (the dry run used
    none of it) and sends the very rows the dry run named."""
    campaign = demo_config.campaign(KEY)
    limit = campaign.messaging_limit.max_recipients
    assert limit is not None
    now = utcnow()
    earlier = [
        {
            "campaign_key": "earlier_campaign",
            "partition_date": "2026-11-23",
            "delivery_key": f"+3361000{i:04d}",
            "row_key": f"r{i}",
            "recipient": f"+3361000{i:04d}",
            "limit_scope": campaign.limit_scope,
            "status": "sent",
            "reason": "accepted",
            "attempts": 1,
            "claimed_at": now - dt.timedelta(hours=1),
            "sent_at": now - dt.timedelta(hours=1),
        }
        for i in range(limit - 5)
    ]
    with seeded.engine.begin() as conn:
        conn.execute(sa.insert(send_ledger), earlier)
    resources = resources_for(seeded, sandbox)

    assert materialize_campaign(
        demo_config, KEY, resources, run_config=deliveries_run_config(KEY, dry_run=True)
    ).success
    predicted = dry_outcomes(seeded.engine)
    would_send = {k for k, (o, _) in predicted.items() if o == "would_send"}
    limited = {k for k, (o, r) in predicted.items() if o == "deferred" and r == "messaging_limit"}
    assert len(would_send) == 5 and len(limited) > 5, (len(would_send), len(limited))
    assert sandbox.messages() == []

    assert materialize_campaign(demo_config, KEY, resources).success
    assert {f"+{m['recipient_id']}" for m in sandbox.messages()} == would_send
    real = {r.delivery_key: r.status for r in _rows(seeded.engine)}
    assert {k for k, s in real.items() if s == "deferred"} == limited


def test_dry_run_job_of_the_code_location_is_preset(seeded, sandbox, demo_config) -> None:
    defs = build_definitions(demo_config, resources_for(seeded, sandbox))
    job = defs.resolve_job_def(f"{KEY}_dry_run")
    result = job.execute_in_process(partition_key=DAY)
    assert result.success
    assert {str(k.to_user_string()) for k in _materialized(result)} == {
        f"{KEY}/audience",
        f"{KEY}/messages",
        f"{KEY}/deliveries",
    }
    assert sandbox.messages() == [] and ledger_snapshot(seeded.engine) == []
    assert any(o == "would_send" for o, _ in dry_outcomes(seeded.engine).values())


def _materialized(result: Any) -> set[Any]:
    return {e.asset_key for e in result.get_asset_materialization_events()}


@pytest.mark.postgres
def test_a_dry_run_in_progress_does_not_hold_up_real_claims_of_the_same_sender(sandbox) -> None:
    # A dry run is one long transaction. Real claims of another campaign of the same sender must not
    # wait for it: it writes nothing they write (the messaging limit's hourly counts included).
    with seeded_postgres_warehouse(customers=300) as warehouse:
        config = bulk_config(
            bulk_campaign("rehearsal", where="customer_id < 'C000150'"),
            bulk_campaign("live", where="customer_id >= 'C000150'"),
        )
        resources = resources_for(warehouse, sandbox)
        for key in ("rehearsal", "live"):
            assert materialize_campaign(
                config, key, resources, selection=["audience", "messages"]
            ).success
        now = utcnow()
        live = plan_for(config.campaign("live"), config, DAY)
        with (
            ledger.read_snapshot(warehouse.engine, live) as snapshot,
            warehouse.state.begin() as conn,
        ):
            ledger.reconcile(conn, snapshot, "live-run", now)
        inside, release = threading.Event(), threading.Event()
        batches: list[int] = []

        def pause_in_the_second_batch(
            conn: sa.Connection, plan: Any, rows: Any, now: dt.datetime
        ) -> dict:
            batches.append(len(rows))
            if len(batches) == 2:
                inside.set()
                release.wait(30)
            return {}

        rehearsal_plan = plan_for(config.campaign("rehearsal"), config, DAY)
        rehearsal = threading.Thread(
            target=dry_run,
            args=(
                warehouse.engine,
                warehouse.engine,
                rehearsal_plan,
                "dry-run",
                now,
            ),
            kwargs={
                "consent": consent_for(warehouse, rehearsal_plan),
                "batch_size": 10,
                "extra_checks": (pause_in_the_second_batch,),
            },
        )
        rehearsal.start()
        try:
            assert inside.wait(30), "the dry run never reached its second batch"
            with warehouse.engine.begin() as conn:
                conn.execute(sa.text("SET LOCAL lock_timeout = '3s'"))
                claimed = ledger.claim_batch(
                    conn,
                    live,
                    "live-token",
                    "live-run",
                    now,
                    10,
                    consent=consent_for(warehouse, live),
                )
        finally:
            release.set()
            rehearsal.join(30)
        assert len(claimed.claimed) == 10
