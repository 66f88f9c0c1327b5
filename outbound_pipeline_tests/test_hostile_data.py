"""Hostile data through the whole pipeline, on SQLite and PostgreSQL, with the sandbox over a socket.

A brand's tables are built here with a few thousand rows mixing quotes, SQL fragments, emoji,
right-to-left text, combining characters, 10,000-character strings, NULLs, whitespace-only strings,
duplicated customer IDs, shared phones, phones with letters, opt-outs and missing consents. Each row
is generated with the outcome it must get, written down from the rules (not computed by pipeline
code): sent with exactly these parameters, or skipped with exactly this reason. Then:

- the run completes;
- the sandbox receives exactly the expected messages, each rendered exactly, each recipient once;
- every row the audience query returned has one ledger outcome with that reason;
- the day's figures add up.

The rows: hostile_rows.py (the generator) and hostile_values.py (the values and tables).
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import yaml

from outbound_pipeline.audience import AudienceQueryError, audience_sql, extract
from outbound_pipeline.config import OutboundConfig, load_config
from outbound_pipeline.demo import customers_table
from outbound_pipeline.iadvize import forget_tokens
from outbound_pipeline.ledger import send_ledger
from outbound_pipeline.sandbox import SandboxServer
from outbound_pipeline.warehouse import audience, daily_stats, deliveries
from outbound_pipeline.whatsapp import mask
from outbound_pipeline_tests.conftest import DAY, materialize_campaign, resources_for
from outbound_pipeline_tests.hostile_rows import Generator
from outbound_pipeline_tests.hostile_values import (
    AUDIENCE_SQL,
    BODY,
    CATEGORY,
    HEADER,
    KEY,
    ORDERS,
    brand,
    consents,
    customers,
    orders,
)
from outbound_pipeline_tests.stores import Warehouse, seeded_postgres_warehouse


@pytest.fixture(scope="module")
def generated() -> Generator:
    generator = Generator(seed=20261124)
    generator.generate()
    return generator


def _write_config(tmp_path: Path, policy: str) -> OutboundConfig:
    raw = {
        "templates": [
            {
                "name": "hostile_offer_v1",
                "language": "fr",
                "category": "MARKETING",
                "header": HEADER,
                "body": BODY,
            }
        ],
        "campaigns": [
            {
                "key": KEY,
                "campaign_id": "7a1c2e4b-0d3f-4a5e-8b6c-9d0e1f2a3b4c",
                # Its own sender: the process paces a sender at the lowest rate any campaign gave it,
                # and the demo campaigns of other tests give theirs 80 messages/s.
                "sender": "+33644646099",
                "template": "hostile_offer_v1",
                "language": "fr",
                "consent_category": CATEGORY,
                "audience_sql": AUDIENCE_SQL,
                "variables": {
                    "header": {1: "first_name"},
                    "body": {
                        1: "first_name",
                        2: "code",
                        3: "store",
                        4: {"column": "amount", "format": "currency", "currency": "EUR"},
                    },
                },
                "phone_region": "FR",
                "country_column": "country",
                "parameter_policy": policy,
                "start_date": "2026-01-01",
                "messaging_limit": {"tier": "unlimited"},
                "max_send_rate": 1000,
                "min_interval_seconds": 0,
            }
        ],
    }
    path = tmp_path / "hostile.yaml"
    path.write_text(yaml.safe_dump(raw, allow_unicode=True), encoding="utf-8")
    return load_config(path)


@pytest.fixture
def hostile_sandbox(tmp_path: Path) -> Iterator[tuple[OutboundConfig, SandboxServer]]:
    config = _write_config(tmp_path, "skip")
    forget_tokens()
    with SandboxServer(config.templates) as server:
        yield config, server
    forget_tokens()


def _load_brand_tables(engine: sa.Engine, generator: Generator) -> None:
    brand.create_all(engine)
    with engine.begin() as conn:
        conn.execute(sa.insert(customers), generator.customers)
        conn.execute(sa.insert(consents), generator.consents)
        conn.execute(sa.insert(orders), generator.orders)


def _expected_text(header: list[str], body: list[str]) -> str:
    # Written out with str.replace, independently of the pipeline's renderer; values hold no '{{'
    # that a later replacement could hit, except on purpose ('{{1}}', '{{2}}'), so substitute from a
    # split of the template instead.
    def fill(template: str, values: list[str]) -> str:
        out = template
        for i in range(len(values), 0, -1):
            out = out.replace(f"{{{{{i}}}}}", f"\x00{i}\x00")
        parts = out.split("\x00")
        return "".join(values[int(p) - 1] if k % 2 else p for k, p in enumerate(parts))

    return fill(HEADER, header) + "\n" + fill(BODY, body)


@pytest.mark.parametrize("policy", ["skip", "clean"])
def test_hostile_rows_are_sent_exactly_or_skipped_with_a_reason(
    warehouse: Warehouse,
    generated: Generator,
    hostile_sandbox: tuple[OutboundConfig, SandboxServer],
    tmp_path: Path,
    policy: str,
) -> None:
    if warehouse.kind == "postgres" and policy == "clean":
        pytest.skip(
            "policy 'clean' only changes rendering, which is the same Python on both backends"
        )
    config = _write_config(tmp_path, policy)
    _, sandbox = hostile_sandbox
    _load_brand_tables(warehouse.engine, generated)
    rows = generated.rows
    kinds = Counter((r.outcome(policy) or "sent").split(":")[0] for r in rows)
    # The mix is what the test claims: every kind of row is there, in numbers.
    assert len(rows) > ORDERS and kinds["sent"] > 800
    for reason in (
        "parameter_rule",
        "empty_value",
        "unformattable_value",
        "opted_out",
        "no_consent",
        "phone_has_letters",
        "phone_invalid",
        "phone_missing",
        "phone_too_long",
        "marketing_not_delivered_to_us",
        "customer_id_missing",
        "customer_id_too_long",
        "duplicate_recipient",
        "duplicate_customer",
    ):
        assert kinds[reason] >= (5 if policy == "skip" or reason != "parameter_rule" else 0), reason

    result = materialize_campaign(config, KEY, resources_for(warehouse, sandbox))
    assert result.success

    # Every row the audience query returned has one outcome, with the reason the rules give.
    with warehouse.engine.connect() as conn:
        ledger = conn.execute(
            sa.select(
                audience.c.row_number,
                deliveries.c.status,
                deliveries.c.reason,
                deliveries.c.recipient,
                deliveries.c.message_text,
            )
            .select_from(
                audience.outerjoin(
                    deliveries,
                    sa.and_(
                        deliveries.c.campaign_key == audience.c.campaign_key,
                        deliveries.c.partition_date == audience.c.partition_date,
                        deliveries.c.row_key == audience.c.row_key,
                    ),
                )
            )
            .where(audience.c.campaign_key == KEY, audience.c.partition_date == DAY)
            .order_by(audience.c.row_number)
        ).all()
        stats = (
            conn.execute(
                sa.select(daily_stats).where(
                    daily_stats.c.campaign_key == KEY, daily_stats.c.partition_date == DAY
                )
            )
            .mappings()
            .one()
        )
    assert [r.row_number for r in ledger] == list(range(len(rows))), (
        "one ledger row per audience row"
    )
    mismatches = []
    for row, outcome in zip(rows, ledger, strict=True):
        want = row.outcome(policy)
        got = (outcome.status, outcome.reason if outcome.status != "sent" else None)
        if got != ("skipped" if want else "sent", want) or (
            want is None and outcome.recipient != row.recipient
        ):
            mismatches.append(
                (outcome.row_number, repr(row.customer_id)[:40], repr(row.phone)[:40], want, got)
            )
    assert not mismatches, mismatches[:10]
    assert all(r.reason for r in ledger), "every outcome has a reason"

    # The sandbox received exactly the expected messages, each rendered exactly, each recipient once.
    expected = {r.recipient: r for r in rows if r.outcome(policy) is None}
    received = sandbox.messages()
    by_recipient = {f"+{m['recipient_id']}": m for m in received}
    assert len(by_recipient) == len(received), "a recipient received two messages"
    assert set(by_recipient) == set(expected)
    for recipient, message in by_recipient.items():
        header, body = expected[recipient].params(policy)
        assert (message["header_variables"], message["body_variables"]) == (header, body), recipient
        assert message["message_text"] == _expected_text(header, body)
        assert message["campaign_id"] == config.campaign(KEY).campaign_id

    # The figures add up.
    sent = len(expected)
    assert (stats["audience_rows"], stats["sent"], stats["skipped"]) == (
        len(rows),
        sent,
        len(rows) - sent,
    )
    assert (stats["failed"], stats["deferred"], stats["unknown"], stats["pending"]) == (0, 0, 0, 0)
    eligible_rows = sum(1 for r in rows if (r.reason or "").split(":")[0] not in _AUDIENCE_REASONS)
    assert stats["eligible"] == eligible_rows
    assert stats["rendered"] == sent


_AUDIENCE_REASONS = {
    "opted_out",
    "no_consent",
    "phone_has_letters",
    "phone_invalid",
    "phone_missing",
    "phone_too_long",
    "phone_unparseable",
    "marketing_not_delivered_to_us",
    "customer_id_missing",
    "customer_id_too_long",
    "duplicate_recipient",
    "duplicate_customer",
}


def _failure_message(result: Any) -> str:
    """The audience step's error and its causes, as the UI shows them."""
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    assert failure.step_key == f"{KEY}__audience"
    messages, error = [], failure.event_specific_data.error
    while error is not None:
        messages.append(error.message)
        error = error.cause
    return "\n".join(messages)


def test_an_audience_query_without_the_needed_columns_fails_before_any_send(
    warehouse: Warehouse,
    generated: Generator,
    hostile_sandbox: tuple[OutboundConfig, SandboxServer],
) -> None:
    config, sandbox = hostile_sandbox
    _load_brand_tables(warehouse.engine, generated)
    campaign = config.campaign(KEY)
    broken = config.model_copy(
        update={
            "campaigns": [
                campaign.model_copy(
                    update={
                        "audience_sql": AUDIENCE_SQL.replace(
                            "o.code, o.store", "o.code AS promo_code"
                        )
                    }
                )
            ]
        }
    )
    result = materialize_campaign(
        broken, KEY, resources_for(warehouse, sandbox), raise_on_error=False
    )
    assert not result.success
    message = _failure_message(result)
    assert (
        "campaign hostile: the audience query does not return the column(s) code, store" in message
    )
    assert sandbox.messages() == []

    failing = config.model_copy(
        update={
            "campaigns": [
                campaign.model_copy(
                    update={"audience_sql": "SELECT * FROM no_such_table WHERE d = :partition_date"}
                )
            ]
        }
    )
    result = materialize_campaign(
        failing, KEY, resources_for(warehouse, sandbox), raise_on_error=False
    )
    message = _failure_message(result)
    assert (
        "campaign hostile: the audience query failed for 2026-11-24" in message
        and "no_such_table" in message
    )
    assert sandbox.messages() == []
    with warehouse.engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(send_ledger)).scalar_one() == 0


@pytest.mark.postgres
def test_an_audience_query_error_that_quotes_a_phone_number_shows_it_masked(
    demo_config: OutboundConfig,
) -> None:
    # PostgreSQL quotes the value a cast choked on; the error reaches the run's log and the UI.
    with seeded_postgres_warehouse(customers=40) as warehouse:
        with warehouse.engine.connect() as conn:
            phones = [p for p in conn.execute(sa.select(customers_table.c.phone)).scalars() if p]
        campaign = demo_config.campaign("order_ready")
        casting = campaign.model_copy(
            update={
                "audience_sql": "SELECT customer_id, CAST(phone AS bigint) AS phone, first_name FROM customers "
                "WHERE CAST(:partition_date AS date) IS NOT NULL ORDER BY customer_id"
            }
        )
        with pytest.raises(AudienceQueryError) as failure:
            extract(warehouse.engine, casting, demo_config, DAY, "run")
    text = str(failure.value)
    assert "campaign order_ready: the audience query failed" in text and "bigint" in text
    assert not [p for p in phones if p in text], f"a full phone number in: {text}"
    assert [p for p in phones if mask(p) in text], f"no masked phone number in: {text}"


def test_values_reach_sql_only_as_bound_parameters(
    warehouse: Warehouse,
    generated: Generator,
    hostile_sandbox: tuple[OutboundConfig, SandboxServer],
) -> None:
    config, _ = hostile_sandbox
    _load_brand_tables(warehouse.engine, generated)
    category = "offers'); DROP TABLE whatsapp_consents; --"
    chosen = generated.valid[:5]
    with warehouse.engine.begin() as conn:
        conn.execute(
            sa.insert(consents),
            [
                {
                    "customer_id": r.customer_id,
                    "category": category,
                    "status": "opted_in",
                    "updated_at": dt.datetime(2026, 6, 1),
                }
                for r in chosen
            ],
        )
    campaign = config.campaign(KEY).model_copy(update={"consent_category": category})
    hostile_config = config.model_copy(update={"campaigns": [campaign]})
    sql = audience_sql(campaign, hostile_config, warehouse.engine.dialect)
    assert category not in sql and DAY not in sql and ":outbound_consent_category" in sql

    summary = extract(warehouse.engine, campaign, hostile_config, DAY, "run")
    assert summary.rows == len(generated.rows)
    assert summary.eligible == len(chosen)  # only the customers opted in under that exact category
    with warehouse.engine.connect() as conn:
        eligible = set(
            conn.execute(
                sa.select(audience.c.customer_id).where(
                    audience.c.campaign_key == KEY, audience.c.eligible == sa.true()
                )
            ).scalars()
        )
        assert eligible == {r.customer_id for r in chosen}
        assert conn.execute(sa.select(sa.func.count()).select_from(consents)).scalar_one() == len(
            generated.consents
        ) + len(chosen)
