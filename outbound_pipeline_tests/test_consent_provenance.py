"""Who allowed each message: the README's provenance query on the demo finds, for every `sent` row,
the consent record that allowed it; and the demo's holdout and variants as the ledger, the sandbox
and the report see them. SQLite and PostgreSQL, the sandbox over a real socket."""

from __future__ import annotations

import datetime as dt
import json
import re
from collections import Counter
from pathlib import Path

import sqlalchemy as sa

from outbound_pipeline.clock import as_utc
from outbound_pipeline.warehouse import daily_groups, deliveries
from outbound_pipeline_tests.conftest import DAY, materialize_campaign, resources_for

README = Path(__file__).parent.parent / "README.md"


def provenance_query() -> str:
    """The query exactly as the README shows it."""
    text = README.read_text(encoding="utf-8")
    block = text.split("<!-- provenance-query:start -->", 1)[1].split(
        "<!-- provenance-query:end -->", 1
    )[0]
    match = re.search(r"```sql\n(.*?)```", block, re.S)
    assert match, "the README's provenance query is missing"
    return match.group(1)


def latest_consents(conn: sa.Connection) -> dict[tuple[str, str], dict]:
    """The brand's current consent per (customer, category), computed here from the raw history:
    the latest updated_at, an opt-out winning a tie."""
    latest: dict[tuple[str, str], dict] = {}
    for row in conn.execute(sa.text("SELECT * FROM whatsapp_consents")).mappings():
        key = (str(row["customer_id"]), row["category"])
        rank = (str(row["updated_at"]), 0 if row["status"] == "opted_out" else 1)
        if key not in latest or rank > latest[key]["rank"]:
            latest[key] = {**row, "rank": rank}
    return latest


def _utc(value: object) -> dt.datetime:
    """A timestamp a raw SQL query returns: text on SQLite, a datetime on PostgreSQL."""
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value)
    return as_utc(value)  # type: ignore[arg-type,return-value]


def _second(value: object) -> str:
    """A timestamp as text to the second, whichever separator the store writes."""
    return str(value).replace("T", " ")[:19]


def test_the_demo_names_who_allowed_each_message_and_keeps_its_holdout_out(
    seeded, sandbox, demo_config
) -> None:
    """One demo day (both campaigns, materialised once): provenance, then holdout and variants."""
    resources = resources_for(seeded, sandbox)
    results = {
        c.key: materialize_campaign(demo_config, c.key, resources) for c in demo_config.campaigns
    }
    assert all(result.success for result in results.values())
    check_provenance(seeded, demo_config)
    check_holdout_and_variants(seeded, sandbox, demo_config, results["winter_offers"])


def check_provenance(seeded, demo_config) -> None:  # type: ignore[no-untyped-def]
    query = sa.text(provenance_query())
    with seeded.engine.connect() as conn:
        sent = conn.execute(
            sa.select(
                deliveries.c.recipient, deliveries.c.customer_id, deliveries.c.campaign_key
            ).where(deliveries.c.status == "sent", deliveries.c.partition_date == DAY)
        ).all()
        assert len(sent) > 50
        current = latest_consents(conn)
        answers = {
            recipient: conn.execute(query, {"recipient": recipient}).mappings().all()
            for recipient in {r.recipient for r in sent}
        }
    checked = 0
    for recipient, customer_id, campaign_key in sent:
        campaign = demo_config.campaign(campaign_key)
        (row,) = [a for a in answers[recipient] if a["campaign_key"] == campaign_key]
        assert row["customer_id"] == customer_id
        assert row["consent_category"] == campaign.consent_category
        assert row["consent_status"] == "opted_in"
        record = json.loads(row["consent_record_json"])
        brand = current[(customer_id, campaign.consent_category)]
        # The record named is the brand's latest for that customer and category, by its own key.
        assert record == {"id": brand["id"], "source": brand["source"]}
        assert brand["status"] == "opted_in"
        assert _second(row["consent_updated_at"]) == _second(brand["updated_at"])
        # The last-moment check passed before the message was accepted.
        assert row["consent_checked_at"] is not None
        assert _utc(row["consent_checked_at"]) <= _utc(row["sent_at"])
        checked += 1
    assert checked == len(sent)


def check_holdout_and_variants(seeded, sandbox, demo_config, result) -> None:  # type: ignore[no-untyped-def]
    campaign = demo_config.campaign("winter_offers")
    with seeded.engine.connect() as conn:
        rows = (
            conn.execute(
                sa.select(deliveries).where(
                    deliveries.c.campaign_key == "winter_offers", deliveries.c.partition_date == DAY
                )
            )
            .mappings()
            .all()
        )
        groups = {
            g.group_name: g
            for g in conn.execute(
                sa.select(daily_groups).where(daily_groups.c.campaign_key == "winter_offers")
            )
        }
    held = [r for r in rows if r["reason"] == "holdout"]
    sent = [r for r in rows if r["status"] == "sent"]
    assert held and all(r["status"] == "skipped" and r["variant"] is None for r in held)
    # No held-out customer got a message.
    received = {
        f"+{m['recipient_id']}": m
        for m in sandbox.messages()
        if m["campaign_id"] == campaign.campaign_id
    }
    assert not {r["recipient"] for r in held} & set(received)
    # Each sent row's variant is the template the API was called with.
    template_of = {v.name: v.template for v in campaign.variants}
    for row in sent:
        assert received[row["recipient"]]["template_name"] == template_of[row["variant"]]
        assert row["template_name"] == template_of[row["variant"]]
    assert set(Counter(r["variant"] for r in sent)) == {"a", "b"}
    # The report's groups: counted from the ledger, converted by the demo's conversion query.
    assert groups["contacted"].customers == len({r["customer_id"] for r in sent})
    assert groups["holdout"].customers == len({r["customer_id"] for r in held})
    assert (
        groups["variant:a"].customers + groups["variant:b"].customers
        == groups["contacted"].customers
    )
    assert all(g.converted is not None for g in groups.values())
    report = result.asset_materializations_for_node("winter_offers__report")[0].metadata
    assert report["holdout_customers"].value == groups["holdout"].customers
    assert report["contacted_conversion_rate"].value == round(
        groups["contacted"].converted / groups["contacted"].customers, 4
    )
    assert "conversion_lift_points" in report and "variant_b_customers" in report
