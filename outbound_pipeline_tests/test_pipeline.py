"""The whole path for one partition, on SQLite and PostgreSQL, with the sandbox over a real socket."""

from __future__ import annotations

import datetime as dt
import json
from collections import Counter

import dagster as dg
import phonenumbers
import pytest
import sqlalchemy as sa

from outbound_pipeline import ledger
from outbound_pipeline.ledger import send_ledger
from outbound_pipeline.warehouse import audience, daily_stats, deliveries
from outbound_pipeline_tests.conftest import DAY, materialize_campaign, resources_for, send_calls
from outbound_pipeline_tests.stores import seeded_postgres_warehouse
from outbound_pipeline_tests.test_holdouts import independent_position


def held_out(campaign, customer_id) -> bool:  # type: ignore[no-untyped-def]
    """The documented holdout rule (test_holdouts.independent_position), not the pipeline's code."""
    if not campaign.holdout_percent:
        return False
    return independent_position(campaign.key, customer_id) < campaign.holdout_percent / 100


def expected_recipients(engine: sa.Engine, config, key: str, day: str = DAY) -> set[str]:  # type: ignore[no-untyped-def]
    """Computed independently of the pipeline: raw query, latest consent in Python, libphonenumber."""
    campaign = config.campaign(key)
    template = config.template_for(campaign)
    with engine.connect() as conn:
        rows = (
            conn.execute(sa.text(campaign.audience_sql), {"partition_date": day}).mappings().all()
        )
        history = conn.execute(
            sa.text(
                "SELECT customer_id, status, updated_at FROM whatsapp_consents WHERE category = :c"
            ),
            {"c": campaign.consent_category},
        ).all()
    latest: dict[str, tuple] = {}
    for customer_id, status, updated_at in history:
        key_ = str(customer_id)
        rank = (str(updated_at), 0 if status == "opted_out" else 1)
        if key_ not in latest or rank > latest[key_][0]:
            latest[key_] = (rank, status)
    out: set[str] = set()
    for row in rows:
        state = latest.get(str(row["customer_id"]))
        if held_out(campaign, row["customer_id"]):
            continue
        if (
            not state
            or state[1] != "opted_in"
            or not row["phone"]
            or any(c.isalpha() for c in row["phone"])
        ):
            continue
        try:
            number = phonenumbers.parse(row["phone"].strip(), campaign.phone_region)
        except phonenumbers.NumberParseException:
            continue
        if not phonenumbers.is_valid_number(number):
            continue
        if template.category == "MARKETING" and phonenumbers.region_code_for_number(number) == "US":
            continue
        out.add(phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164))
    return out


def test_pipeline_sends_exactly_to_eligible_and_rerun_sends_nothing(
    seeded, sandbox, demo_config
) -> None:
    resources = resources_for(seeded, sandbox)
    expected = expected_recipients(seeded.engine, demo_config, "order_ready")
    assert len(expected) > 10, "the demo day should have an audience"

    result = materialize_campaign(demo_config, "order_ready", resources)
    assert result.success

    received = sandbox.messages()
    recipients = [f"+{m['recipient_id']}" for m in received]
    assert len(recipients) == len(set(recipients)), "a recipient received two messages"
    assert set(recipients) == expected
    assert all(
        m["campaign_id"] == demo_config.campaign("order_ready").campaign_id for m in received
    )

    with seeded.engine.connect() as conn:
        audience_rows = conn.execute(
            sa.select(sa.func.count()).where(
                audience.c.campaign_key == "order_ready", audience.c.partition_date == DAY
            )
        ).scalar_one()
        ledger = conn.execute(
            sa.select(
                deliveries.c.row_key,
                deliveries.c.status,
                deliveries.c.reason,
                deliveries.c.recipient,
                deliveries.c.message_id,
                deliveries.c.message_text,
                deliveries.c.attribution_expires_at,
            ).where(deliveries.c.campaign_key == "order_ready", deliveries.c.partition_date == DAY)
        ).all()
        stats = (
            conn.execute(sa.select(daily_stats).where(daily_stats.c.campaign_key == "order_ready"))
            .mappings()
            .one()
        )

    # One outcome per audience row, each with a reason.
    assert len(ledger) == audience_rows
    assert len({r.row_key for r in ledger}) == audience_rows
    assert all(r.reason for r in ledger)
    statuses = Counter(r.status for r in ledger)
    assert statuses["sent"] == len(expected)
    assert set(statuses) <= {"sent", "skipped"}
    by_id = {m["message_id"]: m for m in received}
    for row in ledger:
        if row.status == "sent":
            assert by_id[row.message_id]["message_text"] == row.message_text
            assert row.attribution_expires_at is not None
    assert stats["sent"] == len(expected) and stats["audience_rows"] == audience_rows
    assert json.loads(stats["reasons_json"])["skipped"]

    calls_before = send_calls(sandbox)
    again = materialize_campaign(demo_config, "order_ready", resources)
    assert again.success
    assert send_calls(sandbox) == calls_before, "a re-run made new calls"
    assert len(sandbox.messages()) == len(received)


def test_marketing_campaign_respects_its_own_consent_category(seeded, sandbox, demo_config) -> None:
    resources = resources_for(seeded, sandbox)
    expected = expected_recipients(seeded.engine, demo_config, "winter_offers")
    result = materialize_campaign(demo_config, "winter_offers", resources)
    assert result.success
    recipients = {f"+{m['recipient_id']}" for m in sandbox.messages()}
    assert recipients == expected
    assert not any(r.startswith("+1") for r in recipients), "marketing must not go to US numbers"


def _materialization(result, key: str, name: str) -> dict:  # type: ignore[no-untyped-def]
    [event] = [
        e
        for e in result.get_asset_materialization_events()
        if e.asset_key == dg.AssetKey([key, name])
    ]
    return event.materialization.metadata


def test_a_settled_day_keeps_its_snapshot_and_a_refresh_sends_only_the_new_rows(
    seeded, sandbox, demo_config
) -> None:
    resources = resources_for(seeded, sandbox)
    assert materialize_campaign(demo_config, "order_ready", resources).success
    sent_first = {m["recipient_id"] for m in sandbox.messages()}
    a = audience.c
    day = sa.and_(a.campaign_key == "order_ready", a.partition_date == DAY)
    with seeded.engine.connect() as conn:
        snapshot = conn.execute(
            sa.select(a.row_key, a.run_id, a.fields_json).where(day).order_by(a.row_key)
        ).all()
        renamed = conn.execute(
            sa.select(a.customer_id).where(day, a.eligible == sa.true()).limit(1)
        ).scalar_one()

    # The warehouse moves on after the day was sent: a late order, a renamed customer.
    new_phone = "+33612990071"
    with seeded.engine.begin() as conn:
        assert not conn.execute(
            sa.text("SELECT 1 FROM customers WHERE phone LIKE '%612990071'")
        ).first()
        conn.execute(
            sa.text(
                "INSERT INTO customers (customer_id, phone, first_name, last_name, country, loyalty_tier, "
                "preferred_store, offer_segment, created_at) VALUES ('LATE0001', :phone, 'Zoé', 'Late', 'FR', "
                "'bronze', 'Lyon Part-Dieu', 1, :at)"
            ),
            {"phone": new_phone, "at": dt.datetime(2026, 1, 1, tzinfo=dt.UTC)},
        )
        conn.execute(
            sa.text(
                "INSERT INTO whatsapp_consents (customer_id, category, status, updated_at, source) "
                "VALUES ('LATE0001', 'order_updates', 'opted_in', :at, 'test')"
            ),
            {"at": dt.datetime(2026, 1, 1, tzinfo=dt.UTC)},
        )
        conn.execute(
            sa.text(
                "INSERT INTO orders (order_id, order_ref, customer_id, store_name, ready_date, amount) "
                "VALUES (99000001, 'LATE-0001', 'LATE0001', 'Lyon Part-Dieu', :day, 10)"
            ),
            {"day": dt.date.fromisoformat(DAY)},
        )
        conn.execute(
            sa.text("UPDATE customers SET first_name = 'Renamed' WHERE customer_id = :c"),
            {"c": renamed},
        )

    # Nothing is left to send: the re-run keeps the audience and messages the sends were made from.
    with seeded.engine.connect() as conn:
        assert ledger.settled_rows(conn, conn, "order_ready", DAY) == len(snapshot)
    kept = materialize_campaign(demo_config, "order_ready", resources)
    assert kept.success
    assert _materialization(kept, "order_ready", "audience")["settled_day_kept"].value is True
    assert _materialization(kept, "order_ready", "messages")["settled_day_kept"].value is True
    with seeded.engine.connect() as conn:
        assert (
            conn.execute(
                sa.select(a.row_key, a.run_id, a.fields_json).where(day).order_by(a.row_key)
            ).all()
            == snapshot
        )
    assert {m["recipient_id"] for m in sandbox.messages()} == sent_first

    # A day with a row still to send is not settled: it is extracted again. Nor is one with a send
    # skipped at claim time (consent withdrawn): every reconcile puts it back to be judged again.
    d = send_ledger.c
    for status in ("deferred", "skipped"):
        with seeded.engine.connect() as conn, conn.begin() as tx:
            conn.execute(
                sa.update(send_ledger)
                .where(
                    d.delivery_key
                    == sa.select(d.delivery_key)
                    .where(d.campaign_key == "order_ready", d.status == "sent")
                    .limit(1)
                    .scalar_subquery()
                )
                .values(status=status)
            )
            assert ledger.settled_rows(conn, conn, "order_ready", DAY) == 0, status
            tx.rollback()

    # Asked to refresh, the day is extracted and rendered again: only the late order is sent.
    refreshed = materialize_campaign(
        demo_config,
        "order_ready",
        resources,
        run_config={"ops": {"order_ready__audience": {"config": {"refresh_settled_day": True}}}},
    )
    assert refreshed.success
    assert _materialization(refreshed, "order_ready", "audience")["settled_day_kept"].value is False
    assert _materialization(refreshed, "order_ready", "messages")["settled_day_kept"].value is False
    received = [m["recipient_id"] for m in sandbox.messages()]
    assert len(received) == len(set(received)), "a recipient received two messages"
    assert set(received) == sent_first | {new_phone.lstrip("+")}
    with seeded.engine.connect() as conn:
        fields = (
            conn.execute(sa.select(a.fields_json).where(day, a.customer_id == renamed))
            .scalars()
            .all()
        )
    assert fields and all(json.loads(f)["first_name"] == "Renamed" for f in fields)


@pytest.mark.postgres
def test_postgres_tables_are_analysed_after_each_bulk_write(sandbox, demo_config) -> None:
    """Without fresh statistics PostgreSQL joins a just-written day with a nested loop: a 100,000-row
    messages check then ran for more than ten minutes instead of a second."""
    with seeded_postgres_warehouse(customers=300) as warehouse:
        assert materialize_campaign(
            demo_config, "order_ready", resources_for(warehouse, sandbox)
        ).success
        with warehouse.engine.connect() as conn:
            # analyze_count counts explicit ANALYZE only, never autovacuum's.
            counts = dict(
                conn.execute(
                    sa.text(
                        "SELECT relname, analyze_count FROM pg_stat_user_tables WHERE relname IN "
                        "('outbound_audience', 'outbound_messages', 'outbound_ledger')"
                    )
                ).all()
            )
    assert counts == {"outbound_audience": 1, "outbound_messages": 1, "outbound_ledger": 1}
