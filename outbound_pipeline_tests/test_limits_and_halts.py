"""Limits held and halts kept: a messaging limit shared by campaigns and counted across versions
and clock jumps, one relogin when a token expires mid-run, a halt never weakened, a blocked
account stopping everything.
"""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa

from outbound_pipeline.clock import ClockResource
from outbound_pipeline.config import OutboundConfig
from outbound_pipeline.iadvize import login_count
from outbound_pipeline.ledger import active_halt, clear_halt, quota_usage, send_ledger, set_halt
from outbound_pipeline_tests.bulk import (
    SMALL,
    assert_no_duplicate_messages,
    assert_one_outcome_per_audience_row,
    bulk_campaign,
    bulk_config,
    ledger_rows,
    recipients,
    started_in_thread,
    statuses,
    wait_until_sent,
)
from outbound_pipeline_tests.conftest import (
    DAY,
    deliveries_run_config,
    materialize_campaign,
    resources_for,
    send_calls,
)

ACME = {"scope": "portfolio", "portfolio": "acme", "tier": "250"}


def _two_campaigns_sharing_a_limit_of_250(first_where: str, *others: dict) -> OutboundConfig:
    return bulk_config(
        bulk_campaign("first", where=first_where, messaging_limit=ACME),
        bulk_campaign(
            "second",
            where="customer_id >= 'C001000' AND customer_id < 'C002000'",
            messaging_limit=ACME,
        ),
        *others,
    )


def test_messaging_limit_shared_by_two_campaigns_defers_the_rest_until_the_window_moves(
    big, sandbox
) -> None:
    config = _two_campaigns_sharing_a_limit_of_250("customer_id < 'C001000'")
    resources = resources_for(big, sandbox, frozen_at="2026-11-24T08:00:00+00:00")
    for key in ("first", "second"):
        assert materialize_campaign(config, key, resources).success
    rows = ledger_rows(big.engine, "first", DAY) + ledger_rows(big.engine, "second", DAY)
    eligible = [r for r in rows if r.status != "skipped"]
    assert len(eligible) > 250
    # The limit counts unique recipients: a phone shared by customers of both campaigns counts once.
    assert len(recipients(sandbox.messages())) == 250
    assert len({r.recipient for r in rows if r.status == "sent"}) == 250
    deferred = [r for r in rows if r.status == "deferred"]
    assert len(deferred) == len(eligible) - statuses(rows)["sent"]
    assert {r.reason for r in deferred} == {"messaging_limit"}

    # Same day, an hour later: the window has not moved, nothing more goes out.
    resources["clock"] = ClockResource(frozen_at="2026-11-24T09:00:00+00:00")
    for key in ("first", "second"):
        assert materialize_campaign(config, key, resources).success
    assert len(recipients(sandbox.messages())) == 250

    # A day later the first 250 left the window: the deferred rows go out, up to the limit again.
    resources["clock"] = ClockResource(frozen_at="2026-11-25T08:01:00+00:00")
    for key in ("first", "second"):
        assert materialize_campaign(config, key, resources).success
    messages = sandbox.messages()
    assert_no_duplicate_messages(messages)
    assert len(recipients(messages)) == min(len({r.recipient for r in eligible}), 500)


def test_contacts_from_before_the_usage_counts_still_count_against_the_messaging_limit(
    big, sandbox
) -> None:
    # A claim far from the limit trusts the scope's hourly counts instead of counting the ledger. A
    # ledger written before those counts existed (or whose counts are gone) has contacts they lack:
    # the first claim must count them from the ledger, not take the scope for unused.
    config = _two_campaigns_sharing_a_limit_of_250("customer_id < 'C000400'")
    resources = resources_for(big, sandbox, frozen_at="2026-11-24T08:00:00+00:00")
    assert materialize_campaign(config, "first", resources).success
    first = {m["recipient_id"] for m in sandbox.messages()}
    assert 100 < len(first) < 250
    with big.engine.begin() as conn:
        assert conn.execute(sa.delete(quota_usage)).rowcount > 0
    resources["clock"] = ClockResource(frozen_at="2026-11-24T09:00:00+00:00")
    assert materialize_campaign(config, "second", resources).success
    assert len(recipients(sandbox.messages())) == 250
    with big.engine.connect() as conn:
        counted = conn.execute(sa.select(sa.func.sum(quota_usage.c.claims))).scalar_one()
    assert counted >= 250


def test_a_clock_that_ran_ahead_then_came_back_does_not_lift_the_messaging_limit(
    big, sandbox
) -> None:
    # A run with its clock weeks ahead (a skewed host, a clock override) prunes the scope's real
    # hourly counts and counts in a future hour. Back on time, those counts must not be trusted.
    tiny = bulk_campaign(
        "tiny", where="customer_id >= 'C000400' AND customer_id < 'C000420'", messaging_limit=ACME
    )
    config = _two_campaigns_sharing_a_limit_of_250("customer_id < 'C000400'", tiny)
    resources = resources_for(big, sandbox, frozen_at="2026-11-24T08:00:00+00:00")
    assert materialize_campaign(config, "first", resources).success
    resources["clock"] = ClockResource(frozen_at="2027-01-05T08:00:00+00:00")
    assert materialize_campaign(config, "tiny", resources).success
    ahead = len(recipients(sandbox.messages()))
    resources["clock"] = ClockResource(frozen_at="2026-11-24T09:00:00+00:00")
    assert materialize_campaign(config, "second", resources).success
    # Seen from 09:00, every one of those contacts is within the last 24 h: the limit is reached.
    assert ahead >= 250
    assert len(recipients(sandbox.messages())) == ahead, "sent beyond the limit"


def test_contacts_an_older_version_made_without_counting_still_count_against_the_limit(
    big, sandbox
) -> None:
    # A run of a version from before the hourly counts (a rollback, a rolling deploy) contacts
    # recipients after the last counted claim: the counts no longer cover the window.
    config = _two_campaigns_sharing_a_limit_of_250("customer_id < 'C000100'")
    resources = resources_for(big, sandbox, frozen_at="2026-11-24T08:00:00+00:00")
    assert materialize_campaign(config, "first", resources).success
    first = len(recipients(sandbox.messages()))
    # Few counted, so a batch of the second campaign would fit by the counts alone.
    assert 0 < first < 100
    uncounted = 250 - first + 10
    at = dt.datetime(2026, 11, 24, 8, 30, tzinfo=dt.UTC)
    with big.engine.begin() as conn:
        conn.execute(
            sa.insert(send_ledger),
            [
                {
                    "campaign_key": "legacy",
                    "partition_date": DAY,
                    "delivery_key": f"+3361000{n:04d}",
                    "row_key": f"legacy-{n}",
                    "recipient": f"+3361000{n:04d}",
                    "limit_scope": "portfolio:acme",
                    "status": "sent",
                    "reason": "accepted",
                    "attempts": 1,
                    "claimed_at": at,
                    "sent_at": at,
                }
                for n in range(uncounted)
            ],
        )
    resources["clock"] = ClockResource(frozen_at="2026-11-24T09:00:00+00:00")
    assert materialize_campaign(config, "second", resources).success
    assert len(recipients(sandbox.messages())) == first, "the limit was already reached"


def test_a_claim_far_from_the_messaging_limit_does_not_count_the_days_contacts(
    big, sandbox
) -> None:
    # Counting the scope's distinct recipients reads every contact of the last 24 h: done at every
    # claim, a day of N sends costs N^2 / batch row reads. Far from the limit, it is done only once.
    config = bulk_config(
        bulk_campaign("bulk", where=SMALL, messaging_limit={"scope": "sender", "tier": "100K"})
    )
    statements: list[str] = []

    def record(conn, cursor, statement, parameters, context, executemany) -> None:  # type: ignore[no-untyped-def]
        statements.append(statement)

    # On the Engine class: the run opens its own engine on the warehouse.
    sa.event.listen(sa.Engine, "before_cursor_execute", record)
    try:
        run_config = deliveries_run_config("bulk", batch_size=20)
        assert materialize_campaign(
            config, "bulk", resources_for(big, sandbox), run_config=run_config
        ).success
    finally:
        sa.event.remove(sa.Engine, "before_cursor_execute", record)
    sent = statuses(ledger_rows(big.engine, "bulk", DAY))["sent"]
    claims = [s for s in statements if s.startswith("INSERT INTO outbound_quota_scopes")]
    counts = [s for s in statements if "count(DISTINCT outbound_ledger.recipient)" in s]
    assert sent > 200 and len(claims) >= sent / 20
    # The scope's first claim counts its contacts twice: to decide, and to start the hourly counts.
    assert len(counts) <= 2, len(counts)


def test_token_expiring_mid_run_triggers_exactly_one_relogin(big, sandbox) -> None:
    config = bulk_config(bulk_campaign("bulk", where=SMALL))
    sandbox.configure(latency_ms=10)
    resources = resources_for(big, sandbox)
    run_config = deliveries_run_config("bulk", concurrency=16)
    runner, done = started_in_thread(
        lambda: materialize_campaign(config, "bulk", resources, run_config=run_config).success
    )
    wait_until_sent(big.engine, "bulk", 50, poll=0.02)
    logins_before = sandbox.stats()["logins"]
    sandbox.expire_tokens()
    runner.join()
    assert done == [True]
    assert sandbox.stats()["logins"] == logins_before + 1
    rows = assert_one_outcome_per_audience_row(big.engine, "bulk", DAY)
    assert statuses(rows)["sent"] == len(sandbox.messages())
    assert not [r for r in rows if r.status == "failed"]
    assert login_count() >= 2


def test_a_halt_never_weakens_the_one_in_force(seeded) -> None:
    now = dt.datetime(2026, 11, 24, 8, tzinfo=dt.UTC)
    minutes = lambda n: now + dt.timedelta(minutes=n)  # noqa: E731
    with seeded.engine.begin() as conn:
        # A refusal (no end) then a pause: other workers' logins answered 429 meanwhile.
        set_halt(conn, "all", "account_blocked_or_locked (368)", "r1", now, None)
        set_halt(conn, "all", "iadvize_unavailable: login answered HTTP 429", "r1", now, minutes(5))
        assert (
            active_halt(conn, "any", minutes(60))
            == "all: account_blocked_or_locked (368) (until an operator clears it)"
        )
        clear_halt(conn, "all")
        # A longer pause stays; a stronger halt replaces it; so does any halt once it has ended.
        set_halt(conn, "all", "long pause", "r1", now, minutes(30))
        set_halt(conn, "all", "short pause", "r2", now, minutes(5))
        assert (
            active_halt(conn, "any", minutes(10))
            == "all: long pause (until 2026-11-24 08:30:00 UTC)"
        )
        set_halt(conn, "all", "refused", "r3", minutes(1), None)
        assert active_halt(conn, "any", minutes(60)) == "all: refused (until an operator clears it)"
        clear_halt(conn, "all")
        set_halt(conn, "all", "first pause", "r1", now, minutes(5))
        set_halt(conn, "all", "next pause", "r2", minutes(6), minutes(8))
        assert (
            active_halt(conn, "any", minutes(7))
            == "all: next pause (until 2026-11-24 08:08:00 UTC)"
        )


def test_account_blocked_stops_everything_and_fails_loudly(big, sandbox) -> None:
    config = bulk_config(bulk_campaign("bulk", where=SMALL))
    sandbox.configure(faults={"rate": 1.0, "kinds": ["wa_368"], "seed": 1})
    resources = resources_for(big, sandbox)
    result = materialize_campaign(config, "bulk", resources, raise_on_error=False)
    assert not result.success
    rows = ledger_rows(big.engine, "bulk", DAY)
    assert not sandbox.messages()
    assert statuses(rows)["sent"] == 0 and statuses(rows)["deferred"] > 0
    # Until an operator clears it, no run sends, even once the API is healthy again.
    sandbox.configure(faults={"rate": 0})
    calls = send_calls(sandbox)
    assert not materialize_campaign(config, "bulk", resources, raise_on_error=False).success
    assert send_calls(sandbox) == calls
    with big.engine.begin() as conn:
        clear_halt(conn, "all")
    assert materialize_campaign(config, "bulk", resources).success
    rows = assert_one_outcome_per_audience_row(big.engine, "bulk", DAY)
    received = {f"+{m['recipient_id']}" for m in sandbox.messages()}
    assert received and received <= {r.recipient for r in rows if r.status in ("sent", "unknown")}
