"""A `dagster` CLI run killed (SIGKILL) or interrupted (SIGINT) mid-send, then run again: no row
sent twice, every row with its outcome, the rest sent by the reruns.
"""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import pytest

from outbound_pipeline_tests.bulk import (
    SMALL,
    assert_no_duplicate_messages,
    assert_one_outcome_per_audience_row,
    bulk_campaign,
    bulk_config,
    ledger_rows,
    recipients,
    sent_count,
    signal_when,
    statuses,
    write_config,
)
from outbound_pipeline_tests.conftest import (
    DAY,
    cli_materialize,
    deliveries_run_config,
    materialize_campaign,
    resources_for,
)

CLI_CONCURRENCY = 4


# The campaign of the CLI runs, written to the configuration file the command reads and given to
# the reruns in this process.
CLI_CAMPAIGN = bulk_campaign("bulk", where=SMALL)


def _cli_run_config() -> dict[str, Any]:
    return deliveries_run_config("bulk", concurrency=CLI_CONCURRENCY, batch_size=10)


def _cli_materialize(big, sandbox, tmp_path: Path) -> tuple[list[str], dict[str, str]]:  # type: ignore[no-untyped-def]
    """The dagster CLI command and environment that materialise the bulk campaign's day."""
    config_path = write_config(tmp_path / "bulk.yaml", CLI_CAMPAIGN)
    return cli_materialize(
        "group:bulk", config_path, big, sandbox, tmp_path / "dagster_home", _cli_run_config()
    )


def _rerun(big, sandbox) -> None:  # type: ignore[no-untyped-def]
    """The same day's run again, in this process: only the run killed or interrupted needs a
    process of its own (a dagster process costs about 6 s of CPU)."""
    resources = resources_for(big, sandbox)
    run_config = _cli_run_config()
    assert materialize_campaign(
        bulk_config(CLI_CAMPAIGN), "bulk", resources, run_config=run_config
    ).success


def _signal_mid_send(
    big, command: list[str], env: dict[str, str], sig: signal.Signals, after_sent: int
) -> int:  # type: ignore[no-untyped-def]
    """Start the CLI run, send `sig` to its whole process group once it is sending; its exit code."""
    return signal_when(command, env, sig, lambda: sent_count(big.engine, "bulk") >= after_sent)


# Faults the API answers before accepting the message (retried, deferred or failed for a rerun):
# only a kill can leave a row's outcome unknown here.
REFUSED_FAULTS = ["http_429", "http_500", "wa_131000", "wa_130429"]


@pytest.mark.cli
def test_cli_run_killed_mid_send_then_rerun_twice(big, sandbox, tmp_path: Path) -> None:
    sandbox.configure(
        latency_ms=25,
        faults={"rate": 0.15, "kinds": REFUSED_FAULTS, "seed": 3, "retry_after_seconds": 0.05},
    )
    command, env = _cli_materialize(big, sandbox, tmp_path)
    _signal_mid_send(big, command, env, signal.SIGKILL, after_sent=40)
    assert sandbox.messages()
    # Left in flight: the rows claimed ahead, and at most one marked dispatched per worker.
    in_flight = [r for r in ledger_rows(big.engine, "bulk", DAY) if r.status == "sending"]
    dispatched = [r for r in in_flight if r.dispatched_at is not None]
    assert len(dispatched) <= CLI_CONCURRENCY < len(in_flight), statuses(in_flight)

    sandbox.configure(faults={"rate": 0})
    for _ in range(2):
        _rerun(big, sandbox)
    messages = sandbox.messages()
    assert_no_duplicate_messages(messages)
    rows = assert_one_outcome_per_audience_row(big.engine, "bulk", DAY)
    received = {f"+{m['recipient_id']}" for m in messages}
    assert {r.recipient for r in rows if r.status == "sent"} <= received
    assert received <= {r.recipient for r in rows if r.status in ("sent", "unknown")}
    # Unknown only when truly unknown: at most the calls in flight, each of them marked.
    unknown = {r.recipient for r in rows if r.status == "unknown"}
    assert len(unknown) <= CLI_CONCURRENCY
    assert unknown <= {r.recipient for r in dispatched}
    # The rows claimed ahead and never dispatched were sent by the rerun, not left unknown. (A call
    # in flight at the kill is truly unknown: its answer, an acceptance or a refusal, was lost.)
    final = {r.recipient: r for r in rows}
    claimed_ahead = {r.recipient for r in in_flight if r.dispatched_at is None}
    assert claimed_ahead and {final[p].status for p in claimed_ahead} == {"sent"}
    assert not [r for r in rows if r.status in ("pending", "sending")]


@pytest.mark.cli
def test_cli_run_interrupted_mid_send_records_every_row_at_once_and_a_rerun_sends_the_rest(
    big, sandbox, tmp_path: Path
) -> None:
    # Ctrl-C in a terminal (SIGINT to the whole process group; Dagster's executor forwards another)
    # or a run terminated from the UI. The rows claimed ahead were left `sending`, then recorded
    # unknown a minute later though never called: never sent without an operator.
    sandbox.configure(latency_ms=100)
    command, env = _cli_materialize(big, sandbox, tmp_path)
    assert _signal_mid_send(big, command, env, signal.SIGINT, after_sent=30) != 0

    rows = ledger_rows(big.engine, "bulk", DAY)
    assert not [r for r in rows if r.status == "sending"], statuses(rows)
    unknown = {r.recipient for r in rows if r.status == "unknown"}
    deferred = {r.recipient for r in rows if r.status == "deferred"}
    # Only calls in flight are unknown (none when the interrupt fell while every worker waited for
    # its dispatch mark or its send slot); the rows claimed ahead are deferred, for the next run.
    assert len(unknown) <= CLI_CONCURRENCY and {
        r.reason for r in rows if r.status == "unknown"
    } <= {"interrupted_outcome_unknown"}
    assert unknown <= {r.recipient for r in rows if r.dispatched_at is not None}
    assert deferred and {r.reason for r in rows if r.status == "deferred"} == {
        "not_sent:interrupted"
    }
    received_before = recipients(sandbox.messages())

    _rerun(big, sandbox)
    messages = sandbox.messages()
    assert_no_duplicate_messages(messages)
    rows = assert_one_outcome_per_audience_row(big.engine, "bulk", DAY)
    assert {r.recipient for r in rows if r.status == "unknown"} == unknown
    assert {r.recipient for r in rows if r.recipient in deferred} and {
        r.status for r in rows if r.recipient in deferred
    } == {"sent"}
    assert recipients(messages) >= received_before
