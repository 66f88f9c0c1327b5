"""The last-moment consent check on an analytical warehouse: polled within a bound, not queried per
batch (warehouse.consent_poll), on a real DuckDB file; its settings and how it is chosen."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from outbound_pipeline.config import ConfigError, parse_config
from outbound_pipeline.ledger import send_ledger
from outbound_pipeline.sending import campaign_day
from outbound_pipeline.settings import (
    CONSENT_BOUND_SECONDS,
    CONSENT_CHECK,
    CONSENT_LOOKBACK_HOURS,
    consent_settings_from_env,
    warehouse_from_env,
)
from outbound_pipeline.warehouse import (
    ConsentSettings,
    ConsentSettingsError,
    PolledConsent,
    WarehouseConsent,
    WarehouseResource,
    consent_source,
    create_engine,
)
from outbound_pipeline_tests.bulk import (
    assert_no_duplicate_messages,
    bulk_campaign,
    bulk_config,
    bundled_templates,
    ledger_rows,
)
from outbound_pipeline_tests.conftest import (
    DAY,
    DUCKDB_STORES,
    deliveries_run_config,
    materialize_campaign,
    resources_for,
)
from outbound_pipeline_tests.stores import DemoCopies, Warehouse, hold_duckdb_file

NOW = dt.datetime.now(dt.UTC)
OLD = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)


class Ticks:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def duck(tmp_path: Path) -> sa.Engine:
    """A DuckDB warehouse whose consent table has a load-time column, as some loaders stamp."""
    engine = create_engine(f"duckdb:///{tmp_path / 'warehouse.duckdb'}")
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "CREATE TABLE whatsapp_consents (customer_id VARCHAR, category VARCHAR, "
            "status VARCHAR, updated_at TIMESTAMPTZ, loaded_at TIMESTAMPTZ)"
        )
    _write(engine, [(f"C{i}", "opted_in", OLD, OLD) for i in range(10)])
    _write(engine, [("C0", "opted_in", OLD, OLD), ("C1", "opted_out", OLD, OLD)], "offers")
    yield engine
    engine.dispose()


def _write(
    engine: sa.Engine,
    rows: list[tuple[str, str, dt.datetime, dt.datetime]],
    category: str = "order_updates",
) -> None:
    with engine.begin() as conn:
        conn.execute(
            sa.text("INSERT INTO whatsapp_consents VALUES (:c, :cat, :s, :u, :l)"),
            [{"c": c, "cat": category, "s": s, "u": u, "l": loaded} for c, s, u, loaded in rows],
        )


def _polled(engine: sa.Engine, ticks: Ticks, **options: object) -> PolledConsent:
    return PolledConsent(
        engine,
        "whatsapp_consents",
        "order_updates",
        max_age_seconds=10,
        lookback=dt.timedelta(hours=24),
        monotonic=ticks,
        **options,  # type: ignore[arg-type]
    )


def _opted_out(source: PolledConsent, ids: list[str]) -> set[str]:
    return {c for c, status in source.states(ids).items() if status == "opted_out"}


def test_the_poll_reads_changes_within_its_age_and_looks_back_for_rows_landing_late(
    duck: sa.Engine,
) -> None:
    ticks = Ticks()
    source = _polled(duck, ticks)
    everyone = [f"C{i}" for i in range(12)]
    assert source.states(everyone) == {f"C{i}": "opted_in" for i in range(10)}
    assert source.polls == 1
    # Answered from the last poll while it is younger than its age: no query per batch.
    _write(duck, [("C2", "opted_out", NOW, NOW)])
    ticks.now += 10
    assert not _opted_out(source, everyone) and source.polls == 1
    ticks.now += 0.1
    assert _opted_out(source, everyone) == {"C2"} and source.polls == 2
    # Business time an hour ago, landing now: the lookback reads it. Older than the lookback: not.
    _write(
        duck,
        [
            ("C3", "opted_out", NOW - dt.timedelta(hours=1), NOW),
            ("C4", "opted_out", NOW - dt.timedelta(hours=30), NOW),
            ("C5", "opted_out", NOW + dt.timedelta(days=400), NOW),  # dated in the future
        ],
    )
    ticks.now += 11
    assert _opted_out(source, everyone) == {"C2", "C3", "C5"}
    # The row dated in the future did not move the watermark past today: an opt-out dated now
    # (an opt-in again for C2 a second later) is still read.
    _write(duck, [("C2", "opted_in", NOW + dt.timedelta(seconds=1), NOW)])
    ticks.now += 11
    assert _opted_out(source, everyone) == {"C3", "C5"}
    # The other category's rows never count.
    assert source.states(["C1"]) == {"C1": "opted_in"}


def test_a_refresh_ahead_of_a_claim_leaves_fresh_answers_even_after_waiting_for_the_file(
    duck: sa.Engine, tmp_path: Path
) -> None:
    """The answers' age counts from the read that succeeded, not from a wait for another
    process's lock before it: a refresh that waited longer than the age limit still leaves the
    claim that follows nothing to poll inside its transaction."""
    source = PolledConsent(
        duck,
        "whatsapp_consents",
        "order_updates",
        max_age_seconds=1.0,
        lookback=dt.timedelta(hours=24),
    )
    holder = hold_duckdb_file(str(duck.url), 2.0, tmp_path)
    source.refresh()  # waits for the holder: about 2 s, twice the age limit
    holder.communicate(timeout=60)
    assert source.polls == 1
    assert source.states(["C1"]) == {"C1": "opted_in"}
    assert source.polls == 1  # the claim's own check found the answers fresh


def test_a_load_time_column_named_by_the_brand_catches_any_late_row(duck: sa.Engine) -> None:
    ticks = Ticks()
    source = _polled(duck, ticks, loaded_at_column="loaded_at")
    source.states(["C0"])
    _write(duck, [("C4", "opted_out", NOW - dt.timedelta(days=30), NOW)])
    ticks.now += 11
    assert _opted_out(source, ["C4"]) == {"C4"}


def test_the_send_step_polls_by_the_load_time_column_the_campaigns_file_names(
    duck: sa.Engine,
) -> None:
    config = parse_config(
        {
            "consents_loaded_at_column": "loaded_at",
            "templates": bundled_templates(),
            "campaigns": [bulk_campaign("bulk")],
        },
        "<campaigns>",
    )
    consent = campaign_day(duck, config.campaign("bulk"), config, DAY).consent
    assert isinstance(consent, PolledConsent)
    consent.states(["C0"])
    _write(duck, [("C4", "opted_out", NOW - dt.timedelta(days=30), NOW)])
    consent.max_age_seconds = 0  # due for its next poll
    assert consent.states(["C4"]) == {"C4": "opted_out"}
    with pytest.raises(ConfigError, match="consents_loaded_at_column: String should match"):
        parse_config(
            {
                "consents_loaded_at_column": "loaded at; --",
                "templates": bundled_templates(),
                "campaigns": [bulk_campaign("bulk")],
            },
            "<campaigns>",
        )


def test_the_check_is_chosen_by_dialect_unless_set(duck: sa.Engine, tmp_path: Path) -> None:
    sqlite = create_engine(f"sqlite:///{tmp_path / 'w.sqlite'}")
    auto, poll, batch = (ConsentSettings(check) for check in ("auto", "poll", "batch"))

    def source(engine: sa.Engine, settings: ConsentSettings) -> object:
        return consent_source(engine, "t", "c", settings, check_to_call_seconds=3.0)

    assert isinstance(source(duck, auto), PolledConsent)
    assert isinstance(source(sqlite, auto), WarehouseConsent)
    assert isinstance(source(sqlite, poll), PolledConsent)
    assert isinstance(source(duck, batch), WarehouseConsent)
    # The poll is younger than the bound by the time a call may follow its check.
    assert source(duck, ConsentSettings(bound_seconds=30)).max_age_seconds == 27  # type: ignore[attr-defined]
    sqlite.dispose()


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        (CONSENT_CHECK, "sometimes", "OUTBOUND_CONSENT_CHECK='sometimes': expected 'auto'"),
        (CONSENT_BOUND_SECONDS, "soon", "OUTBOUND_CONSENT_BOUND_SECONDS='soon': expected a number"),
        (CONSENT_BOUND_SECONDS, "1", "OUTBOUND_CONSENT_BOUND_SECONDS: consent bound 1.0 s"),
        (CONSENT_LOOKBACK_HOURS, "-1", "OUTBOUND_CONSENT_LOOKBACK_HOURS: consent lookback -1.0 h"),
    ],
)
def test_consent_settings_are_refused_with_the_variable_named(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, expected: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConsentSettingsError, match="^" + expected.replace("(", r"\(")):
        warehouse_from_env()


def test_consent_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert consent_settings_from_env() == ConsentSettings("auto", 30.0, 24.0)
    monkeypatch.setenv(CONSENT_CHECK, " Poll ")
    monkeypatch.setenv(CONSENT_BOUND_SECONDS, "12.5")
    monkeypatch.setenv(CONSENT_LOOKBACK_HOURS, "48")
    resource = warehouse_from_env()
    assert resource.consent_settings() == ConsentSettings("poll", 12.5, 48.0)


# A brand's loader in a process of its own: it waits (imports done) for the customers to opt out,
# writes their rows in one transaction that keeps the DuckDB file a moment, as a loader's batch
# does, and prints when it committed. Its engine waits for the file's lock (warehouse.retry).
_LOADER = """
import datetime as dt, json, pathlib, sys, time
import sqlalchemy as sa
from outbound_pipeline.warehouse import create_engine
url, go = sys.argv[1], pathlib.Path(sys.argv[2])
engine = create_engine(url)
go.with_suffix(".ready").touch()
while not go.exists():
    time.sleep(0.01)
rows = json.loads(go.read_text())
now = dt.datetime.now(dt.UTC)
with engine.begin() as conn:
    first = conn.execute(sa.text("SELECT max(id) FROM whatsapp_consents")).scalar() + 1
    conn.execute(
        sa.text(
            "INSERT INTO whatsapp_consents (id, customer_id, category, status, updated_at, source) "
            "VALUES (:id, :customer, 'order_updates', 'opted_out', :at, 'unsubscribe_link')"
        ),
        [
            {"id": first + i, "customer": c, "at": now - dt.timedelta(hours=hours_ago)}
            for i, (c, hours_ago) in enumerate(rows)
        ],
    )
    time.sleep(0.5)
print(time.time())
engine.dispose()
"""

BOUND = 5.0  # the smallest bound: polls every 2 s
RATE = 15  # messages/s: some 150 rows to send take about 10 s


def _start_loader(url: str, go: Path) -> subprocess.Popen[str]:
    loader = subprocess.Popen(
        [sys.executable, "-c", _LOADER, url, str(go)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    while not go.with_suffix(".ready").exists():
        assert loader.poll() is None, loader.communicate()[1][-2000:]
        assert time.monotonic() < deadline, "the loader did not start"
        time.sleep(0.02)
    return loader


def _wait_for_sends(state: sa.Engine, count: int) -> list[sa.Row]:
    """Once `count` rows are sent: the day's rows still pending, last to be claimed first."""
    deadline = time.monotonic() + 60
    ledger = send_ledger.c
    while True:
        with state.connect() as conn:
            sent = conn.execute(
                sa.select(sa.func.count()).where(ledger.status == "sent")
            ).scalar_one()
            if sent >= count:
                return conn.execute(
                    sa.select(ledger.customer_id, ledger.recipient)
                    .where(ledger.status == "pending")
                    .order_by(ledger.delivery_key.desc())
                ).all()
        assert time.monotonic() < deadline, "the run did not start sending"
        time.sleep(0.05)


@pytest.fixture
def duck_day(stores: Warehouse, demo_copies: DemoCopies) -> Warehouse:
    """300 demo customers in a DuckDB warehouse whose consent table was loaded a moment ago: the
    poll's watermark is now, so only its lookback reads a row dated an hour ago."""
    duck = demo_copies.seed(stores, customers=300)
    with duck.engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO whatsapp_consents (id, customer_id, category, status, updated_at, "
                "source) VALUES (0, 'not-a-customer', 'order_updates', 'opted_in', :now, 'web')"
            ),
            {"now": dt.datetime.now(dt.UTC)},
        )
    duck.engine.dispose()
    return duck


@pytest.mark.parametrize("stores", DUCKDB_STORES, indirect=True)
def test_an_opt_out_loaded_into_duckdb_during_a_send_stops_every_call_after_the_bound(
    duck_day: Warehouse, sandbox, tmp_path: Path
) -> None:
    config = bulk_config(bulk_campaign("bulk", max_send_rate=RATE))
    resources = resources_for(duck_day, sandbox)
    resources["warehouse"] = WarehouseResource(url=duck_day.url, consent_bound_seconds=BOUND)
    # The step publishes to the DuckDB file during the send too: the loader may wait for it.
    run_config = deliveries_run_config("bulk", concurrency=4, batch_size=10, publish_seconds=3.0)
    go = tmp_path / "opt_outs.json"
    loader = _start_loader(duck_day.url, go)
    done: list[bool] = []
    runner = threading.Thread(
        target=lambda: done.append(
            materialize_campaign(config, "bulk", resources, run_config=run_config).success
        )
    )
    runner.start()
    try:
        pending = _wait_for_sends(duck_day.state, 15)
        # Rows to be claimed late (not the last ones: the send goes on after them), half opted
        # out now, half with an updated_at an hour in the past.
        targets = pending[20:60]
        hours_ago = {row.customer_id: (0 if i % 2 else 1) for i, row in enumerate(targets)}
        written = go.with_suffix(".tmp")
        written.write_text(json.dumps(list(hours_ago.items())))
        written.rename(go)  # at once: the loader never reads half of it
        out, err = loader.communicate(timeout=120)
        assert loader.returncode == 0, err[-2000:]
        committed = float(out.split()[-1])
    finally:
        if loader.poll() is None:
            loader.kill()
            loader.wait()
        runner.join()
    assert done == [True]

    received = {
        f"+{m['recipient_id']}": dt.datetime.fromisoformat(m["received_at"]).timestamp()
        for m in sandbox.messages()
    }
    # The send went on well past the bound: the calls it stopped are not the end of a short run.
    assert max(received.values()) > committed + BOUND + 1
    late = {r.recipient for r in targets if received.get(r.recipient, 0) > committed + BOUND}
    assert not late, f"{len(late)} opted-out customers called later than the bound"
    outcomes = {r.recipient: r for r in ledger_rows(duck_day.state, "bulk", DAY)}
    for hours in (0, 1):
        stopped = [
            r
            for r in targets
            if hours_ago[r.customer_id] == hours
            and outcomes[r.recipient].reason == "consent_withdrawn_before_send"
        ]
        assert len(stopped) >= 10, f"opt-outs dated {hours} h ago stopped {len(stopped)} calls"
    assert_no_duplicate_messages(sandbox.messages())
