"""Dispatch marks: no call leaves before its row's mark is committed, so `unknown` is only what may
really have been called, a suppression committed before the mark means no call, and the outcomes a
run knows survive its state store going away (cut through a TCP proxy of this test's own).

The kill of a CLI run mid-send (with faults) is in test_exactly_once.py.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import threading
import time
from collections.abc import Iterator
from typing import Any

import dagster as dg
import pytest
import sqlalchemy as sa

from outbound_pipeline.clock import as_utc, utcnow
from outbound_pipeline.ledger import (
    CampaignPlan,
    expire_dead_claims,
    plan_for,
    read_snapshot,
    reconcile,
    send_runs,
)
from outbound_pipeline.ledger.plan import hold_partition, own_partition
from outbound_pipeline.outcomes import Reason, with_detail
from outbound_pipeline.sandbox import SandboxServer
from outbound_pipeline.sending import SendLoop, SendLoopError, SendSettings
from outbound_pipeline.unsubscribe import SuppressionSource, suppress
from outbound_pipeline.warehouse import create_engine, messages
from outbound_pipeline_tests.bulk import (
    assert_no_duplicate_messages,
    assert_one_outcome_per_audience_row,
    bulk_campaign,
    bulk_config,
    ledger_rows,
    statuses,
)
from outbound_pipeline_tests.conftest import (
    DAY,
    deliveries_run_config,
    materialize_campaign,
    resources_for,
)
from outbound_pipeline_tests.stores import DemoCopies, Warehouse, consent_for
from outbound_pipeline_tests.tcp_proxy import TcpProxy

# About 450 eligible rows of the demo's first 800 customers.
SMALL = "customer_id < 'C000800'"
# This file's own sender: its limiter is not shared with other files' tests.
SENDER = "+33644646071"
CONCURRENCY = 8
_LOG = dg.get_dagster_logger("test_dispatch")


@pytest.fixture
def big(warehouse: Warehouse, demo_copies: DemoCopies) -> Warehouse:
    return demo_copies.seed(warehouse, customers=2500)


def _config() -> Any:
    return bulk_config(bulk_campaign("dispatch", where=SMALL, sender=SENDER))


def _plan(config: Any) -> CampaignPlan:
    """The ledger's plan of the campaign's day."""
    return plan_for(config.campaign("dispatch"), config, DAY)


def _received(sandbox: SandboxServer) -> set[str]:
    return {f"+{m['recipient_id']}" for m in sandbox.messages()}


def _when_received(sandbox: SandboxServer, count: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while len(sandbox.messages()) < count:
        assert time.monotonic() < deadline, "the run never got that far"
        time.sleep(0.02)


def _recipients(warehouse: Warehouse) -> list[str]:
    """The day's message recipients, in the order claims take them (the ledger's key order)."""
    m = messages.c
    with warehouse.engine.connect() as conn:
        return sorted(
            conn.execute(
                sa.select(m.recipient).where(m.campaign_key == "dispatch", m.partition_date == DAY)
            ).scalars()
        )


def test_a_suppression_committed_mid_run_means_no_call_dispatched_after_it(
    big: Warehouse, sandbox: SandboxServer
) -> None:
    config = _config()
    sandbox.configure(latency_ms=30)
    resources = resources_for(big, sandbox)
    assert materialize_campaign(
        config, "dispatch", resources, selection=["audience", "messages"]
    ).success
    recipients = _recipients(big)
    # The last ones in claim order are surely not claimed yet when the run is 40 calls in; the
    # others are taken where the run is at that moment (claimed, maybe marked, maybe called).
    tail = recipients[-15:]
    committed: list[dt.datetime] = []
    at_the_front: list[str] = []

    def unsubscribe_mid_run() -> None:
        _when_received(sandbox, 40)
        sent = _received(sandbox)
        # Sixty: the run goes on while this thread commits (on a loaded machine, dozens of calls).
        at_the_front.extend([r for r in recipients if r not in sent][:60])
        with big.state.begin() as conn:
            for phone in at_the_front + tail:
                suppress(conn, phone, SuppressionSource.LINK, utcnow())
        committed.append(utcnow())

    clicker = threading.Thread(target=unsubscribe_mid_run)
    clicker.start()
    run_config = deliveries_run_config("dispatch", concurrency=CONCURRENCY, batch_size=20)
    result = materialize_campaign(
        config, "dispatch", resources, selection=["deliveries"], run_config=run_config
    )
    clicker.join()
    assert result.success
    rows = {r.recipient: r for r in assert_one_outcome_per_audience_row(big.state, "dispatch", DAY)}
    received = _received(sandbox)
    assert_no_duplicate_messages(sandbox.messages())
    for phone in tail:
        assert phone not in received
        assert (rows[phone].status, rows[phone].reason) == ("skipped", Reason.UNSUBSCRIBED)
    for phone in at_the_front:
        row = rows[phone]
        if phone in received:
            # Called only because its mark was committed before the suppression.
            assert row.status == "sent" and as_utc(row.dispatched_at) <= committed[0], phone
        else:
            assert (row.status, row.reason) == ("skipped", Reason.UNSUBSCRIBED), phone
    assert [p for p in at_the_front if rows[p].reason == Reason.UNSUBSCRIBED]


@pytest.fixture
def proxied(warehouse: Warehouse, demo_copies: DemoCopies) -> Iterator[tuple[Warehouse, TcpProxy]]:
    """The PostgreSQL warehouse, its state store (the same database) reached through a proxy."""
    demo_copies.seed(warehouse, customers=2500)
    with TcpProxy.for_url(warehouse.url) as proxy:
        yield (
            Warehouse(
                warehouse.url,
                warehouse.engine,
                warehouse.kind,
                state_url=proxy.url(warehouse.url),
                state_engine=warehouse.engine,  # the test's own reads go around the proxy
            ),
            proxy,
        )


def _cut_once(
    sandbox: SandboxServer, proxy: TcpProxy, after: int, seconds: float
) -> threading.Thread:
    """Cut the state store once `after` messages were received, restore it `seconds` later (never
    with `seconds` None)."""

    def cut() -> None:
        _when_received(sandbox, after)
        proxy.cut()
        if seconds is not None:
            time.sleep(seconds)
            proxy.restore()

    thread = threading.Thread(target=cut)
    thread.start()
    return thread


@pytest.mark.postgres
@pytest.mark.parametrize("warehouse", ["postgres"], indirect=True)
def test_the_state_store_cut_mid_send_stops_dispatch_and_outcomes_are_written_once_it_is_back(
    proxied: tuple[Warehouse, TcpProxy], sandbox: SandboxServer
) -> None:
    stores, proxy = proxied
    config = _config()
    sandbox.configure(latency_ms=30)
    resources = resources_for(stores, sandbox)
    assert materialize_campaign(
        config, "dispatch", resources, selection=["audience", "messages"]
    ).success
    run_config = deliveries_run_config("dispatch", concurrency=CONCURRENCY, batch_size=20)
    cutter = _cut_once(sandbox, proxy, after=60, seconds=2.0)
    failed = materialize_campaign(
        config,
        "dispatch",
        resources,
        selection=["deliveries"],
        run_config=run_config,
        raise_on_error=False,
    )
    cutter.join()
    assert not failed.success

    # Before any rerun: every call the sandbox received has its outcome, written once the store
    # was back; the rows never called went back for the next run. Nothing left in flight.
    rows = ledger_rows(stores.state, "dispatch", DAY)
    by_status = statuses(rows)
    received = _received(sandbox)
    assert "sending" not in by_status and by_status["unknown"] <= CONCURRENCY, by_status
    assert received and received == {r.recipient for r in rows if r.status == "sent"}
    unavailable = with_detail(Reason.NOT_SENT, Reason.STATE_STORE_UNAVAILABLE)
    assert {r.reason for r in rows if r.status == "deferred"} == {unavailable}, by_status

    rerun = materialize_campaign(
        config, "dispatch", resources, selection=["deliveries"], run_config=run_config
    )
    assert rerun.success
    assert_no_duplicate_messages(sandbox.messages())
    rows = assert_one_outcome_per_audience_row(stores.state, "dispatch", DAY)
    by_status = statuses(rows)
    assert by_status["unknown"] <= CONCURRENCY and not by_status["deferred"], by_status
    assert _received(sandbox) == {r.recipient for r in rows if r.status in ("sent", "unknown")}


@pytest.mark.postgres
@pytest.mark.parametrize("warehouse", ["postgres"], indirect=True)
def test_a_run_that_gives_up_on_the_state_store_leaves_its_outcomes_unknown_never_resent(
    proxied: tuple[Warehouse, TcpProxy], sandbox: SandboxServer
) -> None:
    stores, proxy = proxied
    config = _config()
    sandbox.configure(latency_ms=30)
    resources = resources_for(stores, sandbox)
    assert materialize_campaign(
        config, "dispatch", resources, selection=["audience", "messages"]
    ).success
    # The ledger's rows, as a deliveries step plans them; then the send loop alone, on the proxy.
    plan = _plan(config)
    with read_snapshot(stores.engine, plan) as snapshot, stores.state.begin() as conn:
        reconcile(conn, snapshot, "setup", utcnow())
    settings = SendSettings(concurrency=CONCURRENCY, batch_size=20, write_back_seconds=1.0)
    engine = create_engine(stores.state_url)  # type: ignore[arg-type]
    cutter = _cut_once(sandbox, proxy, after=60, seconds=None)
    try:
        outcome = _run_loop(engine, stores, sandbox, plan, settings)
    finally:
        cutter.join()
        engine.dispose()
        proxy.restore()
    assert isinstance(outcome, SendLoopError), outcome
    assert "state store" in str(outcome)
    called = _received(sandbox)
    left = [r for r in ledger_rows(stores.state, "dispatch", DAY) if r.status == "sending"]
    dispatched = {r.recipient for r in left if r.dispatched_at is not None}
    # Left in flight: the rows it was calling or had called without writing their outcome, one at
    # most per worker, every called one among them marked; the rest never called.
    assert left and len(dispatched) <= CONCURRENCY
    assert {r.recipient for r in left} & called <= dispatched

    # The process that gave up is gone (its heartbeat stale on another host): the next run.
    with stores.state.begin() as conn:
        conn.execute(
            sa.update(send_runs).values(host="gone", heartbeat_at=utcnow() - dt.timedelta(hours=1))
        )
    run_config = deliveries_run_config("dispatch", concurrency=CONCURRENCY, batch_size=20)
    assert materialize_campaign(
        config, "dispatch", resources, selection=["deliveries"], run_config=run_config
    ).success
    assert_no_duplicate_messages(sandbox.messages())
    rows = {
        r.delivery_key: r
        for r in assert_one_outcome_per_audience_row(stores.state, "dispatch", DAY)
    }
    for row in left:
        after = rows[row.delivery_key]
        if row.dispatched_at is not None:
            assert after.status == "unknown", after  # never resent
        else:
            assert after.status == "sent", after  # never called: sent by the next run


def _run_loop(
    engine: sa.Engine,
    stores: Warehouse,
    sandbox: SandboxServer,
    plan: Any,
    settings: SendSettings,
) -> Any:
    resource = resources_for(stores, sandbox)["iadvize"]

    async def main() -> Any:
        async with resource.client(max_connections=settings.concurrency) as client:
            loop = SendLoop(
                engine,
                plan,
                client,
                utcnow,
                "run-gives-up",
                settings,
                _LOG,
                consent=consent_for(stores, plan),
            )
            return await loop.run()

    try:
        return asyncio.run(main())
    except SendLoopError as exc:
        return exc


@pytest.mark.postgres
@pytest.mark.parametrize("warehouse", ["postgres"], indirect=True)
def test_a_reconcile_waits_for_the_runs_writing_their_claims_which_share_the_partition(
    warehouse: Warehouse,
) -> None:
    # Two runs of one day deadlocked: one run's reconcile rewrote rows of the whole day while the
    # other's dispatch marks locked rows of its claims, each in its own order. Writers of claims
    # hold the partition shared (with each other), a reconcile alone.
    plan = _plan(_config())
    with warehouse.engine.connect() as writer, warehouse.engine.connect() as other:
        with writer.begin():
            hold_partition(writer, plan)
            with other.begin():
                other.exec_driver_sql("SET LOCAL lock_timeout = '2s'")
                hold_partition(other, plan)  # another run's marks: not held up
            with other.begin():
                other.exec_driver_sql("SET LOCAL lock_timeout = '200ms'")
                with pytest.raises(sa.exc.OperationalError, match="lock timeout"):
                    own_partition(other, plan)
        with other.begin():  # the marks committed: the reconcile's turn
            other.exec_driver_sql("SET LOCAL lock_timeout = '200ms'")
            own_partition(other, plan)


@pytest.mark.postgres
@pytest.mark.parametrize("warehouse", ["postgres"], indirect=True)
def test_the_expiry_of_dead_claims_waits_for_a_reconcile_before_any_row(
    warehouse: Warehouse,
) -> None:
    # The expiry rewrites dead runs' rows in the transaction of the reconcile that follows it. Had
    # it locked them first, another run's reconcile (which rewrites rows of the whole day) could
    # wait on them while this one waited for the partition: a deadlock.
    plan = _plan(_config())
    with warehouse.engine.begin() as reconciling, warehouse.engine.begin() as other:
        own_partition(reconciling, plan)
        other.exec_driver_sql("SET LOCAL lock_timeout = '200ms'")
        with pytest.raises(sa.exc.OperationalError, match="lock timeout"):
            expire_dead_claims(other, plan, utcnow(), dt.timedelta(seconds=60))
