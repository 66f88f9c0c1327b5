"""Audience extraction: the campaign's query, the current consent, phone normalisation, a verdict.

Streams the query from a server-side cursor in chunks and writes `outbound_audience` as it goes
(warehouse.StageWrites), so memory stays flat whatever the audience size. Every row the query
returns is recorded, eligible or not, with the reason.
"""

from __future__ import annotations

import datetime as dt
import decimal
import functools
import math
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import sqlalchemy as sa

from outbound_pipeline.audience.assignment import is_held_out, variant_for
from outbound_pipeline.audience.duplicates import mark_duplicates
from outbound_pipeline.audience.query import (
    CONSENT_EXTRA_PREFIX,
    CONSENT_STATUS,
    CONSENT_UPDATED_AT,
    OCCURRENCE,
    audience_sql,
    required_columns,
    row_key,
)
from outbound_pipeline.audience.verdicts import CUSTOMER_ID_MAX, verdict
from outbound_pipeline.config import Campaign, OutboundConfig, Template
from outbound_pipeline.json_text import to_json, to_sorted_json
from outbound_pipeline.outcomes import Reason
from outbound_pipeline.warehouse import (
    Chunk,
    QueryChunks,
    StageWrites,
    audience,
    columns_of,
    database_message,
    date_parameter,
    query_chunks,
    refresh_statistics,
    replace_partition,
    rows_of,
)
from outbound_pipeline.workers import PARALLEL_FROM_ROWS, in_order

T = TypeVar("T")
CHUNK_ROWS = 5000
# The columns of outbound_audience a chunk's rows hold, in this order (_audience_rows): lists are
# built, travel back from a worker process and go into the loaders at a fraction of the cost of
# dicts. Every column of the table (a test compares them).
ROW_COLUMNS = (
    "campaign_key",
    "partition_date",
    "row_key",
    "row_number",
    "customer_id",
    "phone_raw",
    "recipient",
    "phone_region",
    "consent_status",
    "consent_updated_at",
    "consent_category",
    "consent_record_json",
    "variant",
    "eligible",
    "reason",
    "fields_json",
    "run_id",
)
_RECIPIENT, _VARIANT, _ELIGIBLE, _REASON = (
    ROW_COLUMNS.index(name) for name in ("recipient", "variant", "eligible", "reason")
)
# Widths of outbound_audience columns (warehouse tables) that hold the brand's values.
CONSENT_STATUS_MAX = 20
CONSENT_AT_MAX = 40


# Which of these phones are on the pipeline's suppression list.
Suppressed = Callable[[Sequence[str]], set[str]]


class AudienceQueryError(RuntimeError):
    """The audience query failed or lacks columns the campaign needs; nothing was sent."""


@dataclass
class AudienceSummary:
    rows: int = 0
    eligible: int = 0
    reasons: Counter[str] = field(default_factory=Counter)
    query: str = ""

    def merge(self, other: AudienceSummary) -> None:
        self.rows += other.rows
        self.eligible += other.eligible
        self.reasons.update(other.reasons)


def json_value(value: Any) -> Any:
    """A warehouse value as JSON can hold it: dates in ISO form, decimals and the rest as text;
    NaN and infinities as null (JSON has no such number: such a variable is missing)."""
    kind = type(value)
    if kind is str or kind is int or value is None:  # most values, without the checks below
        return value
    if isinstance(value, float):  # a NumPy float too, as a plain one
        return float(value) if math.isfinite(value) else None
    if isinstance(value, str | int):  # bool is an int
        return value
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return str(value)


def _audience_rows(
    campaign: Campaign,
    template: Template,
    partition_date: str,
    run_id: str,
    records: Sequence[Mapping[str, Any]],
    start: int,
    summary: AudienceSummary,
    extras: Sequence[str] = (),
) -> Iterator[list[Any]]:
    """Each record's row of outbound_audience, its values in the order of ROW_COLUMNS."""
    columns = campaign.variable_columns()
    verdicts = [verdict(campaign, template, record) for record in records]
    for row_number, (record, (recipient, region, reason)) in enumerate(
        zip(records, verdicts, strict=True), start
    ):
        customer_id = record.get(campaign.customer_id_column)
        reason = _after_consent(campaign, customer_id, reason)
        code = None if reason is None else reason.value
        summary.rows += 1
        summary.reasons[code or "eligible"] += 1
        if code is None:
            summary.eligible += 1
        phone_raw = record.get(campaign.phone_column)
        consent_at = record.get(CONSENT_UPDATED_AT)
        yield [
            campaign.key,
            partition_date,
            row_key(customer_id, phone_raw, int(record.get(OCCURRENCE) or 1)),
            row_number,
            # Cut to the column widths: only a row already skipped (customer_id_too_long) or a
            # consent status that is not 'opted_in' anyway can be longer.
            None if customer_id is None else str(customer_id)[:CUSTOMER_ID_MAX],
            None if phone_raw is None else str(phone_raw),
            recipient,
            region,
            str(record.get(CONSENT_STATUS) or "none")[:CONSENT_STATUS_MAX],
            None if consent_at is None else str(json_value(consent_at))[:CONSENT_AT_MAX],
            campaign.consent_category,
            _consent_record(record, extras),
            variant_for(campaign, customer_id) if code is None else None,
            code is None,
            code,
            to_json({c: json_value(record.get(c)) for c in columns}),
            run_id,
        ]


def _after_consent(campaign: Campaign, customer_id: Any, reason: Reason | None) -> Reason | None:
    """A row that passed every check may still be kept out: its customer in the campaign's
    holdout (the suppression list is applied after, in the parent process: apply_suppressions)."""
    if reason is None and is_held_out(campaign, customer_id):
        return Reason.HOLDOUT
    return reason


def _consent_record(record: Mapping[str, Any], extras: Sequence[str]) -> str | None:
    """The consent record's identifying columns (consent_columns), as JSON; None without any."""
    if not extras or record.get(CONSENT_STATUS) is None:
        return None
    values = {c: json_value(record.get(CONSENT_EXTRA_PREFIX + c)) for c in extras}
    return to_sorted_json(values)


def apply_suppressions(
    rows: T, summary: AudienceSummary, suppressed: Suppressed, pack: Callable[[list[list[Any]]], T]
) -> T:
    """Rows (ROW_COLUMNS, as `pack` made them: lists, or a record batch) with those whose phone
    is on the pipeline's suppression list (the state store's, as `suppressed` answers:
    `ledger.suppressed_phones`) made not eligible, reason unsubscribed, whatever the brand's
    consent says; it comes before the holdout, so a held-out phone on the list is recorded
    unsubscribed."""
    kept_out = (None, Reason.HOLDOUT.value)
    recipients, reasons = columns_of(rows, (_RECIPIENT, _REASON))
    candidates = [
        phone
        for phone, reason in zip(recipients, reasons, strict=True)
        if phone and reason in kept_out
    ]
    on_list = suppressed(candidates) if candidates else set()
    if not on_list:
        return rows
    # A batch's rows made lists to change (rare: a day's chunks with a phone on the list).
    listed = rows if isinstance(rows, list) else [list(row) for row in rows_of(rows)]
    for row in listed:
        if row[_RECIPIENT] not in on_list or row[_REASON] not in kept_out:
            continue
        summary.reasons[row[_REASON] or "eligible"] -= 1
        summary.reasons[Reason.UNSUBSCRIBED.value] += 1
        summary.eligible -= row[_ELIGIBLE]
        row[_ELIGIBLE], row[_REASON], row[_VARIANT] = False, Reason.UNSUBSCRIBED.value, None
    return pack(listed)


def _verdict_chunk(
    campaign: Campaign,
    template: Template,
    partition_date: str,
    run_id: str,
    extras: Sequence[str],
    names: Sequence[str],
    pack: Callable[[list[list[Any]]], T],
    values: Sequence[tuple[Any, ...]],
    start: int,
) -> tuple[T, AudienceSummary]:
    """One chunk's rows (ROW_COLUMNS), packed for the warehouse's loader (StageWrites.pack), and
    their counts (in a worker process for a large day), from the query's rows as tuples of the
    columns `names`."""
    summary = AudienceSummary()
    records = [dict(zip(names, row, strict=True)) for row in values]
    rows = list(
        _audience_rows(campaign, template, partition_date, run_id, records, start, summary, extras)
    )
    return pack(rows), summary


def _run_query(
    read: sa.Connection,
    campaign: Campaign,
    config: OutboundConfig,
    partition_date: str,
    chunk_rows: int,
) -> QueryChunks:
    """The day's audience query under way (to be closed: a `with` block), checked to return the
    columns the campaign needs."""
    sql = audience_sql(campaign, config, read.dialect)
    params = {"outbound_consent_category": campaign.consent_category}
    if ":partition_date" in campaign.audience_sql:
        params["partition_date"] = date_parameter(read.dialect, partition_date)
    try:
        query = query_chunks(read, sa.text(sql), params, chunk_rows)
    except sa.exc.SQLAlchemyError as exc:
        raise AudienceQueryError(
            f"campaign {campaign.key}: the audience query failed for {partition_date}: "
            f"{database_message(exc)}"
        ) from None
    missing = [c for c in required_columns(campaign) if c not in query.names]
    if missing:
        query.close()
        returned = ", ".join(k for k in query.names if not k.startswith("outbound_"))
        raise AudienceQueryError(
            f"campaign {campaign.key}: the audience query does not return the column(s) "
            f"{', '.join(missing)} (it returns {returned}); "
            "add them to audience_sql or fix the variables mapping"
        )
    return query


def _chunks(query: QueryChunks, campaign: Campaign, partition_date: str) -> Iterator[Chunk]:
    """The query's chunks as the database streams them, a failure on a later one named."""
    read = 0
    while True:
        try:
            chunk = next(query.chunks, None)
        except sa.exc.SQLAlchemyError as exc:
            # A query can fail after its first rows (a cast on a later row): still name it.
            raise AudienceQueryError(
                f"campaign {campaign.key}: the audience query failed for {partition_date} "
                # The driver may quote the value it choked on: a phone number, perhaps.
                f"after {read} rows: {database_message(exc)}"
            ) from None
        if chunk is None:
            return
        read += len(chunk)
        yield chunk


def extract(
    engine: sa.Engine,
    campaign: Campaign,
    config: OutboundConfig,
    partition_date: str,
    run_id: str,
    progress: Callable[[int], None] | None = None,
    chunk_rows: int = CHUNK_ROWS,
    suppressed: Suppressed | None = None,
    parallel_from: int = PARALLEL_FROM_ROWS,
) -> AudienceSummary:
    """Run the audience query for a day and write every row's verdict (delete-then-insert); the
    verdicts of a large day on a pool of processes (outbound_pipeline.workers).

    `suppressed` answers which of a chunk's phones are on the pipeline's suppression list (the
    state store's): those rows are not eligible, reason unsubscribed."""
    template = config.template_for(campaign)
    summary = AudienceSummary(query=campaign.audience_sql.strip())
    a = audience.c
    day = sa.and_(a.campaign_key == campaign.key, a.partition_date == partition_date)
    # One write connection for the stage (a DuckDB file is opened once), short transactions
    # (StageWrites: 50,000 rows each on SQLite, whose write lock the state store may share).
    with engine.connect() as read, engine.connect() as write:
        with write.begin():
            replace_partition(write, audience, day, ())
        read = read.execution_options(read_only=True)
        writes = StageWrites(write, audience, ROW_COLUMNS)
        with _run_query(read, campaign, config, partition_date, chunk_rows) as query:
            work = functools.partial(
                _verdict_chunk,
                campaign,
                template,
                partition_date,
                run_id,
                config.consent_columns,
                query.names,
                writes.pack,
            )
            chunks = _chunks(query, campaign, partition_date)
            for rows, done in in_order(work, chunks, parallel_from):
                if suppressed is not None:
                    rows = apply_suppressions(rows, done, suppressed, writes.pack)
                summary.merge(done)
                writes.add(rows)
                if progress:
                    progress(summary.rows)
        writes.flush()
    summary.reasons.pop("eligible", None)
    refresh_statistics(engine, audience)
    for reason, count in mark_duplicates(engine, campaign.key, partition_date).items():
        summary.eligible -= count
        summary.reasons[reason] += count
    return summary


def stored_summary(conn: sa.Connection, campaign_key: str, partition_date: str) -> AudienceSummary:
    """The summary of a day's audience as the table holds it (a kept snapshot)."""
    a = audience.c
    summary = AudienceSummary()
    for eligible, reason, count in conn.execute(
        sa.select(a.eligible, a.reason, sa.func.count())
        .where(a.campaign_key == campaign_key, a.partition_date == partition_date)
        .group_by(a.eligible, a.reason)
    ):
        summary.rows += count
        if eligible:
            summary.eligible += count
        else:
            summary.reasons[reason or "not_eligible"] += count
    return summary


def written_by_run(
    conn: sa.Connection, campaign_key: str, partition_date: str, run_id: str
) -> bool:
    """True when this run wrote the day's audience rows (its audience step re-extracted the day)."""
    a = audience.c
    return bool(
        conn.execute(
            sa.select(
                sa.exists().where(
                    a.campaign_key == campaign_key,
                    a.partition_date == partition_date,
                    a.run_id == run_id,
                )
            )
        ).scalar()
    )
