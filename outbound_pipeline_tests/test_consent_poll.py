"""The last-moment consent check on an analytical warehouse: polled within a bound, not queried per
batch (warehouse.consent_poll), on a real DuckDB file; its settings and how it is chosen."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
import sqlalchemy as sa

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
    consent_source,
    create_engine,
)

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


def test_a_load_time_column_named_by_the_brand_catches_any_late_row(duck: sa.Engine) -> None:
    ticks = Ticks()
    source = _polled(duck, ticks, loaded_at_column="loaded_at")
    source.states(["C0"])
    _write(duck, [("C4", "opted_out", NOW - dt.timedelta(days=30), NOW)])
    ticks.now += 11
    assert _opted_out(source, ["C4"]) == {"C4"}


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
