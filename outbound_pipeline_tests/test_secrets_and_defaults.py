"""Invariants 6 and 7 of the design: no secret anywhere a run writes, phones masked in what the UI
shows, and a fresh environment that can only reach the sandbox."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from outbound_pipeline.iadvize import LIVE_SETTINGS, IAdvizeError
from outbound_pipeline.settings import IADVIZE_MODE, iadvize_from_env
from outbound_pipeline.warehouse import tables
from outbound_pipeline_tests.conftest import materialize_campaign, resources_for

PASSWORD = "not-a-real-password"  # the sandbox resource's, from conftest


def test_a_run_writes_no_secret_and_shows_no_full_phone(seeded, sandbox, demo_config) -> None:  # type: ignore[no-untyped-def]
    result = materialize_campaign(demo_config, "order_ready", resources_for(seeded, sandbox))
    assert result.success
    issued_tokens = list(sandbox.state.tokens)
    recipients = {f"+{m['recipient_id']}" for m in sandbox.messages()}
    assert issued_tokens and recipients

    # Everything the UI shows of the run: log lines, materialisation and check metadata.
    shown = "\n".join(
        f"{event.message}\n{event.event_specific_data!r}" for event in result.all_events
    )
    with seeded.engine.connect() as conn:
        stored = "\n".join(
            repr(row)
            for table in tables.metadata.sorted_tables
            for row in conn.execute(sa.select(table))
        )

    for secret in (PASSWORD, *issued_tokens):
        assert secret not in shown
        assert secret not in stored
    for phone in recipients:
        assert phone not in shown and phone.lstrip("+") not in shown
    # Analysts read the full numbers in the warehouse: the check above looks at the right values.
    assert all(phone in stored for phone in recipients)


def test_the_default_target_is_the_sandbox(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (IADVIZE_MODE, *LIVE_SETTINGS):
        monkeypatch.delenv(name, raising=False)
    resource = iadvize_from_env()
    assert resource.mode == "sandbox"
    assert resource.graphql_url is None  # the in-process sandbox, nothing on the network


def test_live_mode_without_its_settings_fails_and_names_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in LIVE_SETTINGS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(IADVIZE_MODE, "live")
    monkeypatch.setenv("IADVIZE_GRAPHQL_URL", "https://api.example.invalid/graphql")
    with pytest.raises(IAdvizeError) as info:
        iadvize_from_env()
    message = str(info.value)
    assert (
        "IADVIZE_TOKEN_URL" in message
        and "IADVIZE_USERNAME" in message
        and "IADVIZE_PASSWORD" in message
    )
    assert "IADVIZE_GRAPHQL_URL" not in message
    assert "never falls back" in message


def test_an_unknown_mode_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(IADVIZE_MODE, "production")
    with pytest.raises(IAdvizeError, match="expected 'sandbox'"):
        iadvize_from_env()
