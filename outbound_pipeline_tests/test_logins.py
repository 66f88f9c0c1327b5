"""Logins shared by every run: the state store's login slots (both backends, threads racing), the
renewal bounded by the token's lifetime, and transient failures of logins and reads retried without
a global halt; against the sandbox over a real socket, with iAdvize's login policy on.

The backfill of 12 partitions as 12 `dagster` processes is in test_backfill_logins.py.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import threading
import time
from collections import Counter

import httpx
import pytest
import sqlalchemy as sa

from outbound_pipeline.iadvize import (
    IAdvizeError,
    IAdvizeResource,
    LoginUnavailable,
    MemoryLoginSlots,
    renew_margin,
    user_key,
)
from outbound_pipeline.ledger import StoreLoginSlots, halts, logins_taken, take_login_slot
from outbound_pipeline.sandbox import SandboxServer, most_in_window
from outbound_pipeline_tests.bulk import (
    assert_no_duplicate_messages,
    assert_one_outcome_per_audience_row,
    bulk_campaign,
    bulk_config,
    statuses,
)
from outbound_pipeline_tests.conftest import (
    DAY,
    deliveries_run_config,
    materialize_campaign,
    resources_for,
)
from outbound_pipeline_tests.stores import Warehouse

KEY = "logins"
ALL_CALLS = ["mutation", "read", "login", "token_check"]

# --- login slots: the budget of one user, shared through the state store ------------------------


def test_renewal_margin_is_bounded_by_the_token_lifetime() -> None:
    assert renew_margin(86400) == 300
    assert renew_margin(10) == 2
    assert renew_margin(3) == pytest.approx(0.6)
    assert renew_margin(0) == 0


def test_a_spent_budget_says_when_the_next_slot_frees(warehouse: Warehouse) -> None:
    start = dt.datetime(2026, 11, 24, 8, tzinfo=dt.UTC)
    at = lambda seconds: start + dt.timedelta(seconds=seconds)  # noqa: E731
    with warehouse.state.begin() as conn:
        assert [take_login_slot(conn, "u1", at(s), budget=3) for s in (0, 10, 20)] == [None] * 3
        # The fourth login of the minute waits for the first slot to age out.
        assert take_login_slot(conn, "u1", at(30), budget=3) == pytest.approx(30)
        # Another user has a budget of its own.
        assert take_login_slot(conn, "u2", at(30), budget=3) is None
        assert take_login_slot(conn, "u1", at(60), budget=3) is None
        assert take_login_slot(conn, "u1", at(61), budget=3) == pytest.approx(9)
        assert len(logins_taken(conn, "u1")) == 4


def test_threads_racing_for_slots_never_exceed_the_budget(warehouse: Warehouse) -> None:
    slots = StoreLoginSlots(warehouse.state, budget=5)
    results: list[float | None] = []
    barrier = threading.Barrier(12)

    def take() -> None:
        barrier.wait()
        results.append(slots.try_take("racing-user"))

    threads = [threading.Thread(target=take) for _ in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results.count(None) == 5
    assert all(wait is not None and 55 < wait <= 60 for wait in results if wait is not None)
    with warehouse.state.connect() as conn:
        assert len(logins_taken(conn, "racing-user")) == 5


def test_a_process_without_a_store_keeps_a_budget_of_its_own() -> None:
    slots = MemoryLoginSlots(budget=3)
    assert [slots.try_take("u") for _ in range(3)] == [None] * 3
    wait = slots.try_take("u")
    assert wait is not None and 59 < wait <= 60
    assert slots.try_take("someone else") is None


def test_the_user_key_never_holds_the_username() -> None:
    key = user_key("https://api.iadvize.com/oauth2/token", "brand-admin@example.com")
    assert len(key) == 64 and "brand-admin" not in key
    assert key != user_key("https://api.iadvize.com/oauth2/token", "other@example.com")


def test_logins_past_the_budget_wait_for_a_slot_then_fail_at_the_bound(
    warehouse: Warehouse, sandbox: SandboxServer
) -> None:
    # Every slot of the minute is taken (by other runs): a run that needs a token waits for the
    # next one, and fails with a clear error once its bound is reached, without a login.
    iadvize = IAdvizeResource(
        mode="sandbox",
        graphql_url=sandbox.graphql_url,
        token_url=sandbox.token_url,
        username="brand-admin",
        password="not-a-real-password",
        login_wait_seconds=1.5,
    )
    slots = StoreLoginSlots(warehouse.state, budget=2)
    for _ in range(2):
        assert slots.try_take(user_key(sandbox.token_url, "brand-admin")) is None

    async def log_in() -> str:
        async with iadvize.client(login_slots=slots) as client:
            return await client.token()

    started = time.monotonic()
    with pytest.raises(LoginUnavailable, match="no login slot free within 1.5 s"):
        asyncio.run(log_in())
    assert time.monotonic() - started < 1.5
    assert sandbox.stats()["logins"] == 0


# --- token lifetime: renewed in time, shared, never a storm --------------------------------------


def _send_day(
    warehouse: Warehouse,
    sandbox: SandboxServer,
    where: str,
    rate: float,
    concurrency: int = 4,
    max_attempts: int = 4,
) -> bool:
    config = bulk_config(bulk_campaign(KEY, where=where, max_send_rate=rate))
    run_config = deliveries_run_config(
        KEY, concurrency=concurrency, batch_size=10, max_attempts=max_attempts
    )
    # The send flow only: the conversations step's read would count among the sandbox's reads.
    result = materialize_campaign(
        config,
        KEY,
        resources_for(warehouse, sandbox),
        run_config=run_config,
        selection=["audience", "messages", "deliveries"],
    )
    return result.success


def _assert_every_row_sent(warehouse: Warehouse, sandbox: SandboxServer) -> None:
    rows = assert_one_outcome_per_audience_row(warehouse.state, KEY, DAY, warehouse.engine)
    counts = statuses(rows)
    assert counts["sent"] == len(sandbox.messages()) > 0
    odd = [(r.status, r.reason, r.error_code, r.attempts) for r in rows if r.status != "sent"]
    assert set(counts) <= {"sent", "skipped"}, (counts, [o for o in odd if o[0] != "skipped"])
    assert_no_duplicate_messages(sandbox.messages())


def _assert_no_halt(warehouse: Warehouse) -> None:
    with warehouse.state.connect() as conn:
        assert conn.execute(sa.select(halts)).all() == []


@pytest.mark.parametrize("warehouse", ["sqlite"], indirect=True)
def test_ten_second_tokens_over_a_thirty_second_send_log_in_once_per_lifetime(
    small: Warehouse, sandbox: SandboxServer
) -> None:
    sandbox.configure(token_ttl_seconds=10)
    started = time.monotonic()
    # About 190 messages at 7 a second: a send of about 27 s.
    assert _send_day(small, sandbox, "1 = 1", rate=7)
    took = time.monotonic() - started
    _assert_every_row_sent(small, sandbox)
    stats = sandbox.stats()
    # Renewed in the background before each end (2 s ahead): never a refused call, one login per
    # lifetime, every worker sharing it.
    assert 2 <= stats["logins"] <= 4, (stats["logins"], took)
    assert stats["unauthenticated"] == 0 and stats["logins_refused"] == 0
    with small.state.connect() as conn:
        assert len(logins_taken(conn)) == stats["logins"]


def test_three_second_tokens_cause_no_login_storm(small: Warehouse, sandbox: SandboxServer) -> None:
    sandbox.configure(token_ttl_seconds=3)
    # About 60 messages at 12 a second, 8 workers: a send of about 5 s, tokens renewed every 2.4 s.
    assert _send_day(small, sandbox, "customer_id < 'C000090'", rate=12, concurrency=8)
    _assert_every_row_sent(small, sandbox)
    stats = sandbox.stats()
    assert 1 <= stats["logins"] <= 4 and stats["logins_refused"] == 0, stats
    assert most_in_window(stats["login_times"]) <= 8


# --- transient failures of every kind of call: retried, no global halt ----------------------------


def test_six_percent_of_every_call_failing_ends_without_a_global_halt(
    small: Warehouse, sandbox: SandboxServer
) -> None:
    # Seed 200 draws a 500 for the first login and for the first introspection, then 6% of the
    # mutations: each is retried (a read or a login any number of ways, a refused message as the
    # API asks) within its bound.
    sandbox.configure(faults={"rate": 0.06, "kinds": ["http_500"], "seed": 200, "calls": ALL_CALLS})
    # Six attempts a row: which call draws a fault depends on the workers' order, and three 500s
    # in a row for one of the hundred rows (2% of runs) would fail it as the API asked.
    assert _send_day(small, sandbox, "customer_id < 'C000150'", rate=1000, max_attempts=6)
    _assert_every_row_sent(small, sandbox)
    _assert_no_halt(small)
    stats = sandbox.stats()
    assert stats["faults"]["http_500"] >= 3
    assert stats["logins"] == 1 and stats["graphql_reads"] == 2  # each tried again once


def test_the_token_check_is_a_read_retried_on_a_server_error(sandbox: SandboxServer) -> None:
    sandbox.configure(faults={"rate": 0.3, "kinds": ["http_500"], "seed": 3, "calls": ALL_CALLS})
    iadvize = IAdvizeResource(
        mode="sandbox",
        graphql_url=sandbox.graphql_url,
        token_url=sandbox.token_url,
        username="brand-admin",
        password="not-a-real-password",
    )

    async def check() -> list[bool]:
        async with iadvize.client() as client:
            return [await client.token_is_valid() for _ in range(4)]

    assert asyncio.run(check()) == [True] * 4
    faults = Counter(sandbox.stats()["faults"])
    assert faults["http_500"] > 0


def test_the_sandbox_enforces_the_login_policy(sandbox: SandboxServer) -> None:
    sandbox.configure(login_limit_per_minute=2, ip_login_limit_per_minute=3)

    def login(username: str) -> httpx.Response:
        form = {"username": username, "password": "pw", "grant_type": "password"}
        return httpx.post(sandbox.token_url, data=form, timeout=10)

    assert [login("a").status_code for _ in range(2)] == [200, 200]
    refused = login("a")
    assert refused.status_code == 429 and 55 <= int(refused.headers["retry-after"]) <= 60
    assert login("b").status_code == 200
    # Three logins from this address in the minute: the per-IP limit refuses any user now.
    assert login("c").status_code == 429
    stats = sandbox.stats()
    assert (stats["logins"], stats["logins_refused"], len(stats["login_times"])) == (3, 2, 3)
    sandbox.reset()
    assert login("a").status_code == 200


def test_the_login_budget_and_wait_come_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from outbound_pipeline.settings import iadvize_from_env

    assert (iadvize_from_env().logins_per_minute, iadvize_from_env().login_wait_seconds) == (8, 600)
    monkeypatch.setenv("IADVIZE_LOGINS_PER_MINUTE", "5")
    monkeypatch.setenv("IADVIZE_LOGIN_WAIT_SECONDS", "90")
    assert (iadvize_from_env().logins_per_minute, iadvize_from_env().login_wait_seconds) == (5, 90)
    monkeypatch.setenv("IADVIZE_LOGINS_PER_MINUTE", "0")
    with pytest.raises(IAdvizeError, match="IADVIZE_LOGINS_PER_MINUTE='0'"):
        iadvize_from_env()
