"""A stop (error 368: the account is blocked) also holds the send loop's workers that were waiting:
one asleep in a retry's backoff, one waiting for the limiter. Neither calls after the stop, and
every unsent row is deferred with the stop's reason.

The waits themselves: test_send_loop_waits.py.
"""

from __future__ import annotations

from typing import Any

import httpx
import sqlalchemy as sa

from outbound_pipeline.iadvize import SendResult, classify_code, classify_http
from outbound_pipeline.ledger import halts
from outbound_pipeline.sandbox import SandboxServer
from outbound_pipeline.sending import SendSettings, SendSummary
from outbound_pipeline_tests.send_loop_harness import (
    Scripted,
    Step,
    answer,
    prepared_day,
    rows_by_key,
    run_loop,
)
from outbound_pipeline_tests.stores import Warehouse


def _after_a_stop(
    warehouse: Warehouse, sandbox: SandboxServer, script: Scripted, outcome: Any
) -> dict[str, sa.Row[Any]]:
    assert isinstance(outcome, SendSummary) and outcome.stop_all, outcome
    assert sandbox.messages() == [], "a call went out after the account was blocked"
    with warehouse.engine.connect() as conn:
        assert conn.execute(sa.select(halts.c.scope)).scalars().all() == ["all"]
    rows = rows_by_key(warehouse)
    assert not [r for r in rows.values() if r.status in ("sending", "sent", "unknown")]
    return rows


def test_a_stop_holds_a_worker_asleep_in_a_retry(small: Warehouse, sandbox: SandboxServer) -> None:
    _, plan = prepared_day(small, sandbox, "customer_id <= 'C000040'")
    steps: list[Step] = [
        # The first row: a 500 with Retry-After 0.5 s; its worker sleeps. (Shorter than the wait
        # after which consent is checked again: the stop alone must hold the call.)
        answer(SendResult(classify_http(500, httpx.Headers({"retry-after": "0.5"})))),  # type: ignore[arg-type]
        # Meanwhile the second row's call says the account is blocked.
        answer(SendResult(classify_code("368")), after=0.2),  # type: ignore[arg-type]
    ]
    settings = SendSettings(concurrency=2, batch_size=10, rate_per_second=None)
    outcome, script = run_loop(small, sandbox, plan, steps, settings)

    rows = _after_a_stop(small, sandbox, script, outcome)
    assert len(script.calls) == 2, "the sleeping worker called after the stop"
    first, second = (rows[r] for r in script.calls)
    # The sleeper's row gets what every unsent row gets on a stop, with its one call counted.
    assert (first.status, first.reason, first.attempts) == (
        "deferred",
        "not_sent:account_blocked_or_locked (368)",
        1,
    )
    assert (second.status, second.reason) == ("deferred", "stopped:account_blocked_or_locked")


def test_a_stop_holds_a_worker_waiting_for_the_limiter(
    small: Warehouse, sandbox: SandboxServer
) -> None:
    _, plan = prepared_day(small, sandbox, "customer_id <= 'C000040'")
    # Two calls per second: the second worker waits half a second for its slot (under the wait
    # after which consent is checked again: the stop alone must hold the call).
    settings = SendSettings(concurrency=2, batch_size=10, rate_per_second=2.0)
    steps: list[Step] = [answer(SendResult(classify_code("368")), after=0.1)]  # type: ignore[arg-type]
    outcome, script = run_loop(small, sandbox, plan, steps, settings)

    rows = _after_a_stop(small, sandbox, script, outcome)
    assert len(script.calls) == 1, "the worker waiting for the limiter called after the stop"
    reasons = {r.reason for r in rows.values() if r.status == "deferred"}
    assert reasons == {
        "stopped:account_blocked_or_locked",
        "not_sent:account_blocked_or_locked (368)",
    }
