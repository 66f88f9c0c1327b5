"""The launch checklist job: credentials, dates, template, preview from the first eligible row, and a
real test message to the test recipients only, recorded apart from production."""

from __future__ import annotations

import datetime as dt
import json
import time
from typing import Any

import dagster as dg
import pytest
import sqlalchemy as sa

from outbound_pipeline import ledger
from outbound_pipeline.config import OutboundConfig, Variables
from outbound_pipeline.defs.campaigns.component import build_definitions
from outbound_pipeline.ledger import send_ledger
from outbound_pipeline.warehouse import audience, messages, test_sends
from outbound_pipeline_tests.conftest import DAY, materialize_campaign, resources_for

KEY = "order_ready"
NOON = f"{DAY}T11:00:00+00:00"


def run_preflight(
    config: OutboundConfig,
    resources: dict[str, Any],
    key: str = KEY,
    instance: dg.DagsterInstance | None = None,
    **values: Any,
) -> Any:
    defs = build_definitions(config, resources)
    job = defs.resolve_job_def(f"{key}_preflight")
    run_config = {"ops": {f"{key}__preflight": {"config": {"partition_date": DAY, **values}}}}
    return job.execute_in_process(run_config=run_config, raise_on_error=False, instance=instance)


def checklist(result: Any) -> dict[str, dict[str, str]]:
    """item -> {status, detail}, from the op's output metadata (or its failure's)."""
    for event in result.all_events:
        data = event.event_specific_data
        metadata = (
            getattr(data, "metadata", None)
            or getattr(getattr(data, "user_failure_data", None), "metadata", None)
            or {}
        )
        if "items" in metadata:
            rows: dict[str, dict[str, str]] = {}
            for row in metadata["items"].value:
                rows.setdefault(row["item"], {"status": row["status"], "detail": row["detail"]})
            return rows
    raise AssertionError("no checklist in the run's metadata")


def with_campaign(config: OutboundConfig, key: str, **update: Any) -> OutboundConfig:
    campaigns = [c.model_copy(update=update) if c.key == key else c for c in config.campaigns]
    return config.model_copy(update={"campaigns": campaigns})


def test_preflight_passes_and_sends_only_to_test_recipients(seeded, sandbox, demo_config) -> None:
    resources = resources_for(seeded, sandbox, frozen_at=NOON)
    result = run_preflight(demo_config, resources)
    assert result.success
    items = checklist(result)
    for name in ("credentials", "dates", "template", "halts", "preview", "test_send"):
        assert items[name]["status"] == "pass", (name, items[name])
    assert items["manual"]["status"] == "manual"

    campaign = demo_config.campaign(KEY)
    received = sandbox.messages()
    assert {f"+{m['recipient_id']}" for m in received} == set(campaign.test_recipients)
    assert all(
        m["template_name"] == "order_ready_v1" and m["campaign_id"] == campaign.campaign_id
        for m in received
    )

    # The values are those of the day's first eligible row, as the pipeline itself renders it.
    assert materialize_campaign(
        demo_config, KEY, resources_for(seeded, sandbox, frozen_at=NOON)
    ).success
    with seeded.engine.connect() as conn:
        first = conn.execute(
            sa.select(messages.c.body_params_json, messages.c.preview_text)
            .join(
                audience,
                sa.and_(
                    audience.c.campaign_key == messages.c.campaign_key,
                    audience.c.partition_date == messages.c.partition_date,
                    audience.c.row_key == messages.c.row_key,
                ),
            )
            .where(
                messages.c.campaign_key == KEY,
                messages.c.partition_date == DAY,
                messages.c.rendered == sa.true(),
            )
            .order_by(audience.c.row_number)
            .limit(1)
        ).one()
        recorded = conn.execute(sa.select(test_sends)).mappings().all()
    assert received[0]["body_variables"] == json.loads(first.body_params_json)
    assert first.preview_text in items["preview"]["detail"]
    assert [r["status"] for r in recorded] == ["sent"] * len(campaign.test_recipients)
    assert (
        recorded[0]["message_id"] == received[0]["message_id"]
        and recorded[0]["parameters_from"] == "first_eligible_row"
    )


def test_test_sends_never_block_nor_count_as_production(seeded, sandbox, demo_config) -> None:
    """A test recipient who is also in today's audience: the test message leaves no trace in the
    ledger, and the production run right after still sends to them (no pair-rate deferral, no
    "already handled"), once."""
    resources = resources_for(seeded, sandbox, frozen_at=NOON)
    assert materialize_campaign(
        demo_config,
        KEY,
        resources,
        run_config={"ops": {f"{KEY}__deliveries": {"config": {"dry_run": True}}}},
    ).success
    with seeded.engine.connect() as conn:
        customer = conn.execute(
            sa.select(audience.c.recipient)
            .where(audience.c.campaign_key == KEY, audience.c.eligible == sa.true())
            .order_by(audience.c.row_number)
            .limit(1)
        ).scalar_one()
    config = with_campaign(demo_config, KEY, test_recipients=[customer])
    assert run_preflight(config, resources).success
    with seeded.engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(send_ledger)).scalar_one() == 0

    assert materialize_campaign(config, KEY, resources).success
    to_customer = [m for m in sandbox.messages() if f"+{m['recipient_id']}" == customer]
    assert len(to_customer) == 2  # the test message, then the production one
    with seeded.engine.connect() as conn:
        row = conn.execute(
            sa.select(send_ledger.c.status, send_ledger.c.attempts).where(
                send_ledger.c.delivery_key == customer
            )
        ).one()
    assert row.status == "sent" and row.attempts == 1


def test_a_test_message_waits_for_the_slots_another_run_holds_on_its_sender(
    seeded, sandbox, demo_config
) -> None:
    # A run of another campaign of the same number holds its next 3 s of sending: the test message
    # would go over the sender's messages/s if it went now.
    campaign = demo_config.campaign(KEY)
    with seeded.engine.begin() as conn:
        start = ledger.reserve_send_slots(
            conn,
            campaign.sender,
            int(3 * campaign.max_send_rate),
            campaign.max_send_rate,
            time.time(),
        )
    held_until = start + 3
    result = run_preflight(demo_config, resources_for(seeded, sandbox, frozen_at=NOON))
    assert result.success and checklist(result)["test_send"]["status"] == "pass"
    received = [dt.datetime.fromisoformat(m["received_at"]).timestamp() for m in sandbox.messages()]
    assert len(received) == len(campaign.test_recipients) and min(received) >= held_until


def test_preflight_fails_on_bad_credentials_without_sending(seeded, sandbox, demo_config) -> None:
    resources = resources_for(seeded, sandbox, frozen_at=NOON)
    # The token endpoint refuses the login (as iAdvize does for a wrong password or a blocked user).
    # (A new resource: model_copy of a ConfigurableResource does not change what Dagster runs with.)
    iadvize = resources["iadvize"]
    resources["iadvize"] = type(iadvize)(
        **{**iadvize.model_dump(), "token_url": f"{sandbox.base_url}/oauth2/refused"}
    )
    result = run_preflight(demo_config, resources)
    assert not result.success
    items = checklist(result)
    assert items["credentials"]["status"] == "fail" and items["test_send"]["status"] == "skipped"
    assert sandbox.messages() == []
    with seeded.engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(test_sends)).scalar_one() == 0


def test_preflight_fails_on_dates_and_template_mismatch(seeded, sandbox, demo_config) -> None:
    import datetime as dt

    resources = resources_for(seeded, sandbox, frozen_at=NOON)
    ended = with_campaign(demo_config, KEY, end_date=dt.date(2026, 6, 30))
    result = run_preflight(ended, resources)
    assert not result.success and checklist(result)["dates"]["status"] == "fail"

    campaign = demo_config.campaign(KEY)
    two_of_three = Variables(body={n: s for n, s in campaign.variables.body.items() if n < 3})
    broken = with_campaign(demo_config, KEY, variables=two_of_three)
    result = run_preflight(broken, resources, sample_values=True)
    items = checklist(result)
    assert not result.success and items["template"]["status"] == "fail"
    # The API agrees: the test message with two values is refused, and recorded as such.
    assert items["test_send"]["status"] == "fail"
    with seeded.engine.connect() as conn:
        rows = conn.execute(
            sa.select(test_sends.c.status, test_sends.c.error_code).where(
                test_sends.c.run_id == result.run_id
            )
        ).all()
    assert rows and all(r.status == "failed" and r.error_code == "132000" for r in rows)


@pytest.mark.parametrize("warehouse", ["sqlite"], indirect=True)
def test_preflight_sample_values(seeded, sandbox, demo_config) -> None:
    result = run_preflight(
        demo_config,
        resources_for(seeded, sandbox, frozen_at=NOON),
        key="winter_offers",
        sample_values=True,
    )
    assert result.success
    (message,) = sandbox.messages()
    assert message["header_variables"] == ["d'hiver"]  # the literal as configured
    assert message["body_variables"] == ["test body 1", "test body 2", "test body 3", "test body 4"]


def test_a_failing_audience_query_fails_the_preview_with_the_phone_it_quotes_masked(
    seeded, sandbox, demo_config
) -> None:
    # Both databases quote the name they could not find; a query can as well quote a value it
    # could not cast. The checklist goes to the run's logs and the UI.
    phone = "+33612345678"
    broken = with_campaign(
        demo_config, KEY, audience_sql=f'SELECT customer_id, phone, first_name FROM "{phone}"'
    )
    instance = dg.DagsterInstance.ephemeral()
    result = run_preflight(
        broken, resources_for(seeded, sandbox, frozen_at=NOON), instance=instance
    )

    assert not result.success
    preview = checklist(result)["preview"]
    assert preview["status"] == "fail" and "the audience query failed" in preview["detail"]
    assert "+336******78" in preview["detail"] and phone.lstrip("+") not in preview["detail"], (
        preview["detail"]
    )
    logged = " ".join(entry.user_message for entry in instance.all_logs(result.run_id))
    assert "+336******78" in logged and phone.lstrip("+") not in logged


@pytest.mark.parametrize(
    "warehouse", [pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True
)
def test_a_database_error_that_quotes_a_row_fails_the_preflight_without_the_phone(
    seeded, sandbox, demo_config
) -> None:
    # PostgreSQL's DETAIL lines quote rows; here a trigger refuses the test sends' record with the
    # recipient in its DETAIL, as a constraint naming a failing row would.
    with seeded.engine.begin() as conn:
        conn.exec_driver_sql(
            "CREATE FUNCTION refuse_row() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            "RAISE EXCEPTION 'test send refused' USING DETAIL = 'recipient ' || NEW.recipient; END $$"
        )
        conn.exec_driver_sql(
            "CREATE TRIGGER refuse_row BEFORE INSERT ON outbound_test_sends FOR EACH ROW EXECUTE FUNCTION refuse_row()"
        )
    result = run_preflight(demo_config, resources_for(seeded, sandbox, frozen_at=NOON))

    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure)
    shown = failure.step_failure_data.error.to_string()
    assert "test send refused" in shown and "RaiseException" in shown, shown
    recipients = demo_config.campaign(KEY).test_recipients
    assert recipients and not [p for p in recipients if p.lstrip("+") in shown], shown
