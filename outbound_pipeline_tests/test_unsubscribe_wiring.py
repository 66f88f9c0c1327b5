"""The suppression list wired into the pipeline: honoured at extraction and by the claim, a signed
link rendered as a template variable that the endpoint accepts, the CLI and the warehouse copy.
Real SQLite and PostgreSQL, the sandbox and the endpoint over real sockets."""

from __future__ import annotations

import copy
import datetime as dt
import json

import httpx
import pytest
import sqlalchemy as sa
import yaml

from outbound_pipeline import cli
from outbound_pipeline.cli_suppressions import demo_link
from outbound_pipeline.config import BUNDLED_CONFIG, parse_config
from outbound_pipeline.ledger import suppressed_phones
from outbound_pipeline.unsubscribe import (
    EndpointThread,
    SuppressionSource,
    UnsubscribeLinksResource,
    create_app,
    list_suppressions,
    suppress,
)
from outbound_pipeline.warehouse import audience, deliveries, messages, suppression_list
from outbound_pipeline_tests.conftest import DAY, materialize_campaign, resources_for

SECRET = "wiring-secret-0123456789-abcdefghijklmn"
T0 = dt.datetime(2026, 11, 24, 8, 0, tzinfo=dt.UTC)
KEY = "order_ready"


def _day_rows(engine: sa.Engine, table: sa.Table) -> list[sa.RowMapping]:
    with engine.connect() as conn:
        return list(
            conn.execute(
                sa.select(table).where(table.c.campaign_key == KEY, table.c.partition_date == DAY)
            ).mappings()
        )


def _suppress(engine: sa.Engine, phone: str) -> None:
    with engine.begin() as conn:
        suppress(conn, phone, SuppressionSource.CLI, T0)


def test_suppressed_phones_are_kept_out_at_extraction_and_at_the_claim(
    small, sandbox, demo_config
) -> None:
    resources = resources_for(small, sandbox)
    first = materialize_campaign(demo_config, KEY, resources, selection=["audience", "messages"])
    assert first.success
    eligible = [r["recipient"] for r in _day_rows(small.engine, audience) if r["eligible"]]
    at_extraction, at_claim = eligible[0], eligible[1]
    # Suppressed before the audience step: the row is not eligible.
    _suppress(small.state, at_extraction)
    again = materialize_campaign(demo_config, KEY, resources, selection=["audience", "messages"])
    assert again.success
    by_phone = {r["recipient"]: r for r in _day_rows(small.engine, audience)}
    assert (by_phone[at_extraction]["eligible"], by_phone[at_extraction]["reason"]) == (
        False,
        "unsubscribed",
    )
    # Suppressed after the messages were rendered: the claim skips it and no call is made.
    _suppress(small.state, at_claim)
    sent = materialize_campaign(demo_config, KEY, resources, selection=["deliveries"])
    assert sent.success
    outcome = {r["recipient"]: r for r in _day_rows(small.engine, deliveries)}
    assert outcome[at_claim]["status"] == "skipped"
    assert outcome[at_claim]["reason"] == "unsubscribed"
    assert outcome[at_extraction]["reason"] == "unsubscribed"
    called = {f"+{m['recipient_id']}" for m in sandbox.messages()}
    assert called and not {at_extraction, at_claim} & called
    # The link the demo prints for the day's first recipient works against the endpoint.
    app = create_app(SECRET, small.state, now=lambda: T0)
    with EndpointThread(app) as endpoint:
        link = demo_link(small.engine, DAY, SECRET, endpoint.base_url)
        assert link is not None and httpx.post(link).status_code == 200
    with small.state.connect() as conn:
        listed = {s.phone for s in list_suppressions(conn)}
    assert listed - {at_extraction, at_claim} == {min(called)}


@pytest.mark.parametrize("whole_list_max", [100_000, 3, 2, 0])
def test_suppressed_phones_finds_the_phones_on_the_list_whatever_its_length(
    small, whole_list_max
) -> None:
    # Read whole (the list holds at most whole_list_max phones) or asked call by call: one answer.
    listed = ["+33612345670", "+33612345671", "+33612345672"]
    for phone in listed:
        _suppress(small.state, phone)
    on_list = suppressed_phones(small.state, whole_list_max=whole_list_max)
    assert on_list(["+33612345671", "+33699999999"]) == {"+33612345671"}
    assert on_list([*listed, "+33699999999"]) == set(listed)
    assert on_list([]) == set()


def test_a_list_read_whole_is_the_list_at_the_stages_first_chunk(small) -> None:
    # As the audience query's consents are: a phone suppressed later in the stage is stopped at
    # its claim (test_suppressed_phones_are_kept_out_at_extraction_and_at_the_claim).
    first, later = "+33612345670", "+33612345671"
    _suppress(small.state, first)
    on_list = suppressed_phones(small.state)
    assert on_list([first, later]) == {first}
    _suppress(small.state, later)
    assert on_list([first, later]) == {first}
    assert suppressed_phones(small.state)([first, later]) == {first, later}


def _config_with_link() -> object:
    raw = yaml.safe_load(BUNDLED_CONFIG.read_text(encoding="utf-8"))
    raw = copy.deepcopy(raw)
    raw["templates"][0]["body"] += " Se désabonner : {{4}}"
    raw["campaigns"][0]["variables"]["body"][4] = {"unsubscribe": "link"}
    return parse_config(raw)


def test_the_link_a_message_carries_unsubscribes_its_recipient(small, sandbox) -> None:
    config = _config_with_link()
    resources = resources_for(small, sandbox)
    app = create_app(SECRET, small.state, now=lambda: T0)
    with EndpointThread(app) as endpoint:
        resources["unsubscribe_links"] = UnsubscribeLinksResource(
            secret=SECRET, base_url=endpoint.base_url
        )
        result = materialize_campaign(config, KEY, resources, selection=["audience", "messages"])  # type: ignore[arg-type]
        assert result.success
        rendered = [r for r in _day_rows(small.engine, messages) if r["rendered"]]
        assert rendered
        row = rendered[0]
        link = json.loads(row["body_params_json"])[3]
        assert link.startswith(f"{endpoint.base_url}/u/")
        assert row["preview_text"].endswith(link)
        # The UI's sample preview shows no link: its token encodes the phone number.
        preview = result.asset_materializations_for_node(f"{KEY}__messages")[0].metadata
        assert "/u/" not in preview["preview_text"].value
        assert httpx.post(link).status_code == 200
    again = materialize_campaign(config, KEY, resources, selection=["audience"])  # type: ignore[arg-type]
    assert again.success
    by_key = {r["row_key"]: r for r in _day_rows(small.engine, audience)}
    assert by_key[row["row_key"]]["reason"] == "unsubscribed"


def test_a_link_variable_without_a_secret_stops_the_messages_step(small, sandbox) -> None:
    resources = resources_for(small, sandbox)  # UnsubscribeLinksResource() without a secret
    result = materialize_campaign(
        _config_with_link(),  # type: ignore[arg-type]
        KEY,
        resources,
        selection=["audience", "messages"],
        raise_on_error=False,
    )
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure)
    assert "OUTBOUND_UNSUBSCRIBE_SECRET" in str(failure.step_failure_data.error)
    assert not [r for r in _day_rows(small.engine, messages)]


def test_the_cli_adds_lists_and_publishes_the_list(
    small, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("OUTBOUND_WAREHOUSE_URL", small.url)
    monkeypatch.delenv("OUTBOUND_STATE_URL", raising=False)
    assert (
        cli.main(["suppressions", "add", "+33612345678", "06 99 88 77 66", "--region", "FR"]) == 0
    )
    assert cli.main(["suppressions", "add", "not a phone"]) == 2
    assert cli.main(["suppressions", "list"]) == 0
    out = capsys.readouterr().out
    assert "+336******78" in out and "+33612345678" not in out  # masked unless --full
    with small.engine.connect() as conn:
        published = {r.phone: r.source for r in conn.execute(sa.select(suppression_list))}
    assert published == {"+33612345678": "cli", "+33699887766": "cli"}
