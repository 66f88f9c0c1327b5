"""The blocking checks between the stages: they find bad rows, show them masked, and stop the send.

A check is worth something only when the stage before it gets something wrong, so the end-to-end
tests make the stage wrong: the audience table edited between two runs (a real path: a concurrent
run or a hand edit), or a bug planted in the verdict or in rendering. Each time the sandbox must
receive nothing, and the same data with the fault removed must send.
"""

from __future__ import annotations

import json
import random
import threading
from typing import Any

import dagster as dg
import pyarrow as pa
import pytest
import sqlalchemy as sa

from outbound_pipeline.audience import SAMPLE_ROWS
from outbound_pipeline.audience import rows as audience_rows_module
from outbound_pipeline.config import OutboundConfig, Template
from outbound_pipeline.defs.campaigns import checks
from outbound_pipeline.defs.campaigns.assets import AUDIENCE, DELIVERIES, MESSAGES, asset_key
from outbound_pipeline.ledger import send_ledger
from outbound_pipeline.messages import parameter_findings
from outbound_pipeline.messages import parameters as parameters_module
from outbound_pipeline.warehouse import audience, messages
from outbound_pipeline_tests.conftest import DAY, campaign_assets, resources_for
from outbound_pipeline_tests.stores import Warehouse

KEY = "order_ready"


def _audience_row(n: int, **values: Any) -> dict[str, Any]:
    row = {
        "campaign_key": KEY,
        "partition_date": DAY,
        "row_key": f"r{n}",
        "row_number": n,
        "customer_id": f"c{n}",
        "phone_raw": f"+336123456{n:02d}",
        "recipient": f"+336123456{n:02d}",
        "phone_region": "FR",
        "consent_status": "opted_in",
        "consent_updated_at": None,
        "eligible": True,
        "reason": None,
        "fields_json": "{}",
        "run_id": "test",
    }
    row.update(values)
    return row


def _by_name(results: list[dg.AssetCheckResult]) -> dict[str, dg.AssetCheckResult]:
    return {r.check_name: r for r in results}


def _sample(result: dg.AssetCheckResult) -> list[dict[str, Any]]:
    return result.metadata["sample (masked)"].value  # type: ignore[return-value]


def test_audience_checks_find_and_mask_the_offending_rows(warehouse: Warehouse) -> None:
    rows = [
        _audience_row(1),
        _audience_row(2, consent_status="opted_out"),
        _audience_row(3, consent_status="none"),
        _audience_row(4, recipient="+3361234"),  # E.164-looking, not a valid number
        _audience_row(5, recipient=None),
        _audience_row(6, recipient="+33612345601"),  # same phone as row 1
        _audience_row(
            7, consent_status="opted_out", eligible=False, reason="opted_out"
        ),  # not eligible: fine
    ]
    with warehouse.engine.begin() as conn:
        conn.execute(sa.insert(audience), rows)
    results = _by_name(checks.audience_checks(warehouse.engine, KEY, DAY))
    assert set(results) == set(checks.AUDIENCE_CHECKS)
    consent, phones, unique = (
        results[n]
        for n in (checks.CONSENT_RESPECTED, checks.PHONES_VALID, checks.RECIPIENTS_UNIQUE)
    )
    assert not consent.passed and consent.metadata["offending_rows"].value == 2
    assert [r["customer_id"] for r in _sample(consent)] == ["c2", "c3"]
    assert not phones.passed and phones.metadata["offending_rows"].value == 2
    assert [r["customer_id"] for r in _sample(phones)] == ["c4", "c5"]
    assert not unique.passed and unique.metadata["offending_rows"].value == 2
    assert {r["customer_id"] for r in _sample(unique)} == {"c1", "c6"}
    assert all(r.severity == dg.AssetCheckSeverity.ERROR for r in results.values())
    shown = json.dumps([_sample(r) for r in results.values()])
    assert "+33612345601" not in shown and "+336******01" in shown

    with warehouse.engine.begin() as conn:
        conn.execute(sa.delete(audience).where(audience.c.row_number.in_([2, 3, 4, 5, 6])))
    assert all(r.passed for r in checks.audience_checks(warehouse.engine, KEY, DAY))


def _count_own_checks(
    monkeypatch: pytest.MonkeyPatch,
) -> tuple[dict[str, list[int]], threading.Event]:
    """The offending rows each run of the consent and phones checks found, by check, and an event
    set once both have run."""
    found: dict[str, list[int]] = {checks.CONSENT_RESPECTED: [], checks.PHONES_VALID: []}
    both_ran = threading.Event()

    def counted(check: Any, name: str) -> Any:
        def run(conn: sa.Connection, *args: Any) -> dg.AssetCheckResult:
            result = check(conn, *args)
            found[name].append(result.metadata["offending_rows"].value)
            if all(found.values()):
                both_ran.set()
            return result

        return run

    for attribute, name in (
        ("_eligible_rows_where", checks.CONSENT_RESPECTED),
        ("_invalid_phones", checks.PHONES_VALID),
    ):
        monkeypatch.setattr(checks, attribute, counted(getattr(checks, attribute), name))
    return found, both_ran


def test_a_rows_own_check_that_found_rows_before_the_marking_is_judged_after_it(
    warehouse: Warehouse, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The checks of each row's own values run while the duplicates are marked, on the rows
    eligible before: a row they find that the marking then makes not eligible fails nothing
    (they run again after it), and a row still eligible after it is counted once."""
    rows = [
        _audience_row(1),
        # Eligible without an opt-in, and row 1's phone: the marking makes it not eligible.
        _audience_row(2, consent_status="none", recipient="+33612345601"),
        _audience_row(3, recipient="+3361234", customer_id="c1"),  # row 1's customer: marked too
        _audience_row(4, consent_status="opted_out"),  # stays eligible: found after the marking
    ]
    with warehouse.engine.begin() as conn:
        conn.execute(sa.insert(audience), rows)
    found, both_ran = _count_own_checks(monkeypatch)
    with checks.day_audience_checks(warehouse.engine, KEY, DAY) as day_checks:
        with day_checks.while_marking():
            # The marking, once both checks have read the rows eligible before it.
            assert both_ran.wait(30)
            with warehouse.engine.begin() as conn:
                conn.execute(
                    sa.update(audience)
                    .where(audience.c.row_number.in_([2, 3]))
                    .values(eligible=False, reason="duplicate_recipient")
                )
        results = _by_name(day_checks.results())
    assert found == {checks.CONSENT_RESPECTED: [2, 1], checks.PHONES_VALID: [1, 0]}
    consent = results[checks.CONSENT_RESPECTED]
    assert not consent.passed and consent.metadata["offending_rows"].value == 1
    assert [r["customer_id"] for r in _sample(consent)] == ["c4"]
    assert results[checks.PHONES_VALID].passed and results[checks.RECIPIENTS_UNIQUE].passed
    # The same rows as stored, no marking: each check runs once (a kept day's checks).
    found[checks.CONSENT_RESPECTED].clear()
    found[checks.PHONES_VALID].clear()
    again = _by_name(checks.audience_checks(warehouse.engine, KEY, DAY))
    assert found == {checks.CONSENT_RESPECTED: [1], checks.PHONES_VALID: [0]}
    assert again == results


def test_a_check_counts_every_offending_row_and_shows_the_first(warehouse: Warehouse) -> None:
    # More offending rows than a sample shows, written out of order: the count is of all of them,
    # the sample the first by row number (the consent check's count and sample come from one
    # query; the phones' check reads the rows in no order and keeps the first by row number).
    numbers = list(range(SAMPLE_ROWS * 3, 0, -1))
    random.Random(3).shuffle(numbers)
    with warehouse.engine.begin() as conn:
        conn.execute(
            sa.insert(audience),
            [
                _audience_row(n, consent_status="none", recipient=f"+3361234{n * 7 % 100:02d}")
                for n in numbers
            ],
        )
    results = _by_name(checks.audience_checks(warehouse.engine, KEY, DAY))
    for name in (checks.CONSENT_RESPECTED, checks.PHONES_VALID):
        assert results[name].metadata["offending_rows"].value == SAMPLE_ROWS * 3
        assert [r["row_number"] for r in _sample(results[name])] == list(range(1, SAMPLE_ROWS + 1))


@pytest.mark.parametrize("warehouse", ["sqlite"], indirect=True)
def test_the_checks_read_while_another_connection_writes_the_sqlite_file(
    warehouse: Warehouse,
) -> None:
    """The checks only read: on SQLite they never take the write lock, so neither a writer of the
    file (a send's claims, when the state store is the same file) waits for their queries, nor
    they for its transaction."""
    with warehouse.engine.begin() as conn:
        conn.execute(sa.insert(audience), [_audience_row(n) for n in range(1, 6)])
    done: list[list[dg.AssetCheckResult]] = []
    with warehouse.engine.connect() as writer, writer.begin():  # holds the write lock
        writer.execute(sa.insert(audience), [_audience_row(9, row_key="held")])
        thread = threading.Thread(
            target=lambda: done.append(checks.audience_checks(warehouse.engine, KEY, DAY))
        )
        thread.start()
        thread.join(timeout=30)  # a check waiting for the lock waits for busy_timeout: 120 s
        assert done, "the audience checks waited for another connection's write transaction"
    assert all(r.passed for r in done[0])


def test_message_checks_find_and_mask_the_offending_rows(
    warehouse: Warehouse, demo_config: OutboundConfig
) -> None:
    campaign = demo_config.campaign(KEY)
    template = demo_config.template_for(campaign)
    with warehouse.engine.begin() as conn:
        conn.execute(
            sa.insert(audience),
            [_audience_row(n) for n in (1, 2, 3, 4, 7)]
            + [_audience_row(5, consent_status="opted_out")],
        )

        def message(n: int, body: list[str] | None, **values: Any) -> dict[str, Any]:
            return {
                "campaign_key": KEY,
                "partition_date": DAY,
                "row_key": f"r{n}",
                "customer_id": f"c{n}",
                "recipient": f"+336123456{n:02d}",
                "template_name": template.name,
                "language": template.language,
                "category": template.category,
                "header_params_json": "[]",
                "body_params_json": json.dumps(body),
                "preview_text": "x",
                "rendered": True,
                "reason": None,
                "run_id": "test",
                **values,
            }

        conn.execute(
            sa.insert(messages),
            [
                message(1, ["Ann", "A1", "Lyon"]),
                message(2, ["Ann", "A1"]),  # one parameter short
                message(3, ["Ann", "A1\nA2", "Lyon"]),  # a newline
                message(4, ["Ann", "A1", "L" * 1025]),  # fine: a body-only template allows 32,768
                message(5, ["Ann", "A1", "Lyon"]),  # its audience row is opted out
                message(
                    6, ["Ann", "A1", "Lyon"]
                ),  # no audience row (a concurrent re-extraction): not counted
                # The right count, but a template that is not the campaign's.
                message(7, ["Ann", "A1", "Lyon"], template_name="another_template"),
            ],
        )
    results = _by_name(checks.message_checks(warehouse.engine, campaign, [template], DAY))
    assert set(results) == set(checks.MESSAGE_CHECKS)
    count, rules, consented = (
        results[n]
        for n in (checks.PARAMETER_COUNT, checks.PARAMETER_RULES, checks.MESSAGES_CONSENTED)
    )
    assert [r["row_key"] for r in _sample(count)] == ["r2", "r7"] and not count.passed
    assert [r["row_key"] for r in _sample(rules)] == ["r3"] and _sample(rules)[0][
        "rules"
    ] == "body {{2}}: newline_or_tab"
    assert [r["row_key"] for r in _sample(consented)] == ["r5"] and not consented.passed
    shown = json.dumps([_sample(r) for r in results.values()])
    assert "+33612345605" not in shown and "+336******05" in shown


def test_a_text_is_held_to_each_components_rule_on_every_row_that_holds_it() -> None:
    # Each distinct text is judged once a chunk: by its component's limit (60 in a header, 1,024
    # in the body of a template with a header, 32,768 in a body alone), and found again on every
    # later row.
    template = Template(
        name="t", language="fr", category="UTILITY", header="Hi {{1}}", body="{{1}} {{2}}"
    )
    # Body only: its body's parameters may hold 32,768 characters, not 1,024.
    body_only = Template(name="b", language="fr", category="UTILITY", body="{{1}}")
    long, tab, longer = "x" * 100, "a\tb", "y" * 1100

    def row(n: int, header: list[str], body: list[str], name: str = "t") -> tuple[Any, ...]:
        return (f"r{n}", f"+3361234560{n}", name, "fr", json.dumps(header), json.dumps(body))

    rows = [
        row(1, [long], [long, tab]),
        row(2, ["ok"], [long, "ok"]),
        row(3, [long], ["ok", tab]),
        row(4, ["ok"], ["ok"]),
        row(5, [], [longer], name="b"),
        row(6, ["ok"], ["ok", longer]),
    ]
    names = ["row_key", "recipient", "template_name", "language", "header", "body"]
    batch = pa.RecordBatch.from_pylist([dict(zip(names, r, strict=True)) for r in rows])
    for chunk in (rows, batch):
        templates = {("t", "fr"): template, ("b", "fr"): body_only}
        counts, rules = parameter_findings(templates, chunk)
        assert [(r["row_key"], r["counts"]) for r in counts.sample] == [("r4", "1+1")]
        assert [(r["row_key"], r["rules"]) for r in rules.sample] == [
            ("r1", "header {{1}}: longer_than_60_characters; body {{2}}: newline_or_tab"),
            ("r3", "header {{1}}: longer_than_60_characters; body {{2}}: newline_or_tab"),
            ("r6", "body {{2}}: longer_than_1024_characters"),
        ]


# --- end to end: a failing check stops the send -----------------------------------------------------


def _materialize(
    config: OutboundConfig, resources: dict[str, Any], *names: str
) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        campaign_assets(config, KEY),
        selection=[asset_key(KEY, n) for n in names],
        partition_key=DAY,
        resources=resources,
        raise_on_error=False,
    )


def _failed_checks(result: dg.ExecuteInProcessResult) -> dict[str, dg.AssetCheckEvaluation]:
    return {e.check_name: e for e in result.get_asset_check_evaluations() if not e.passed}


def _assert_nothing_sent(
    result: dg.ExecuteInProcessResult, warehouse: Warehouse, sandbox: Any
) -> None:
    assert not result.success
    materialized = {m.asset_key for m in result.get_asset_materialization_events() if m.asset_key}
    assert asset_key(KEY, DELIVERIES) not in materialized
    assert sandbox.messages() == []
    with warehouse.engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(send_ledger)).scalar_one() == 0


def test_an_audience_edited_after_its_checks_is_caught_before_sending(
    seeded: Warehouse, sandbox: Any, demo_config: OutboundConfig
) -> None:
    resources = resources_for(seeded, sandbox)
    assert _materialize(demo_config, resources, AUDIENCE).success
    # Between the audience run and the send run, opted-out rows are made eligible (a hand edit, or a
    # concurrent run of an older audience query): rendering trusts the table, the check does not.
    with seeded.engine.begin() as conn:
        edited = conn.execute(
            sa.update(audience)
            .where(
                audience.c.campaign_key == KEY,
                audience.c.reason.in_(["opted_out", "no_consent"]),
                audience.c.recipient.is_not(None),
            )
            .values(eligible=True, reason=None)
        ).rowcount
    assert edited > 0

    result = _materialize(demo_config, resources, MESSAGES, DELIVERIES)
    failed = _failed_checks(result)
    assert set(failed) == {checks.MESSAGES_CONSENTED}
    evaluation = failed[checks.MESSAGES_CONSENTED]
    assert evaluation.asset_key == asset_key(KEY, MESSAGES)
    assert evaluation.metadata["offending_rows"].value >= edited - 5  # a few may share a phone
    sample = evaluation.metadata["sample (masked)"].value
    assert sample and all("*" in row["recipient"] for row in sample)
    _assert_nothing_sent(result, seeded, sandbox)

    # The audience run again (its checks pass) and the same send run goes through.
    assert _materialize(demo_config, resources, AUDIENCE, MESSAGES, DELIVERIES).success
    assert len(sandbox.messages()) > 10


def test_a_verdict_bug_is_caught_by_the_audience_checks(
    seeded: Warehouse, sandbox: Any, demo_config: OutboundConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_verdicts = audience_rows_module.verdicts

    def consent_ignored(*args: Any) -> list[tuple[str | None, str | None, str | None]]:
        return [
            (
                recipient,
                region,
                None if reason in ("opted_out", "no_consent") and recipient else reason,
            )
            for recipient, region, reason in real_verdicts(*args)
        ]

    monkeypatch.setattr(audience_rows_module, "verdicts", consent_ignored)
    result = _materialize(
        demo_config, resources_for(seeded, sandbox), AUDIENCE, MESSAGES, DELIVERIES
    )
    failed = _failed_checks(result)
    assert checks.CONSENT_RESPECTED in failed
    assert failed[checks.CONSENT_RESPECTED].asset_key == asset_key(KEY, AUDIENCE)
    _assert_nothing_sent(result, seeded, sandbox)
    materialized = {m.asset_key for m in result.get_asset_materialization_events()}
    assert asset_key(KEY, MESSAGES) not in materialized  # the block starts right after the audience


def test_a_rendering_bug_is_caught_by_the_message_checks(
    seeded: Warehouse, sandbox: Any, demo_config: OutboundConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Rendering that appends a tab to every parameter once it has checked the rules: the messages
    # check, which has its own import of the rules, must refuse the result.
    real_parameter = parameters_module._parameter
    monkeypatch.setattr(
        parameters_module,
        "_parameter",
        lambda *args: (real_parameter(*args)[0] + "\t", False),
    )
    result = _materialize(
        demo_config, resources_for(seeded, sandbox), AUDIENCE, MESSAGES, DELIVERIES
    )
    failed = _failed_checks(result)
    assert set(failed) == {checks.PARAMETER_RULES}
    sample = failed[checks.PARAMETER_RULES].metadata["sample (masked)"].value
    assert "body {{1}}: newline_or_tab" in sample[0]["rules"]
    _assert_nothing_sent(result, seeded, sandbox)
