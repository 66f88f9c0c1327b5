"""Audience extraction: the campaign's query, the current consent, phone normalisation, a verdict.

Streams the query from a server-side cursor in chunks and writes `outbound_audience` as it goes
(warehouse.StageWrites), so memory stays flat whatever the audience size, but for the columns that
tell the duplicates, kept up to 128 MiB (50-60 bytes a row, 2 million rows of short IDs:
audience.duplicates). Every row the query returns is recorded, eligible or not, with the reason.
"""

from __future__ import annotations

import contextlib
import functools
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pyarrow as pa
import sqlalchemy as sa

from outbound_pipeline.audience.duplicates import (
    DuplicateColumns,
    duplicate_columns,
    mark_duplicates,
)
from outbound_pipeline.audience.query import CONSENT_UPDATED_AT, audience_sql, required_columns
from outbound_pipeline.audience.rows import ROW_COLUMNS, audience_columns
from outbound_pipeline.config import Campaign, OutboundConfig, Template
from outbound_pipeline.outcomes import Reason
from outbound_pipeline.warehouse import (
    Chunk,
    QueryChunks,
    StageWrites,
    audience,
    columns_of,
    compares_text_exactly,
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
# Where apply_suppressions finds and changes a row's recipient, variant, eligibility and reason.
_RECIPIENT, _VARIANT, _ELIGIBLE, _REASON = (
    ROW_COLUMNS.index(name) for name in ("recipient", "variant", "eligible", "reason")
)
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


def apply_suppressions(
    rows: T, summary: AudienceSummary, suppressed: Suppressed, pack: Callable[[list[list[Any]]], T]
) -> T:
    """Rows (ROW_COLUMNS, as the stage packed them: lists, or a record batch) with those whose phone
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
    gather: bool,
    chunk: Chunk,
    start: int,
) -> tuple[T, AudienceSummary, pa.RecordBatch | None]:
    """One chunk's rows (ROW_COLUMNS), packed for the warehouse's loader
    (StageWrites.pack_columns), their counts and, with `gather`, the columns that tell their
    duplicates (`duplicate_columns`), in a worker process for a large day, from a chunk of the
    query (columns `names`)."""
    # The consent's time is stored as the text json_value writes of it: Arrow writes it faster.
    as_iso = [i for i, name in enumerate(names) if name == CONSENT_UPDATED_AT]
    column = dict(zip(names, every_column(chunk, len(names), as_iso), strict=True))
    size = len(chunk)
    columns, reasons = audience_columns(
        campaign, template, partition_date, run_id, extras, column, size, start
    )
    duplicates = duplicate_columns(columns) if gather else None
    return pack(columns), AudienceSummary(size, reasons["eligible"], reasons), duplicates


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
    while_marking: Callable[[], AbstractContextManager[Any]] | None = None,
) -> AudienceSummary:
    """Run the audience query for a day and write every row's verdict (delete-then-insert); the
    verdicts of a large day on a pool of processes (outbound_pipeline.workers).

    `suppressed` answers which of a chunk's phones are on the pipeline's suppression list (the
    state store's): those rows are not eligible, reason unsubscribed. `while_marking()` is entered
    once every row is written and left once the duplicates are marked (the blocking checks of
    each row's own values run meanwhile: defs.campaigns.checks.AudienceChecks)."""
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
        # Where SQL compares text as Python does, duplicates are told from the rows as written.
        gathered = DuplicateColumns() if compares_text_exactly(engine.dialect) else None
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
                gathered is not None,
            )
            chunks = _chunks(query, campaign, partition_date)
            for rows, done, duplicates in in_order(work, chunks, parallel_from):
                if suppressed is not None:
                    rows = apply_suppressions(rows, done, suppressed, writes.pack)
                summary.merge(done)
                writes.add(rows)
                if gathered is not None:
                    gathered.add(rows, duplicates)
                if progress:
                    progress(summary.rows)
        writes.flush()
    summary.reasons.pop("eligible", None)
    refresh_statistics(engine, audience)
    with while_marking() if while_marking else contextlib.nullcontext():
        marked = mark_duplicates(engine, campaign.key, partition_date, gathered)
    for reason, count in marked.items():
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
