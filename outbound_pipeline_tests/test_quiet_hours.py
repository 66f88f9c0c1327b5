"""Quiet hours: rows outside the allowed local hours are deferred with the reason and go out later."""

from __future__ import annotations

import datetime as dt
import zoneinfo
from collections import Counter

import dagster as dg
import pytest
import sqlalchemy as sa

from outbound_pipeline import ledger
from outbound_pipeline.config import OutboundConfig, QuietHours
from outbound_pipeline.defs.campaigns.component import build_definitions
from outbound_pipeline.ledger import (
    is_allowed,
    next_allowed,
    recipient_zones,
    send_ledger,
    send_runs,
)
from outbound_pipeline_tests.conftest import DAY, materialize_campaign, resources_for

KEY = "order_ready"
UTC = dt.UTC


def at(hour: int, minute: int = 0, day: str = DAY) -> dt.datetime:
    return dt.datetime.fromisoformat(day).replace(hour=hour, minute=minute, tzinfo=UTC)


def with_quiet_hours(config: OutboundConfig, key: str, **window: object) -> OutboundConfig:
    campaigns = [
        c.model_copy(update={"quiet_hours": QuietHours(**window)}) if c.key == key else c  # type: ignore[arg-type]
        for c in config.campaigns
    ]
    return config.model_copy(update={"campaigns": campaigns})


# -- pure functions --------------------------------------------------------------------------


def test_recipient_zones_come_from_the_number_or_its_country() -> None:
    assert recipient_zones("+33612345678") == ("Europe/Paris",)
    assert recipient_zones("+32470123456") == ("Europe/Brussels",)
    assert recipient_zones("+12125551234") == ("America/New_York",)
    # libphonenumber cannot place UK mobiles: the country's zone is used.
    assert recipient_zones("+447911123456") == ("Europe/London",)
    assert recipient_zones("not a number") == ()


def test_next_allowed_in_one_zone_and_across_several() -> None:
    paris = ("Europe/Paris",)
    assert next_allowed(at(10), paris, 9, 20) == at(10)  # 11:00 in Paris
    assert next_allowed(at(2), paris, 9, 20) == at(8)  # 03:00 -> 09:00 Paris = 08:00 UTC
    assert next_allowed(at(19, 30), paris, 9, 20) == at(8, day="2026-11-25")  # 20:30 -> tomorrow
    # Window across midnight: 22:00-06:00.
    assert (
        is_allowed(at(23), "UTC", 22, 6)
        and is_allowed(at(3), "UTC", 22, 6)
        and not is_allowed(at(12), "UTC", 22, 6)
    )
    assert next_allowed(at(12), ("UTC",), 22, 6) == at(22)
    # Two zones: allowed only when the hour is allowed in both (Paris UTC+1, New York UTC-5).
    both = ("Europe/Paris", "America/New_York")
    resume = next_allowed(at(2), both, 9, 20)
    assert resume == at(14)  # 09:00 in New York, 15:00 in Paris
    assert all(is_allowed(resume, z, 9, 20) for z in both)
    # Windows that never overlap (Paris and Tokyo, 9-12): none.
    assert next_allowed(at(2), ("Europe/Paris", "Asia/Tokyo"), 9, 12) is None


# -- the pipeline, on SQLite and PostgreSQL -------------------------------------------------


def _ledger(engine: sa.Engine, day: str = DAY) -> list[sa.Row]:
    with engine.connect() as conn:
        return conn.execute(
            sa.select(
                send_ledger.c.recipient,
                send_ledger.c.status,
                send_ledger.c.reason,
                send_ledger.c.not_before,
            ).where(
                send_ledger.c.campaign_key == KEY,
                send_ledger.c.partition_date == day,
                send_ledger.c.delivery_key.not_like("row:%"),
            )
        ).all()


def _local_hour(recipient: str, when: dt.datetime) -> int:
    zone = recipient_zones(recipient)[0]
    return when.astimezone(zoneinfo.ZoneInfo(zone)).hour


def test_rows_outside_the_recipients_hours_are_deferred_then_sent_later(
    seeded, sandbox, demo_config
) -> None:
    config = with_quiet_hours(demo_config, KEY, start_hour=9, end_hour=20)
    night = at(2)  # 03:00 in Paris and Brussels, 21:00 the day before in New York

    assert materialize_campaign(
        config, KEY, resources_for(seeded, sandbox, frozen_at=night.isoformat())
    ).success
    rows = _ledger(seeded.engine)
    assert rows and sandbox.messages() == [], "nothing may be sent at night"
    for row in rows:
        assert row.status == "deferred" and row.reason.startswith("quiet_hours:"), row
        zone = row.reason.split(":", 1)[1]
        assert zone == recipient_zones(row.recipient)[0]
        resume = row.not_before if row.not_before.tzinfo else row.not_before.replace(tzinfo=UTC)
        assert _local_hour(row.recipient, resume) == 9 and resume > night

    # 08:30 UTC: 09:30 in Paris; still night in the Americas. Only recipients whose morning has come.
    morning = at(8, 30)
    assert materialize_campaign(
        config, KEY, resources_for(seeded, sandbox, frozen_at=morning.isoformat())
    ).success
    sent_now = {f"+{m['recipient_id']}" for m in sandbox.messages()}
    assert sent_now
    for row in _ledger(seeded.engine):
        allowed = 9 <= _local_hour(row.recipient, morning) < 20
        assert (row.status == "sent") == allowed, (row.recipient, row.status, row.reason)

    # 15:00 UTC: daytime everywhere the demo's numbers are; everything has gone, once.
    assert materialize_campaign(
        config, KEY, resources_for(seeded, sandbox, frozen_at=at(15).isoformat())
    ).success
    statuses = Counter(r.status for r in _ledger(seeded.engine))
    assert statuses == Counter({"sent": len(_ledger(seeded.engine))})
    recipients = [m["recipient_id"] for m in sandbox.messages()]
    assert len(recipients) == len(set(recipients)) == statuses["sent"]


def test_campaign_timezone_overrides_the_recipients(seeded, sandbox, demo_config) -> None:
    # 02:00 UTC is 11:00 in Tokyo: with the campaign's own timezone everything goes at once.
    config = with_quiet_hours(demo_config, KEY, start_hour=9, end_hour=20, timezone="Asia/Tokyo")
    assert materialize_campaign(
        config, KEY, resources_for(seeded, sandbox, frozen_at=at(2).isoformat())
    ).success
    assert {r.status for r in _ledger(seeded.engine)} == {"sent"}
    # 12:00 UTC is 21:00 in Tokyo: the next day's rows wait until 09:00 Tokyo (00:00 UTC).
    config_day2 = "2026-11-23"
    resources = resources_for(seeded, sandbox, frozen_at=at(12, day=config_day2).isoformat())
    assert materialize_campaign(config, KEY, resources, day=config_day2).success
    rows = _ledger(seeded.engine, config_day2)
    assert rows and {(r.status, r.reason) for r in rows} == {("deferred", "quiet_hours:Asia/Tokyo")}


def test_deferred_retry_sensor_asks_for_a_run_when_rows_are_due(
    seeded, sandbox, demo_config
) -> None:
    config = with_quiet_hours(demo_config, KEY, start_hour=9, end_hour=20, timezone="Europe/Paris")
    assert materialize_campaign(
        config, KEY, resources_for(seeded, sandbox, frozen_at=at(2).isoformat())
    ).success
    # 07:00 UTC is 08:00 in Paris: nothing due yet. 09:00 UTC: the day's deferred rows are due.
    for hour, expected in ((7, 0), (9, 1)):
        resources = resources_for(seeded, sandbox, frozen_at=at(hour).isoformat())
        repository = build_definitions(config, resources).get_repository_def()
        sensor = repository.get_sensor_def(f"{KEY}_deferred_retry")
        context = dg.build_sensor_context(
            repository_def=repository,
            resources={"state": resources["state"], "clock": resources["clock"]},
        )
        with context:
            result = sensor.evaluate_tick(context)
        requests = result.run_requests or []
        assert len(requests) == expected, hour
        if expected:
            assert requests[0].partition_key == DAY and requests[0].run_key.startswith(DAY)
            assert requests[0].job_name in (None, f"{KEY}_retry_deferred")


def test_deferred_retry_sensor_resumes_a_day_a_dead_run_left_half_sent(
    seeded, sandbox, demo_config
) -> None:
    resources = resources_for(seeded, sandbox, frozen_at=at(9).isoformat())
    assert materialize_campaign(demo_config, KEY, resources).success
    d, r = send_ledger.c, send_runs.c
    with seeded.engine.connect() as conn:
        sent = list(
            conn.execute(
                sa.select(d.delivery_key).where(d.campaign_key == KEY, d.status == "sent")
            ).scalars()
        )
    assert len(sent) > 4
    # A run killed mid-way: two rows in flight under its token, two never claimed; its heartbeat stops.
    with seeded.engine.begin() as conn:
        conn.execute(
            sa.insert(send_runs).values(
                claim_token="dead:1",
                run_id="dead",
                campaign_key=KEY,
                partition_date=DAY,
                host="gone",
                pid=1,
                started_at=at(9),
                heartbeat_at=at(9),
            )
        )
        conn.execute(
            sa.update(send_ledger)
            .where(d.delivery_key.in_(sent[:2]))
            .values(status="sending", claim_token="dead:1")
        )
        conn.execute(
            sa.update(send_ledger).where(d.delivery_key.in_(sent[2:4])).values(status="pending")
        )

    def requests_at(hour: int, minute: int = 0) -> list[dg.RunRequest]:
        resources = resources_for(seeded, sandbox, frozen_at=at(hour, minute=minute).isoformat())
        repository = build_definitions(demo_config, resources).get_repository_def()
        context = dg.build_sensor_context(
            repository_def=repository,
            resources={"state": resources["state"], "clock": resources["clock"]},
        )
        with context:
            return list(
                repository.get_sensor_def(f"{KEY}_deferred_retry")
                .evaluate_tick(context)
                .run_requests
                or []
            )

    # While its heartbeat is fresh the sender may still be working: no retry.
    assert requests_at(9, 0) == []
    # A minute and more of silence: the day is resumed, once per state of its ledger.
    [request] = requests_at(9, 2)
    assert request.partition_key == DAY and request.tags["outbound/abandoned_rows"] == "4"
    assert requests_at(9, 3)[0].run_key == request.run_key
    # A halted campaign would stop every run at its first claim: none is started.
    with seeded.engine.begin() as conn:
        ledger.set_halt(conn, f"campaign:{KEY}", "test", "test", at(9), None)
    assert requests_at(9, 4) == []
    with seeded.engine.begin() as conn:
        ledger.clear_halt(conn, f"campaign:{KEY}")
    assert len(requests_at(9, 4)) == 1
    # A live sender on the day (another run picked it up): no second run.
    with seeded.engine.begin() as conn:
        conn.execute(
            sa.update(send_runs)
            .where(r.claim_token == "dead:1")
            .values(heartbeat_at=at(9, minute=30))
        )
    assert requests_at(9, 30) == []


def test_a_database_error_in_the_retry_sensor_names_the_reason_not_the_statement(
    seeded, sandbox, demo_config
) -> None:
    # A sensor's error is shown on its tick in the UI: the database's reason only, as for the assets
    # (SQLAlchemy's own message goes on with the statement and its parameters).
    with seeded.engine.begin() as conn:
        # (A missing table would be created again when the warehouse resource starts.)
        conn.exec_driver_sql('ALTER TABLE outbound_halts RENAME COLUMN "until" TO until_gone')
    resources = resources_for(seeded, sandbox, frozen_at=at(9).isoformat())
    repository = build_definitions(demo_config, resources).get_repository_def()
    context = dg.build_sensor_context(
        repository_def=repository,
        resources={"state": resources["state"], "clock": resources["clock"]},
    )
    with context, pytest.raises(Exception) as raised:
        repository.get_sensor_def(f"{KEY}_deferred_retry").evaluate_tick(context)

    chain, error = [], raised.value
    while error is not None:
        chain.append(f"{type(error).__name__}: {error}")
        # What a traceback (and Dagster's error display) shows: `from None` hides the context.
        error = error.__cause__ or (None if error.__suppress_context__ else error.__context__)
    shown = "\n".join(chain)
    assert "WarehouseError" in shown and "until" in shown, shown
    assert "[SQL:" not in shown and "SELECT" not in shown, shown
