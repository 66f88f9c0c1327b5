"""Blocking data checks between the stages: nothing is sent when the audience or messages fail them.

Each check returns an AssetCheckResult whose metadata shows the offending rows with phones masked.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import dagster as dg
import sqlalchemy as sa

from outbound_pipeline.audience import (
    SAMPLE_ROWS,
    Findings,
    invalid_recipients,
    prepare_phone_checks,
)
from outbound_pipeline.config import Campaign, Template
from outbound_pipeline.messages import CHECKED_COLUMNS, parameter_findings
from outbound_pipeline.warehouse import (
    OPTED_IN,
    audience,
    messages,
    query_chunks,
    reading,
)
from outbound_pipeline.whatsapp import mask
from outbound_pipeline.workers import in_order

# Check names (constants: the UI, the tests and the alerts refer to them).
CONSENT_RESPECTED = "no_recipient_without_consent"
PHONES_VALID = "eligible_phones_are_e164"
RECIPIENTS_UNIQUE = "one_row_per_recipient"
PARAMETER_COUNT = "parameter_count_matches_template"
PARAMETER_RULES = "parameters_within_whatsapp_rules"
MESSAGES_CONSENTED = "messages_only_for_eligible_consented_rows"

AUDIENCE_CHECKS = {
    CONSENT_RESPECTED: "No eligible row lacks a current opt-in for the campaign's consent category.",
    PHONES_VALID: "Every eligible row has a valid phone (libphonenumber) written in E.164.",
    RECIPIENTS_UNIQUE: "No phone is eligible twice in a campaign's day.",
}
MESSAGE_CHECKS = {
    PARAMETER_COUNT: "Every rendered message has exactly the template's number of header and body parameters.",
    PARAMETER_RULES: "Every parameter respects WhatsApp's rules (length, no newline or tab, at most 4 spaces in a row).",
    MESSAGES_CONSENTED: (
        "No rendered message belongs to an audience row that is no longer eligible, not opted in or "
        "has another recipient (the audience has not been edited since it was checked)."
    ),
}
CHUNK_ROWS = 5000
# The phones' check works on whole columns: larger chunks, fewer calls.
PHONE_CHUNK_ROWS = 50_000
# The most single-query checks the messages' stage runs alongside its streamed one (the audience's
# checks have a thread each: day_audience_checks).
ALONGSIDE_QUERIES = 2


def blocking_check_specs(asset: dg.AssetKey, described: dict[str, str]) -> list[dg.AssetCheckSpec]:
    """The specs of checks (name -> description) that stop the run before the next stage."""
    return [
        dg.AssetCheckSpec(name, asset=asset, blocking=True, description=text)
        for name, text in described.items()
    ]


def _result(
    name: str, offending: list[dict[str, str | None]], total: int, severity_error: bool = True
) -> dg.AssetCheckResult:
    for row in offending:
        for field in ("recipient", "phone_raw"):
            if field in row:
                row[field] = mask(row[field])
    return dg.AssetCheckResult(
        check_name=name,
        passed=total == 0,
        severity=dg.AssetCheckSeverity.ERROR if severity_error else dg.AssetCheckSeverity.WARN,
        metadata={
            "offending_rows": dg.MetadataValue.int(total),
            "sample (masked)": dg.MetadataValue.json(offending[:SAMPLE_ROWS]),
        },
    )


_A = audience.c
# The audience columns a check's sample shows.
AUDIENCE_SAMPLE = (_A.row_number, _A.customer_id, _A.recipient, _A.consent_status)
_TOTAL = "offending_total"


def _sampled(
    conn: sa.Connection, name: str, offending: sa.Select[tuple[object, ...]], order: str
) -> dg.AssetCheckResult:
    """The check's result from one query: its `offending` rows (unordered), the first of them by
    their column `order`, each carrying the count of all of them (a window count over the rows
    before the limit), so a large day's tables are read once rather than once to count and once
    to show.

    The count is taken in a subquery that the outer query sorts and limits: PostgreSQL then plans
    the subquery for all its rows, as the count needs them (a million-row day's messages joined to
    their audience by hash: 0.7 s), not for the first few (along both primary keys, row by row:
    2.9 s)."""
    counted = offending.add_columns(sa.func.count().over().label(_TOTAL)).subquery("offending")
    query = sa.select(counted).order_by(counted.c[order]).limit(SAMPLE_ROWS)
    rows = [dict(r) for r in conn.execute(query).mappings()]
    total = rows[0][_TOTAL] if rows else 0
    for row in rows:
        del row[_TOTAL]
    return _result(name, rows, total)


@contextlib.contextmanager
def _queries_alongside(
    engine: sa.Engine, threads: int = ALONGSIDE_QUERIES, warm: Callable[[], None] | None = None
) -> Iterator[Callable[..., Future[dg.AssetCheckResult]]]:
    """Checks, each on a thread and a connection of its own, while the caller does other work:
    the messages' stage streams the rows the worker processes check (their parameters), the
    audience's marks the duplicates (AudienceChecks). The database works meanwhile: a million-row
    day's joins and sorts took 1-3 s after the workers' pass, and the audience's checks 2.5 s
    after the marking. `submit(check, *args)` runs `check(conn, *args)` there; `warm()`, at
    once, on one of the threads (whatever it raises, the check that needs it raises again)."""
    with ThreadPoolExecutor(threads, thread_name_prefix="outbound-checks") as thread:
        if warm is not None:
            thread.submit(warm)

        def submit(
            check: Callable[..., dg.AssetCheckResult], *args: Any
        ) -> Future[dg.AssetCheckResult]:
            def on_own_connection() -> dg.AssetCheckResult:
                with reading(engine) as conn:
                    return check(conn, *args)

            return thread.submit(on_own_connection)

        yield submit


class AudienceChecks:
    """A day's audience checks, on threads beside its stage (`day_audience_checks`): each row's
    own (consent, phone) from when the rows are written, while the duplicates are marked
    (`while_marking`, which audience.extract enters); the one across rows (one eligible row per
    recipient) once they are marked. A million-customer day's checks took 2.5 s after the marking
    (3 s), one after the other."""

    def __init__(
        self,
        campaign_key: str,
        partition_date: str,
        submit: Callable[..., Future[dg.AssetCheckResult]],
    ) -> None:
        self._submit = submit
        self._eligible = sa.and_(
            _A.campaign_key == campaign_key,
            _A.partition_date == partition_date,
            _A.eligible == sa.true(),
        )
        not_opted_in = sa.or_(_A.consent_status.is_(None), _A.consent_status != OPTED_IN)
        # Each row's own checks, by name: the query and its arguments (run again in results).
        self._own: dict[str, tuple[Callable[..., dg.AssetCheckResult], tuple[Any, ...]]] = {
            CONSENT_RESPECTED: (
                _eligible_rows_where,
                (CONSENT_RESPECTED, self._eligible, not_opted_in),
            ),
            PHONES_VALID: (_invalid_phones, (self._eligible,)),
        }
        self._running: dict[str, Future[dg.AssetCheckResult]] = {}
        # Whether the own checks read the rows before the duplicates were marked.
        self._before_marking = False

    @contextlib.contextmanager
    def while_marking(self) -> Iterator[None]:
        """Each row's own checks run while the body marks the duplicates; the check across rows
        starts after it.

        Marking a duplicate only makes an eligible row not eligible: the rows eligible before it
        are a superset of those after, so an own check that passes on them passes after it. One
        that finds rows is run again once the duplicates are marked (`results`), for the count
        and sample of the rows eligible then."""
        self._start_own()
        yield
        self._before_marking = True
        self._start_across()

    def results(self) -> list[dg.AssetCheckResult]:
        """Every check's result, once the duplicates are marked (of the day's rows as stored,
        when `while_marking` was never entered: a kept day)."""
        if not self._running:
            self._start_own()
            self._start_across()
        results = {name: future.result() for name, future in self._running.items()}
        if self._before_marking:
            again = {
                name: self._submit(check, *args)
                for name, (check, args) in self._own.items()
                if not results[name].passed
            }
            results.update((name, future.result()) for name, future in again.items())
        return [results[name] for name in AUDIENCE_CHECKS]

    def _start_own(self) -> None:
        for name, (check, args) in self._own.items():
            self._running[name] = self._submit(check, *args)

    def _start_across(self) -> None:
        self._running[RECIPIENTS_UNIQUE] = self._submit(_duplicated_recipients, self._eligible)


@contextlib.contextmanager
def day_audience_checks(
    engine: sa.Engine, campaign_key: str, partition_date: str
) -> Iterator[AudienceChecks]:
    """The day's audience checks (AudienceChecks), their threads stopped on the way out."""
    # Two checks beside the marking, then the check across rows beside the asset's preview.
    with _queries_alongside(engine, len(AUDIENCE_CHECKS), prepare_phone_checks) as submit:
        yield AudienceChecks(campaign_key, partition_date, submit)


def audience_checks(
    engine: sa.Engine, campaign_key: str, partition_date: str
) -> list[dg.AssetCheckResult]:
    """The audience checks of a day's rows as stored."""
    with day_audience_checks(engine, campaign_key, partition_date) as day_checks:
        return day_checks.results()


def _eligible_rows_where(
    conn: sa.Connection,
    name: str,
    eligible: sa.ColumnElement[bool],
    condition: sa.ColumnElement[bool],
) -> dg.AssetCheckResult:
    return _sampled(
        conn, name, sa.select(*AUDIENCE_SAMPLE).where(eligible, condition), "row_number"
    )


def _invalid_phones(conn: sa.Connection, eligible: sa.ColumnElement[bool]) -> dg.AssetCheckResult:
    # Checked with libphonenumber's metadata, not a pattern of ours: the same bar as extraction,
    # applied to what was stored, a chunk at a time, by a reading of its own (what it shares with
    # extraction's: whatsapp.phone_columns). Only the phones are read for
    # that, in no order (a sort of the whole day before its first row: a second at a million rows
    # on SQLite), the sample's other columns after.
    phones = sa.select(_A.row_number, _A.recipient).where(eligible)
    found = Findings(order="row_number")
    with query_chunks(conn, phones, {}, PHONE_CHUNK_ROWS) as rows:
        for chunk in rows.chunks:
            found.merge(invalid_recipients(chunk))
    sample = conn.execute(
        sa.select(*AUDIENCE_SAMPLE)
        .where(eligible, _A.row_number.in_([r["row_number"] for r in found.sample]))
        .order_by(_A.row_number)
    ).mappings()
    return _result(PHONES_VALID, [dict(r) for r in sample], found.total)


def _duplicated_recipients(
    conn: sa.Connection, eligible: sa.ColumnElement[bool]
) -> dg.AssetCheckResult:
    # A day without any (most) is told by one GROUP BY: 0.5 s at a million rows on SQLite, where
    # the window count below, which finds the count and sample of a day with some, takes 1.2 s.
    repeated = (
        sa.select(_A.recipient)
        .where(eligible, _A.recipient.is_not(None))
        .group_by(_A.recipient)
        .having(sa.func.count() > 1)
        .limit(1)
    )
    if conn.execute(repeated).first() is None:
        return _result(RECIPIENTS_UNIQUE, [], 0)
    # A window count (one sort), not `recipient IN (GROUP BY ... HAVING)`: on a freshly written
    # table without statistics PostgreSQL re-runs that subquery per row (quadratic).
    same_phone = sa.func.count().over(partition_by=_A.recipient).label("same_phone")
    counted = sa.select(*AUDIENCE_SAMPLE, same_phone).where(eligible).subquery()
    repeated = sa.and_(counted.c.recipient.is_not(None), counted.c.same_phone > 1)
    return _sampled(
        conn,
        RECIPIENTS_UNIQUE,
        sa.select(
            counted.c.row_number,
            counted.c.customer_id,
            counted.c.recipient,
            counted.c.consent_status,
        ).where(repeated),
        "row_number",
    )


def message_checks(
    engine: sa.Engine, campaign: Campaign, templates: Sequence[Template], partition_date: str
) -> list[dg.AssetCheckResult]:
    """`templates`: the campaign's (one per variant): each row is checked against its own. The
    rows' JSON and rules on the worker processes for a large day (outbound_pipeline.workers)."""
    m = messages.c
    by_name = {(t.name, t.language): t for t in templates}
    counts, rules = Findings(), Findings()
    work = functools.partial(parameter_findings, by_name)
    with _queries_alongside(engine) as alongside:
        consented = alongside(_consented_messages, campaign.key, partition_date)
        rendered = sa.select(*(m[name] for name in CHECKED_COLUMNS)).where(
            m.campaign_key == campaign.key,
            m.partition_date == partition_date,
            m.rendered == sa.true(),
        )
        with reading(engine) as conn, query_chunks(conn, rendered, {}, CHUNK_ROWS) as rows:
            for chunk_counts, chunk_rules in in_order(work, rows.chunks):
                counts.merge(chunk_counts)
                rules.merge(chunk_rules)
        return [
            _result(PARAMETER_COUNT, counts.sample, counts.total),
            _result(PARAMETER_RULES, rules.sample, rules.total),
            consented.result(),
        ]


def _consented_messages(
    conn: sa.Connection, campaign_key: str, partition_date: str
) -> dg.AssetCheckResult:
    """Rendered messages whose audience row is not eligible, not opted in or re-addressed.

    The audience checks ran when the audience was written; this catches a change to the audience
    table between then and rendering (a hand edit, a run of an older query) before anything is sent.
    A message whose audience row is missing is not counted: a concurrent run of the same partition
    deletes and rewrites the day's audience, and the send re-checks consent in any case.
    """
    m, a = messages.c, audience.c
    joined = messages.join(
        audience,
        sa.and_(
            a.campaign_key == m.campaign_key,
            a.partition_date == m.partition_date,
            a.row_key == m.row_key,
        ),
    )
    bad = sa.and_(
        m.campaign_key == campaign_key,
        m.partition_date == partition_date,
        m.rendered == sa.true(),
        sa.or_(
            a.eligible != sa.true(),
            a.consent_status.is_(None),
            a.consent_status != OPTED_IN,
            a.recipient.is_(None),
            a.recipient != m.recipient,
        ),
    )
    return _sampled(
        conn,
        MESSAGES_CONSENTED,
        sa.select(m.row_key, m.customer_id, m.recipient, a.consent_status, a.eligible, a.reason)
        .select_from(joined)
        .where(bad),
        "row_key",
    )
