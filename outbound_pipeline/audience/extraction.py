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
from outbound_pipeline.audience.verdicts import CUSTOMER_ID_MAX, verdicts
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
    every_column,
    query_chunks,
    refresh_statistics,
    replace_partition,
    rows_of,
)
from outbound_pipeline.workers import PARALLEL_FROM_ROWS, in_order

T = TypeVar("T")
CHUNK_ROWS = 5000
# The columns of outbound_audience a chunk's rows hold, in this order (_audience_columns): built
# column by column, packed as a record batch or as rows (StageWrites.pack_columns), never dicts.
# Every column of the table (a test compares them).
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


def _audience_columns(
    campaign: Campaign,
    template: Template,
    partition_date: str,
    run_id: str,
    extras: Sequence[str],
    column: Mapping[str, Sequence[Any]],
    size: int,
    start: int,
    summary: AudienceSummary,
) -> list[Sequence[Any]]:
    """The rows of outbound_audience for `size` rows of the query, column by column in the order
    of ROW_COLUMNS, from the query's columns by name: no mapping, list or tuple made for each
    row (a third less of the workers' CPU than row by row)."""
    nothing = [None] * size
    ids = column.get(campaign.customer_id_column, nothing)
    phones = column.get(campaign.phone_column, nothing)
    consents = column.get(CONSENT_STATUS, nothing)
    countries = column.get(campaign.country_column, nothing) if campaign.country_column else nothing
    variables = campaign.variable_columns()
    found = verdicts(campaign, template, ids, phones, countries, consents)
    keys, recipients, regions, variants, codes, fields = [], [], [], [], [], []
    for customer_id, phone_raw, occurrence, (recipient, region, reason), *values in zip(
        ids,
        phones,
        column.get(OCCURRENCE, nothing),
        found,
        *(column.get(c, nothing) for c in variables),
        strict=True,
    ):
        reason = _after_consent(campaign, customer_id, reason)
        code = None if reason is None else reason.value
        keys.append(row_key(customer_id, phone_raw, int(occurrence or 1)))
        recipients.append(recipient)
        regions.append(region)
        codes.append(code)
        variants.append(variant_for(campaign, customer_id) if code is None else None)
        fields.append(to_json({c: json_value(v) for c, v in zip(variables, values, strict=True)}))
    counted = Counter(code or "eligible" for code in codes)
    summary.rows += size
    summary.eligible += counted["eligible"]
    summary.reasons.update(counted)
    rows = {
        "campaign_key": [campaign.key] * size,
        "partition_date": [partition_date] * size,
        "row_key": keys,
        "row_number": list(range(start, start + size)),
        # Cut to the column widths: only a row already skipped (customer_id_too_long) or a
        # consent status that is not 'opted_in' anyway can be longer.
        "customer_id": [None if c is None else str(c)[:CUSTOMER_ID_MAX] for c in ids],
        "phone_raw": [None if p is None else str(p) for p in phones],
        "recipient": recipients,
        "phone_region": regions,
        "consent_status": [str(s or "none")[:CONSENT_STATUS_MAX] for s in consents],
        "consent_updated_at": [
            None if at is None else str(json_value(at))[:CONSENT_AT_MAX]
            for at in column.get(CONSENT_UPDATED_AT, nothing)
        ],
        "consent_category": [campaign.consent_category] * size,
        "consent_record_json": _consent_records(column, consents, extras, nothing),
        "variant": variants,
        "eligible": [code is None for code in codes],
        "reason": codes,
        "fields_json": fields,
        "run_id": [run_id] * size,
    }
    return [rows[name] for name in ROW_COLUMNS]


def _after_consent(campaign: Campaign, customer_id: Any, reason: Reason | None) -> Reason | None:
    """A row that passed every check may still be kept out: its customer in the campaign's
    holdout (the suppression list is applied after, in the parent process: apply_suppressions)."""
    if reason is None and is_held_out(campaign, customer_id):
        return Reason.HOLDOUT
    return reason


def _consent_records(
    column: Mapping[str, Sequence[Any]],
    consents: Sequence[Any],
    extras: Sequence[str],
    nothing: list[None],
) -> Sequence[str | None]:
    """Each row's consent record: its identifying columns (consent_columns), as JSON; None without
    any, or without a consent row."""
    if not extras:
        return nothing
    extra_columns = [column.get(CONSENT_EXTRA_PREFIX + c, nothing) for c in extras]
    return [
        None
        if consent is None
        else to_sorted_json({c: json_value(v) for c, v in zip(extras, values, strict=True)})
        for consent, *values in zip(consents, *extra_columns, strict=True)
    ]


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
    pack: Callable[[list[Sequence[Any]]], T],
    chunk: Chunk,
    start: int,
) -> tuple[T, AudienceSummary]:
    """One chunk's rows (ROW_COLUMNS), packed for the warehouse's loader
    (StageWrites.pack_columns), and their counts (in a worker process for a large day), from a
    chunk of the query (columns `names`)."""
    summary = AudienceSummary()
    # The consent's time is stored as the text json_value writes of it: Arrow writes it faster.
    as_iso = [i for i, name in enumerate(names) if name == CONSENT_UPDATED_AT]
    column = dict(zip(names, every_column(chunk, len(names), as_iso), strict=True))
    columns = _audience_columns(
        campaign, template, partition_date, run_id, extras, column, len(chunk), start, summary
    )
    return pack(columns), summary


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
                writes.pack_columns,
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
