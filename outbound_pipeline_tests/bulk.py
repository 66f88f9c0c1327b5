"""A bulk campaign over the demo's customers: hundreds of eligible rows, for fault and limit tests."""

from __future__ import annotations

import copy
import datetime as dt
import functools
import os
import signal
import subprocess
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import sqlalchemy as sa
import yaml

from outbound_pipeline.clock import as_utc
from outbound_pipeline.config import OutboundConfig, load_config, parse_config
from outbound_pipeline.ledger import send_ledger
from outbound_pipeline.warehouse import audience, deliveries

# About 800 audience rows, some 450 eligible: enough to catch a run in the middle of sending.
SMALL = "customer_id < 'C000800'"
T = TypeVar("T")
# Each day of a backfill its own customers (assign_days), so a recipient messaged twice is a
# duplicate, not the next day's message.
DAY_AUDIENCE_SQL = (
    "SELECT c.customer_id, c.phone, c.country, c.first_name FROM customers c "
    "JOIN backfill_days b ON b.customer_id = c.customer_id "
    "WHERE b.day = :partition_date ORDER BY c.customer_id"
)


def bulk_campaign(key: str, where: str = "1 = 1", **overrides: Any) -> dict[str, Any]:
    campaign: dict[str, Any] = {
        "key": key,
        "campaign_id": str(uuid.uuid5(uuid.NAMESPACE_URL, key)),
        "sender": "+33644646081",
        "template": "order_ready_v1",
        "language": "fr",
        "consent_category": "order_updates",
        "audience_sql": f"SELECT customer_id, phone, country, first_name FROM customers WHERE {where} ORDER BY customer_id",
        "variables": {
            "body": {1: "first_name", 2: {"literal": "CMD-1"}, 3: {"literal": "Lyon Part-Dieu"}}
        },
        "phone_region": "FR",
        "start_date": "2026-01-01",
        "messaging_limit": {"scope": "sender", "tier": "unlimited"},
        "max_send_rate": 1000,
        "min_interval_seconds": 0,
    }
    campaign.update(overrides)
    return campaign


@functools.cache
def _bundled_templates() -> tuple[dict[str, Any], ...]:
    """The bundled configuration's templates, read once per process (every bulk test needs them)."""
    return tuple(t.model_dump(exclude_none=True) for t in load_config().templates)


def bundled_templates() -> list[dict[str, Any]]:
    """A copy of them, for a configuration of the caller's own."""
    return copy.deepcopy(list(_bundled_templates()))


def bulk_config(*campaigns: dict[str, Any]) -> OutboundConfig:
    templates = bundled_templates()
    return parse_config(
        {"templates": templates, "campaigns": list(campaigns)}, "<bulk test config>"
    )


def write_config(path: Path, *campaigns: dict[str, Any]) -> Path:
    templates = bundled_templates()
    path.write_text(
        yaml.safe_dump({"templates": templates, "campaigns": list(campaigns)}, allow_unicode=True)
    )
    return path


def ledger_rows(engine: sa.Engine, key: str, day: str) -> list[sa.Row[Any]]:
    """The day's rows of the ledger (`engine`: the state store)."""
    with engine.connect() as conn:
        return list(
            conn.execute(
                sa.select(send_ledger).where(
                    send_ledger.c.campaign_key == key, send_ledger.c.partition_date == day
                )
            )
        )


def audience_count(engine: sa.Engine, key: str, day: str) -> int:
    with engine.connect() as conn:
        return conn.execute(
            sa.select(sa.func.count()).where(
                audience.c.campaign_key == key, audience.c.partition_date == day
            )
        ).scalar_one()


def statuses(rows: list[sa.Row[Any]]) -> Counter[str]:
    return Counter(r.status for r in rows)


def assert_one_outcome_per_audience_row(
    engine: sa.Engine, key: str, day: str, warehouse: sa.Engine | None = None
) -> list[sa.Row[Any]]:
    """The day's ledger rows (`engine`: the state store), one per audience row of the `warehouse`
    (the same database unless given), each with its outcome and reason."""
    rows = ledger_rows(engine, key, day)
    assert len(rows) == audience_count(warehouse or engine, key, day)
    assert len({r.row_key for r in rows}) == len(rows)
    assert {r.status for r in rows} <= {"sent", "failed", "skipped", "deferred", "unknown"}, (
        statuses(rows)
    )
    assert all(r.reason for r in rows)
    return rows


def assert_no_duplicate_messages(messages: list[dict[str, Any]]) -> None:
    per_recipient = Counter((m["campaign_id"], m["recipient_id"]) for m in messages)
    twice = {k: n for k, n in per_recipient.items() if n > 1}
    assert not twice, f"recipients messaged more than once: {len(twice)}"


def signal_when(
    command: list[str],
    env: dict[str, str],
    sig: signal.Signals,
    ready: Callable[[], bool],
    poll_seconds: float = 0.05,
    timeout: float = 120,
) -> int:
    """Start a CLI run, send `sig` to its whole process group once `ready()`; its exit code."""
    process = subprocess.Popen(
        command,
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + timeout
    while not ready():
        assert process.poll() is None, "the run ended before the signal"
        assert time.monotonic() < deadline
        time.sleep(poll_seconds)
    os.killpg(process.pid, sig)
    return process.wait(timeout=60)


def recipients(messages: list[dict[str, Any]]) -> set[str]:
    """The recipients of the sandbox's messages, as it writes them (digits without "+")."""
    return {m["recipient_id"] for m in messages}


def sent_count(engine: sa.Engine, key: str) -> int:
    """Rows of the campaign sent, or being sent."""
    with engine.connect() as conn:
        return conn.execute(
            sa.select(sa.func.count()).where(
                send_ledger.c.campaign_key == key, send_ledger.c.status.in_(("sent", "sending"))
            )
        ).scalar_one()


def started_in_thread(run: Callable[[], T]) -> tuple[threading.Thread, list[T]]:
    """`run` (a campaign's run; True when it succeeded, say) started in a thread: the thread, and
    the list its result lands in."""
    done: list[T] = []
    runner = threading.Thread(target=lambda: done.append(run()), daemon=True)
    runner.start()
    return runner, done


def wait_until_sent(engine: sa.Engine, key: str, count: int, poll: float = 0.05) -> None:
    """Until `count` rows of the campaign are sent or being sent (a run in another thread)."""
    deadline = time.monotonic() + 60
    while sent_count(engine, key) < count:
        assert time.monotonic() < deadline, "the run did not start sending"
        time.sleep(poll)


def assign_days(engine: sa.Engine, days: list[str], per_day: int) -> None:
    """`per_day` of the demo's customers to each of `days`, in the table DAY_AUDIENCE_SQL reads."""
    table = sa.Table(
        "backfill_days",
        sa.MetaData(),
        sa.Column("customer_id", sa.String(20), primary_key=True),
        sa.Column("day", sa.String(10), nullable=False),
    )
    with engine.begin() as conn:
        table.create(conn)
        ids = conn.execute(
            sa.text("SELECT customer_id FROM customers ORDER BY customer_id LIMIT :n"),
            {"n": len(days) * per_day},
        ).scalars()
        conn.execute(
            sa.insert(table),
            [{"customer_id": c, "day": days[i % len(days)]} for i, c in enumerate(ids)],
        )


def published_columns(
    engine: sa.Engine, table: sa.Table, key: str, day: str
) -> list[dict[str, Any]]:
    """The day's rows of a ledger-shaped table (the ledger or its published copy), timestamps as
    UTC instants, in key order: the published columns (the ledger's own, such as its dispatch
    marks, stay in the state store)."""
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(*(table.c[c.name] for c in deliveries.columns))
            .where(table.c.campaign_key == key, table.c.partition_date == day)
            .order_by(table.c.delivery_key)
        ).mappings()
        return [
            {k: as_utc(v) if isinstance(v, dt.datetime) else v for k, v in row.items()}
            for row in rows
        ]
