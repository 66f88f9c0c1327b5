"""A backfill of daily partitions launched at once, as a backfill launches them: one `dagster asset
materialize --partition ...` process per day, each with its own token, against the sandbox enforcing
a login policy. The state store's login slots space their logins within the users' budget: every
run succeeds, the sandbox never sees more logins in a minute than it allows, no recipient is
messaged twice.

The account here allows 4 logins a minute and the budget is 3 (iAdvize's own policy is 10, the
default budget 8): 5 processes are more than a minute's budget, as 12 are against the defaults, at
less than half the processes' CPU (a dagster process costs about 6 s of it). The last logins wait
for the first ones to age out of the minute. The whole backfill runs on PostgreSQL; on SQLite, the
processes go as far as their login (the part that depends on the store).
"""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
import time
from pathlib import Path

import pytest

from outbound_pipeline.iadvize import user_key
from outbound_pipeline.ledger import logins_taken
from outbound_pipeline.sandbox import SandboxServer, most_in_window
from outbound_pipeline_tests.bulk import (
    DAY_AUDIENCE_SQL,
    assert_no_duplicate_messages,
    assert_one_outcome_per_audience_row,
    assign_days,
    bulk_campaign,
    statuses,
    write_config,
)
from outbound_pipeline_tests.conftest import DAY, cli_materialize, deliveries_run_config
from outbound_pipeline_tests.stores import Warehouse

KEY = "backfill"
PARTITIONS = 5
# The account's login policy in the sandbox, and the budget every process shares below it.
ACCOUNT_LOGINS_PER_MINUTE = 4
BUDGET = 3
CUSTOMERS_PER_DAY = 6
DAYS = [(dt.date.fromisoformat(DAY) - dt.timedelta(days=n)).isoformat() for n in range(PARTITIONS)]


# PostgreSQL, the state store of parallel runs in production. The same budget in a SQLite state
# store is shown by the processes of the next test.
@pytest.mark.cli
@pytest.mark.parametrize(
    "warehouse", [pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True
)
def test_a_backfill_of_more_processes_than_a_minutes_logins_shares_the_budget(
    small: Warehouse, sandbox: SandboxServer, tmp_path: Path
) -> None:
    assign_days(small.engine, DAYS, CUSTOMERS_PER_DAY)
    sandbox.configure(login_limit_per_minute=ACCOUNT_LOGINS_PER_MINUTE)
    campaign = bulk_campaign(KEY, audience_sql=DAY_AUDIENCE_SQL)
    config_path = write_config(tmp_path / "backfill.yaml", campaign)
    run_config = deliveries_run_config(KEY, concurrency=2, batch_size=10)
    started = time.monotonic()
    processes = []
    for day in DAYS:
        command, env = cli_materialize(
            f"group:{KEY}", config_path, small, sandbox, tmp_path / f"home_{day}", run_config, day
        )
        env["IADVIZE_LOGINS_PER_MINUTE"] = str(BUDGET)
        log = (tmp_path / f"run_{day}.log").open("w")
        processes.append((day, subprocess.Popen(command, env=env, stdout=log, stderr=log), log))
    ended = []
    for day, process, log in processes:
        code = process.wait(timeout=600)
        ended.append(time.monotonic() - started)
        log.close()
        assert code == 0, (day, (tmp_path / f"run_{day}.log").read_text()[-3000:])
    took = time.monotonic() - started
    first = time.time() - took

    stats = sandbox.stats()
    # One login per process, spaced by the state store's slots (3 a minute): none refused by the
    # API. A login reaches the API a moment after its slot was taken, so the API may see a fourth
    # within its minute: the login the budget leaves free absorbs that.
    assert stats["logins"] == PARTITIONS and stats["logins_refused"] == 0, stats
    assert most_in_window(stats["login_times"]) <= ACCOUNT_LOGINS_PER_MINUTE
    with small.state.connect() as conn:
        slots = logins_taken(conn, user_key(sandbox.token_url, "sandbox"))
    assert len(slots) == PARTITIONS
    assert most_in_window([t.timestamp() for t in slots]) <= BUDGET
    # The last logins waited for the first ones to age out of the minute.
    assert took > 60

    messages = sandbox.messages()
    assert_no_duplicate_messages(messages)
    sent = 0
    for day in DAYS:
        rows = assert_one_outcome_per_audience_row(small.state, KEY, day, small.engine)
        counts = statuses(rows)
        assert set(counts) <= {"sent", "skipped"} and counts["sent"] > 0, (day, counts)
        sent += counts["sent"]
    assert sent == len(messages)
    logins = sorted(round(t - first, 1) for t in stats["login_times"])
    print(
        f"backfill: {took:.0f} s, {len(messages)} messages, logins at {logins}, runs ended at {sorted(round(e) for e in ended)}"
    )  # noqa: T201, E501


# One process of a backfill, up to its login: the iadvize client of a run, the state store's slots.
_LOGIN = """
import asyncio, os, pathlib, sys, time
from outbound_pipeline.iadvize import IAdvizeResource
from outbound_pipeline.ledger import StoreLoginSlots
from outbound_pipeline.warehouse import create_engine
state_url, graphql_url, token_url, ready, count, budget = sys.argv[1:]
ready = pathlib.Path(ready)
slots = StoreLoginSlots(create_engine(state_url), budget=int(budget))
iadvize = IAdvizeResource(mode="sandbox", graphql_url=graphql_url, token_url=token_url)
(ready / str(os.getpid())).mkdir()
while len(list(ready.iterdir())) < int(count):
    time.sleep(0.01)

async def log_in() -> None:
    async with iadvize.client(login_slots=slots) as client:
        await client.token()

asyncio.run(log_in())
"""


@pytest.mark.cli
@pytest.mark.parametrize("warehouse", ["sqlite"], indirect=True)
def test_processes_share_the_login_budget_through_a_sqlite_state_store(
    warehouse: Warehouse, sandbox: SandboxServer, tmp_path: Path
) -> None:
    # The backfill's processes up to their login, all at once, each with its own token cache: the
    # slots in the SQLite file (BEGIN IMMEDIATE) space them as PostgreSQL's advisory lock does.
    ready = tmp_path / "ready"
    ready.mkdir()
    sandbox.configure(login_limit_per_minute=ACCOUNT_LOGINS_PER_MINUTE)
    args = [warehouse.state_url or warehouse.url, sandbox.graphql_url, sandbox.token_url]
    started = time.monotonic()
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", _LOGIN, *args, str(ready), str(PARTITIONS), str(BUDGET)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for _ in range(PARTITIONS)
    ]
    for process in processes:
        output, _ = process.communicate(timeout=300)
        assert process.returncode == 0, output[-3000:]
    stats = sandbox.stats()
    assert stats["logins"] == PARTITIONS and stats["logins_refused"] == 0, stats
    assert most_in_window(stats["login_times"]) <= ACCOUNT_LOGINS_PER_MINUTE
    with warehouse.state.connect() as conn:
        slots = logins_taken(conn, user_key(sandbox.token_url, "sandbox"))
    assert len(slots) == PARTITIONS and most_in_window([t.timestamp() for t in slots]) <= BUDGET
    assert time.monotonic() - started > 60  # the last two waited for the minute to move on
