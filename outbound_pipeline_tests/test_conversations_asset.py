"""The conversations asset and the report that closes the loop, over a real socket: the campaign
sends through the sandbox iAdvize, which simulates replies; the asset reads them back and writes
outbound_conversations; the report counts them as numbers. Also the preflight's check of the
configured conversation names, the report's freshness check and the refresh schedule."""

from __future__ import annotations

import datetime as dt
from typing import Any
from zoneinfo import ZoneInfo

import dagster as dg
import httpx
import pytest
import sqlalchemy as sa

from outbound_pipeline import cli
from outbound_pipeline.clock import as_utc
from outbound_pipeline.config import ConversationQuerySettings, OutboundConfig
from outbound_pipeline.conversations import days_to_refresh
from outbound_pipeline.defs.campaigns.component import build_definitions
from outbound_pipeline.defs.campaigns.report_asset import build_report_freshness_checks
from outbound_pipeline.ledger import send_ledger
from outbound_pipeline.reporting import REPORT_METRICS
from outbound_pipeline.sandbox import SandboxServer
from outbound_pipeline.sandbox.conversations import OTHER_CAMPAIGN_ID, Conversation
from outbound_pipeline.warehouse import conversations, daily_stats
from outbound_pipeline_tests.conftest import (
    DAY,
    campaign_assets,
    materialize_campaign,
    resources_for,
)
from outbound_pipeline_tests.stores import create_all_tables
from outbound_pipeline_tests.test_preflight import checklist, run_preflight

KEY = "order_ready"
SHARES = {
    "reply_share": 0.8,
    "late_share": 0.2,
    "convert_share": 0.5,
    "other_campaign_share": 0.4,
    "seed": 11,
}


def _metadata(result: dg.ExecuteInProcessResult, name: str) -> dict[str, Any]:
    events = result.asset_materializations_for_node(f"{KEY}__{name}")
    assert len(events) == 1
    return {k: getattr(v, "value", v) for k, v in events[0].metadata.items()}


def _sent(engine: sa.Engine) -> dict[str, Any]:
    """message_id -> the day's sent ledger row."""
    d = send_ledger.c
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(send_ledger).where(d.campaign_key == KEY, d.status == "sent")
        ).all()
    return {row.message_id: row for row in rows}


def _stored(engine: sa.Engine) -> dict[str, Any]:
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(conversations).where(conversations.c.campaign_key == KEY)
        ).all()
    return {row.recipient: row for row in rows}


def _expected(sandbox: SandboxServer, sent: dict[str, Any]) -> dict[str, tuple[bool, bool, bool]]:
    """recipient -> (replied, wrong campaign, converted), from what the sandbox simulated."""
    expected = {row.recipient: (False, False, False) for row in sent.values()}
    for record in sandbox._get("/_sandbox/conversations"):
        row = sent.get(record["messageId"])
        if row is None:
            continue
        started = dt.datetime.fromisoformat(record["startedAt"])
        replied = started < as_utc(row.attribution_expires_at)
        wrong = replied and record["campaignId"] == OTHER_CAMPAIGN_ID
        expected[row.recipient] = (replied, wrong, replied and record["converted"])
    return expected


def test_conversations_are_matched_to_the_right_recipients_and_the_report_shows_them(
    small, sandbox, demo_config, monkeypatch, capsys
) -> None:
    sandbox.configure(conversations=SHARES)
    resources = resources_for(small, sandbox)
    result = materialize_campaign(demo_config, KEY, resources)
    assert result.success

    sent = _sent(small.state)
    stored = _stored(small.engine)
    expected = _expected(sandbox, sent)
    assert len(sent) > 10 and set(stored) == set(expected)
    got = {
        recipient: (row.replied, bool(row.replied and row.attached_to_campaign is False
                                      and row.attached_campaign_id is not None), row.converted)
        for recipient, row in stored.items()
    }  # fmt: skip
    assert got == expected
    # The simulation drew every kind of outcome, so the comparison above means something.
    for kind in range(3):
        assert {e[kind] for e in expected.values()} == {True, False}
    for recipient, row in stored.items():
        assert row.message_id in sent and sent[row.message_id].recipient == recipient

    replied = sum(e[0] for e in expected.values())
    wrong = sum(e[1] for e in expected.values())
    converted = sum(e[2] for e in expected.values())
    report = _metadata(result, "report")
    assert set(REPORT_METRICS) <= set(report)
    assert all(isinstance(report[name], int | float) for name in REPORT_METRICS)
    assert (report["sent"], report["replied"], report["wrong_campaign"]) == (
        len(sent),
        replied,
        wrong,
    )
    assert report["conversions"] == converted
    assert report["reply_rate"] == round(replied / len(sent), 4)
    assert report["conversion_rate"] == round(converted / len(sent), 4)
    with small.engine.connect() as conn:
        row = conn.execute(sa.select(daily_stats).where(daily_stats.c.campaign_key == KEY)).one()
    assert (row.replied, row.wrong_campaign, row.conversions) == (replied, wrong, converted)
    assert row.conversations_read_at is not None

    # `outbound-pipeline stats` prints them.
    monkeypatch.setenv("OUTBOUND_WAREHOUSE_URL", small.url)
    assert cli.main(["stats", "--date", DAY]) == 0
    header, line = capsys.readouterr().out.splitlines()[:2]
    for name in ("replied", "reply_rate", "wrong_campaign", "conversions", "conversion_rate"):
        assert name in header.split()
    assert line.split()[-5:] == [
        str(replied),
        str(round(replied / len(sent), 4)),
        str(wrong),
        str(converted),
        str(round(converted / len(sent), 4)),
    ]

    # Read again (as the refresh schedule does): the same rows, replaced, not added.
    again = materialize_campaign(demo_config, KEY, resources, selection=["conversations"])
    assert again.success and _metadata(again, "conversations")["replied"] == replied
    restored = _stored(small.engine)
    assert len(restored) == len(stored)
    assert {r: (x.replied, x.conversation_id) for r, x in restored.items()} == {
        r: (x.replied, x.conversation_id) for r, x in stored.items()
    }
    assert {x.run_id for x in restored.values()} == {again.run_id}


@pytest.mark.parametrize("warehouse", ["sqlite"], indirect=True)
def test_replies_after_the_window_are_not_counted(small, sandbox, demo_config) -> None:
    sandbox.configure(conversations={"reply_share": 1.0, "late_share": 1.0, "seed": 3})
    result = materialize_campaign(demo_config, KEY, resources_for(small, sandbox))
    assert result.success
    read = _metadata(result, "conversations")
    report = _metadata(result, "report")
    assert read["sent"] > 0 and read["late_replies"] > 0
    assert read["replied"] == read["converted"] == 0
    assert report["replied"] == report["conversions"] == 0
    assert report["reply_rate"] == report["conversion_rate"] == 0.0
    assert report["late_replies"] == read["late_replies"]
    stored = _stored(small.engine).values()
    assert not any(row.replied or row.converted for row in stored)
    assert any(row.within_window is False and row.conversation_id for row in stored)


@pytest.mark.parametrize("warehouse", ["sqlite"], indirect=True)
def test_a_configured_name_missing_from_the_schema_fails_the_preflight(
    small, sandbox, demo_config
) -> None:
    wrong = ConversationQuerySettings(phone_field="visitor.phoneNumber")
    config = demo_config.model_copy(
        update={"iadvize": demo_config.iadvize.model_copy(update={"conversations": wrong})}
    )
    result = run_preflight(config, resources_for(small, sandbox), send_test=False)
    assert not result.success
    item = checklist(result)["conversation_schema"]
    assert item["status"] == "fail"
    for words in ("phoneNumber", "phone_field", "iadvize.conversations", "it has: phone"):
        assert words in item["detail"]

    right = run_preflight(demo_config, resources_for(small, sandbox), send_test=False)
    assert right.success and checklist(right)["conversation_schema"]["status"] == "pass"


def _with_deadline(config: OutboundConfig, cron: str) -> OutboundConfig:
    campaigns = [
        c.model_copy(
            update={"follow_up": c.follow_up.model_copy(update={"report_deadline_cron": cron})}
        )
        for c in config.campaigns
    ]
    return config.model_copy(update={"campaigns": campaigns})


@pytest.mark.parametrize("warehouse", ["sqlite"], indirect=True)
def test_a_day_not_reported_by_its_deadline_is_overdue(warehouse, sandbox, demo_config) -> None:
    # A deadline every minute: the check expects today's report, whatever the time.
    config = _with_deadline(demo_config, "* * * * *")
    campaign = config.campaign(KEY)
    report = next(a for a in campaign_assets(config, KEY) if a.key.path[-1] == "report")
    checks = build_report_freshness_checks(campaign, report)
    resources = resources_for(warehouse, sandbox)
    instance = dg.DagsterInstance.ephemeral()
    # The campaign's day, not UTC's: from 23:00 UTC it is already tomorrow in Paris.
    today = dt.datetime.now(ZoneInfo(campaign.schedule.timezone)).date()

    def evaluate() -> bool:
        run = dg.materialize(
            [report, *checks],
            selection=dg.AssetSelection.checks(*checks),
            instance=instance,
            resources=resources,
        )
        (evaluation,) = run.get_asset_check_evaluations()
        return evaluation.passed

    # An old day reported late does not make today fresh.
    old = (today - dt.timedelta(days=3)).isoformat()
    for day in (old, today.isoformat()):
        assert not evaluate()
        dg.materialize([report], partition_key=day, instance=instance, resources=resources)
    assert evaluate()


@pytest.mark.parametrize("warehouse", ["sqlite"], indirect=True)
def test_the_refresh_schedule_reads_again_the_days_whose_window_is_open(
    demo_config, warehouse, sandbox
) -> None:
    assert days_to_refresh(dt.date(2026, 3, 10), 72, dt.date(2026, 3, 7), None) == [
        "2026-03-07",
        "2026-03-08",
        "2026-03-09",
    ]
    assert days_to_refresh(dt.date(2026, 3, 10), 24, dt.date(2026, 1, 1), dt.date(2026, 3, 8)) == [
        "2026-03-07",
        "2026-03-08",
    ]
    defs = build_definitions(demo_config, resources_for(warehouse, sandbox))
    schedule = defs.resolve_schedule_def(f"{KEY}_conversations_schedule")
    tick = dt.datetime(2026, 11, 30, 6, 0, tzinfo=dt.UTC)
    with dg.build_schedule_context(
        scheduled_execution_time=tick, repository_def=defs.get_repository_def()
    ) as context:
        requests = list(schedule.evaluate_tick(context).run_requests or [])
    window = demo_config.campaign(KEY).attribution_window_hours
    assert [r.partition_key for r in requests] == days_to_refresh(
        tick.date(), window, dt.date(2026, 1, 1), None
    )
    assert requests[-1].partition_key == "2026-11-29" and len({r.run_key for r in requests}) == 5
    job = defs.resolve_job_def(f"{KEY}_conversations")
    assert job.asset_layer.executable_asset_keys == {
        dg.AssetKey([KEY, "conversations"]),
        dg.AssetKey([KEY, "report"]),
    }


@pytest.mark.parametrize("warehouse", ["sqlite"], indirect=True)
def test_a_reply_after_a_later_message_answers_that_message(
    warehouse, sandbox, demo_config
) -> None:
    """A phone the campaign messaged on the day and another campaign an hour later: a
    conversation that starts after the second message is its reply, not the day's."""
    create_all_tables(warehouse.engine)
    campaign = demo_config.campaign(KEY)
    t0 = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(hours=6)
    first, second = "+33612000001", "+33612000002"

    def ledger_row(key: str, recipient: str, sent_at: dt.datetime) -> dict[str, Any]:
        return {
            "campaign_key": key,
            "partition_date": DAY,
            "delivery_key": recipient,
            "row_key": recipient,
            "recipient": recipient,
            "status": "sent",
            "message_id": f"m-{key}-{recipient}",
            "attempts": 1,
            "sent_at": sent_at,
            "attribution_expires_at": sent_at + dt.timedelta(hours=72),
        }

    with warehouse.state.begin() as conn:
        conn.execute(
            sa.insert(send_ledger),
            [
                ledger_row(KEY, first, t0),
                ledger_row(KEY, second, t0),
                ledger_row("winter_offers", first, t0 + dt.timedelta(hours=1)),
            ],
        )
    other_id = demo_config.campaign("winter_offers").campaign_id
    for n, (phone, minutes, attached) in enumerate(
        [(first, 120, other_id), (second, 30, campaign.campaign_id)]
    ):
        sandbox.state.conversations.add(
            Conversation(
                f"c-{n}", None, phone[1:], attached, t0 + dt.timedelta(minutes=minutes), True
            )
        )
    result = materialize_campaign(
        demo_config, KEY, resources_for(warehouse, sandbox), selection=["conversations"]
    )
    assert result.success
    stored = _stored(warehouse.engine)
    assert (stored[second].replied, stored[second].conversation_id) == (True, "c-1")
    assert (stored[first].replied, stored[first].conversation_id) == (False, None)
    read = _metadata(result, "conversations")
    assert (read["replied"], read["wrong_campaign"], read["converted"]) == (1, 0, 1)


def test_the_demo_serves_the_sandbox_for_its_runs(demo_config, monkeypatch) -> None:
    """Each step of a demo run is a process of its own: the sandbox that simulated the replies
    must outlive them, so the demo serves it on loopback and names it to the runs."""
    monkeypatch.delenv("IADVIZE_MODE", raising=False)
    env: dict[str, str] = {}
    with cli._demo_iadvize(env, demo_config) as described:
        assert "sandbox at http://127.0.0.1:" in described
        url = env["IADVIZE_GRAPHQL_URL"]
        assert url.startswith("http://127.0.0.1:") and env["IADVIZE_TOKEN_URL"]
        with httpx.Client() as client:
            assert client.get(url.replace("/graphql", "/_sandbox/stats")).status_code == 200
    named = {"IADVIZE_GRAPHQL_URL": "http://127.0.0.1:9/graphql"}
    with cli._demo_iadvize(named, demo_config) as described:
        assert described == "sandbox at http://127.0.0.1:9/graphql"
