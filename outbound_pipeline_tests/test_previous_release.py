"""A database created by the previous release (git commit b0acc55: one database for everything, its
ledger the table outbound_deliveries), with messages already sent: the pipeline refuses it until
`outbound-pipeline db upgrade`, then runs the day without sending anything twice."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from outbound_pipeline import cli
from outbound_pipeline.ledger import (
    LedgerHistoryMissing,
    expire_dead_claims,
    plan_for,
    publish_partition,
    send_ledger,
    state_schema,
)
from outbound_pipeline.outcomes import Reason, Status
from outbound_pipeline.warehouse import (
    audience,
    create_engine,
    current_revision,
    deliveries,
    messages,
    upgrade_schema,
    warehouse_schema,
)
from outbound_pipeline_tests.bulk import (
    assert_no_duplicate_messages,
    assert_one_outcome_per_audience_row,
)
from outbound_pipeline_tests.conftest import DAY, materialize_campaign, resources_for
from outbound_pipeline_tests.stores import Warehouse

KEY = "order_ready"
DATA = Path(__file__).parent / "data"
SENT_AT = dt.datetime(2026, 11, 24, 9, 30, tzinfo=dt.UTC)


def previous_release_ddl(dialect: str) -> list[str]:
    """The statements that made the previous release's tables (captured from its metadata)."""
    text = (DATA / f"previous_release_{dialect}.sql").read_text()
    lines = [line for line in text.splitlines() if not line.startswith("--")]
    return [s.strip() for s in "\n".join(lines).split(";\n") if s.strip().rstrip(";")]


def day_rows(engine: sa.Engine, table: sa.Table) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        query = sa.select(table).where(table.c.campaign_key == KEY, table.c.partition_date == DAY)
        return [dict(row) for row in conn.execute(query).mappings()]


def as_previous_release(store: Warehouse, history: list[dict[str, Any]]) -> None:
    """Make the database what the previous release left: its tables only, the day's audience and
    messages, and its ledger (outbound_deliveries) holding `history`."""
    kept = {table: day_rows(store.engine, table) for table in (audience, messages)}
    owned = [*state_schema.metadata.tables, *warehouse_schema.metadata.tables]
    with store.engine.begin() as conn:
        for name in [*owned, state_schema.version_table, warehouse_schema.version_table]:
            conn.exec_driver_sql(f"DROP TABLE IF EXISTS {name}")
        for statement in previous_release_ddl(conn.dialect.name):
            conn.exec_driver_sql(statement)
        for table, rows in kept.items():
            # Today's rows, cut to the columns the previous release's table had.
            old_columns = {c["name"] for c in sa.inspect(conn).get_columns(table.name)}
            conn.execute(
                sa.insert(table), [{k: v for k, v in r.items() if k in old_columns} for r in rows]
            )
        conn.execute(sa.insert(deliveries), history)


def sent_before(rendered: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The previous release's ledger rows of half the day's messages: accepted by iAdvize."""
    return [
        {
            **{k: m[k] for k in ("campaign_key", "partition_date", "row_key", "customer_id")},
            **{k: m[k] for k in ("recipient", "template_name", "language", "category")},
            "delivery_key": m["recipient"],
            "status": Status.SENT,
            "reason": Reason.ACCEPTED,
            "message_id": f"previous-release-{i}",
            "attempts": 1,
            "claimed_at": SENT_AT,
            "sent_at": SENT_AT,
            "run_id": "previous-release-run",
            "updated_at": SENT_AT,
        }
        for i, m in enumerate(rendered[::2])
    ]


@pytest.mark.parametrize(
    "warehouse", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True
)
def test_a_database_of_the_previous_release_is_upgraded_and_nothing_is_resent(
    small: Warehouse, sandbox, demo_config, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    resources = resources_for(small, sandbox)
    assert materialize_campaign(
        demo_config, KEY, resources, selection=["audience", "messages"]
    ).success
    rendered = [m for m in day_rows(small.engine, messages) if m["rendered"]]
    history = sent_before(rendered)
    assert len(rendered) > len(history) > 5
    as_previous_release(small, history)

    # Before the upgrade, nothing runs: the error names the command.
    refused = materialize_campaign(demo_config, KEY, resources, raise_on_error=False)
    assert not refused.success and sandbox.messages() == []
    failure = str(refused.all_events)
    assert "outbound-pipeline db upgrade" in failure

    monkeypatch.setenv("OUTBOUND_WAREHOUSE_URL", small.url)
    monkeypatch.delenv("OUTBOUND_STATE_URL", raising=False)
    assert cli.main(["db", "upgrade"]) == 0
    shown = capsys.readouterr().out
    assert f"state: s0001 -> {state_schema.head}" in shown
    assert f"warehouse: w0001 -> {warehouse_schema.head}" in shown

    assert materialize_campaign(demo_config, KEY, resources).success
    called = {"+" + m["recipient_id"].lstrip("+") for m in sandbox.messages()}
    before = {row["recipient"] for row in history}
    assert called and not called & before  # nobody sent to before is sent to again
    assert called == {m["recipient"] for m in rendered} - before
    assert_no_duplicate_messages(sandbox.messages())
    rows = {r.delivery_key: r for r in assert_one_outcome_per_audience_row(small.state, KEY, DAY)}
    for old in history:  # the history is intact
        row = rows[old["delivery_key"]]
        assert (row.status, row.message_id, row.attempts) == (Status.SENT, old["message_id"], 1)
    # The analysts' copy is the ledger again.
    assert sorted(r["delivery_key"] for r in day_rows(small.engine, deliveries)) == sorted(rows)
    assert len(day_rows(small.state, send_ledger)) == len(rows)


def _previous_release_beside_a_new_state_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[sa.Engine, sa.Engine, list[dict[str, Any]]]:
    """The previous release's SQLite database as the warehouse (its ledger holding a history of 3
    sent rows) and a new, empty state store, both named in the environment as the CLI reads them:
    (warehouse, state store, history)."""
    old, state = (create_engine(f"sqlite:///{tmp_path / name}.sqlite") for name in ("old", "state"))
    rendered = [
        {"campaign_key": KEY, "partition_date": DAY, "row_key": f"row-{i}", "customer_id": str(i)}
        | {"recipient": f"+3361234{i:04d}", "template_name": "t", "language": "fr"}
        | {"category": "UTILITY"}
        for i in range(6)
    ]
    history = sent_before(rendered)
    # And one row a run had claimed and was calling when the copy was taken: its call may have
    # left, so it must never go back to the queue.
    in_flight = {**history[-1], **{k: rendered[1][k] for k in ("row_key", "customer_id")}}
    in_flight.update(delivery_key=rendered[1]["recipient"], recipient=rendered[1]["recipient"])
    in_flight.update(status=Status.SENDING, reason=None, message_id=None, sent_at=None)
    history = [{**h, "claim_token": None} for h in history]
    history.append({**in_flight, "claim_token": "dead-run-token"})
    with old.begin() as conn:
        for statement in previous_release_ddl("sqlite"):
            conn.exec_driver_sql(statement)
        conn.execute(sa.insert(deliveries), history)
    monkeypatch.setenv("OUTBOUND_WAREHOUSE_URL", str(old.url))
    monkeypatch.setenv("OUTBOUND_STATE_URL", str(state.url))
    return old, state, history


def test_a_state_store_of_its_own_gets_the_previous_release_history(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys, demo_config
) -> None:
    """The previous release's database kept as the warehouse, the state moved to a new database:
    the upgrade copies the history across, once."""
    old, state, history = _previous_release_beside_a_new_state_store(tmp_path, monkeypatch)
    assert cli.main(["db", "upgrade"]) == 0
    assert f"ledger history carried over: {len(history)} rows" in capsys.readouterr().out
    ledger = day_rows(state, send_ledger)
    assert sorted((r["delivery_key"], r["message_id"], r["status"]) for r in ledger) == sorted(
        (h["delivery_key"], h["message_id"], h["status"]) for h in history
    )
    # The row in flight carries its dispatch mark: its dead run's claim becomes unknown.
    plan = plan_for(demo_config.campaign(KEY), demo_config, DAY)
    with state.begin() as conn:
        expired = expire_dead_claims(conn, plan, SENT_AT + dt.timedelta(days=1), dt.timedelta(0))
    assert (expired.unknown, expired.requeued) == (1, 0)
    assert cli.main(["db", "upgrade"]) == 0  # again: nothing more to do
    assert "carried" not in capsys.readouterr().out
    assert len(day_rows(state, send_ledger)) == len(history)
    assert cli.main(["db", "current"]) == 0
    assert f"state: {state_schema.head} (up to date)" in capsys.readouterr().out
    old.dispose()
    state.dispose()


def test_an_upgrade_stopped_before_the_history_was_copied_copies_it_when_run_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    """The warehouse's migrations committed, then the copy into the new state store failed: the
    next `db upgrade` finds the warehouse at head and must still copy the history, or the next
    send would message everyone again."""
    old, state, history = _previous_release_beside_a_new_state_store(tmp_path, monkeypatch)
    assert cli.main(["db", "current"]) == 0  # creates nothing
    # The state store made at head, and a fault in it: every insert into the ledger fails.
    upgrade_schema(state, state_schema)
    with state.begin() as conn:
        conn.exec_driver_sql(
            "CREATE TRIGGER fault BEFORE INSERT ON outbound_ledger "
            "BEGIN SELECT RAISE(ABORT, 'disk I/O error'); END"
        )
    capsys.readouterr()
    assert cli.main(["db", "upgrade"]) == 1
    stopped = capsys.readouterr().err
    assert "db upgrade stopped" in stopped and "disk I/O error" in stopped
    assert "run `outbound-pipeline db upgrade` again" in stopped
    with old.connect() as conn:
        assert current_revision(conn, warehouse_schema) == warehouse_schema.head
    assert day_rows(state, send_ledger) == []

    with state.begin() as conn:
        conn.exec_driver_sql("DROP TRIGGER fault")
    capsys.readouterr()
    assert cli.main(["db", "upgrade"]) == 0
    assert f"ledger history carried over: {len(history)} rows" in capsys.readouterr().out
    assert sorted((r["delivery_key"], r["status"]) for r in day_rows(state, send_ledger)) == sorted(
        (h["delivery_key"], h["status"]) for h in history
    )
    old.dispose()
    state.dispose()


@pytest.mark.parametrize("warehouse", ["sqlite"], indirect=True)
def test_a_state_store_without_the_published_history_sends_nothing_until_it_is_carried_over(
    small: Warehouse, sandbox, demo_config, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    """OUTBOUND_STATE_URL pointed at a new, empty state store after a day was sent: the warehouse's
    published copy shows the day sent, the new ledger knows nothing of it. Planning stops instead
    of sending every message again; `db upgrade` carries the published rows over."""
    assert materialize_campaign(demo_config, KEY, resources_for(small, sandbox)).success
    sent = len(sandbox.messages())
    published = day_rows(small.engine, deliveries)
    assert sent and published
    new_state_url = f"sqlite:///{tmp_path / 'new_state.sqlite'}"
    moved = Warehouse(
        small.url, small.engine, small.kind, new_state_url, create_engine(new_state_url)
    )

    refused = materialize_campaign(
        demo_config, KEY, resources_for(moved, sandbox), raise_on_error=False
    )
    assert not refused.success and len(sandbox.messages()) == sent
    failure = str(refused.all_events)
    worked = [r for r in published if r["status"] != Status.SKIPPED]
    assert f"shows {len(worked)} rows of this day claimed or sent" in failure
    assert "OUTBOUND_STATE_URL" in failure and "outbound-pipeline db upgrade" in failure
    assert day_rows(moved.state, send_ledger) == []
    # Its published copy is kept: the one trace left of what was sent. Publication itself refuses
    # to replace it by a ledger without the day, whatever stopped the run before.
    assert day_rows(small.engine, deliveries) == published
    with pytest.raises(LedgerHistoryMissing):
        publish_partition(moved.state, small.engine, KEY, DAY)
    assert day_rows(small.engine, deliveries) == published

    monkeypatch.setenv("OUTBOUND_WAREHOUSE_URL", small.url)
    monkeypatch.setenv("OUTBOUND_STATE_URL", new_state_url)
    assert cli.main(["db", "upgrade"]) == 0
    assert f"ledger history carried over: {len(published)} rows" in capsys.readouterr().out
    assert materialize_campaign(demo_config, KEY, resources_for(moved, sandbox)).success
    assert len(sandbox.messages()) == sent  # nobody messaged twice
    assert_no_duplicate_messages(sandbox.messages())
    moved.state.dispose()
