"""The I/O floor of `benchmarks.audience_scale`: the reads and writes the audience and messages
stages cannot avoid for a day, with none of their work (its `io_floor` phase)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import Any

from benchmarks._common import (
    CAMPAIGN_KEY,
    DAY,
    bench_config,
    cpu_seconds,
    current_rss_mb,
    peak_rss_mb,
)

# An odd multiplier modulo 2**128: a bijection, so each position has its own key.
_SCATTER = 0x9E3779B97F4A7C15F39CC0605CEDC835


def _scattered_key(position: int) -> str:
    """A key as the stages write one: 32 hex digits, in no relation to the rows' order (theirs is
    a hash of the row). Keys in the rows' order would fill each index page once, where the stages'
    touch the whole index each transaction: the floor on SQLite 21.9 s against 29.5 s, PostgreSQL
    25.0 s against 29.6 s (2026-12-05, docs/performance.md). Scrambled by a multiplication, not
    hashed: the floor does none of the stages' work."""
    return format(position * _SCATTER % 2**128, "032x")


def phase_io_floor(url: str) -> dict[str, Any]:
    """The reads and writes the two assets cannot avoid, and nothing else: the query streamed in
    chunks, every row written to outbound_audience as returned under a key like the stages'
    (`_scattered_key`), in the stages' transactions (StageWrites), then read back and one row per
    opted-in customer written to outbound_messages. No phone parsing, verdict, rendering or
    check. Through each engine's bulk path, as the stages: on DuckDB, Arrow record batches read,
    made tuples (`rows_of`) and the rows packed as batches again (`StageWrites.pack`): Python
    values both ways, as a worker's part in the stages (which now goes column by column:
    `every_column`, `StageWrites.pack_columns`, a little cheaper; the floor is kept as it was
    measured).

    Rows are lists in column order, written under the stages' collector settings
    (`collector.bulk_work`: the heap set aside, young collections rare): a list, unlike a dict of
    plain values, is tracked by the collector, whose full collections would otherwise walk the
    whole heap (3-7 s more at a million customers, docs/performance.md). Floors measured before
    the young threshold was raised (2026-12-05, 07:10 UTC) are 1-3 s slower for it."""
    import sqlalchemy as sa

    from outbound_pipeline.audience import audience_sql
    from outbound_pipeline.audience.extraction import ROW_COLUMNS as AUDIENCE_COLUMNS
    from outbound_pipeline.messages.rendering import AUDIENCE_COLUMNS_READ
    from outbound_pipeline.messages.rendering import ROW_COLUMNS as MESSAGE_COLUMNS
    from outbound_pipeline.warehouse import (
        StageWrites,
        WarehouseResource,
        audience,
        messages,
        rows_of,
    )

    config = bench_config()
    campaign = config.campaign(CAMPAIGN_KEY)
    engine = WarehouseResource(url=url).open()
    sql = audience_sql(campaign, config, engine.dialect)
    baseline = current_rss_mb()
    started = time.perf_counter()
    written = 0
    # Read as the stages read (warehouse.query_chunks), each value taken by position.
    params = {"outbound_consent_category": campaign.consent_category}
    with _streamed(engine, sa.text(sql), params) as (query, write):
        at = {name: i for i, name in enumerate(query.names)}
        position, customer, phone, country, first_name, status, updated = (
            at[name]
            for name in (
                "outbound_position",
                "customer_id",
                "phone",
                "country",
                "first_name",
                "outbound_consent_status",
                "outbound_consent_updated_at",
            )
        )
        # Every column the stages write, their rows as lists in the order of their ROW_COLUMNS.
        writes = StageWrites(write, audience, AUDIENCE_COLUMNS)
        for chunk in query.chunks:
            rows = [
                [
                    CAMPAIGN_KEY,
                    DAY,
                    _scattered_key(r[position]),
                    r[position],
                    r[customer],
                    r[phone],
                    r[phone],
                    r[country],
                    r[status],
                    # Text, as the stage writes it (an Arrow batch takes no datetime as text).
                    r[updated] and str(r[updated]),
                    campaign.consent_category,
                    None,
                    None,
                    True,
                    None,
                    r[first_name],
                    "floor",
                ]
                for r in rows_of(chunk)
            ]
            writes.add(writes.pack(rows))
            written += len(rows)
        writes.flush()
    a = audience.c
    select = sa.select(*(a[name] for name in AUDIENCE_COLUMNS_READ)).where(
        a.campaign_key == CAMPAIGN_KEY, a.partition_date == DAY, a.consent_status == "opted_in"
    )
    with _streamed(engine, select.order_by(a.row_number), {}) as (query, write):
        writes = StageWrites(write, messages, MESSAGE_COLUMNS)
        for chunk in query.chunks:
            rows = [
                [
                    CAMPAIGN_KEY,
                    DAY,
                    row_key,
                    customer_id,
                    recipient or "",
                    "floor",
                    "fr",
                    "UTILITY",
                    variant,
                    None,
                    fields_json,
                    fields_json,
                    True,
                    None,
                    "floor",
                ]
                for row_key, customer_id, recipient, fields_json, variant in rows_of(chunk)
            ]
            writes.add(writes.pack(rows))
        writes.flush()
    seconds = time.perf_counter() - started
    # Leave the tables as the pipeline phase expects to find them: without this day.
    with engine.begin() as conn:
        conn.execute(
            sa.delete(messages).where(
                messages.c.campaign_key == CAMPAIGN_KEY, messages.c.partition_date == DAY
            )
        )
        conn.execute(
            sa.delete(audience).where(a.campaign_key == CAMPAIGN_KEY, a.partition_date == DAY)
        )
    if engine.dialect.name == "postgresql":
        # And as the floor found them: without its deleted rows, which PostgreSQL keeps until a
        # vacuum (autovacuum may be off or not come by in time), and whose keys every insert of
        # the pipeline would check against them: a handicap the floor itself did not have.
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            for table in (audience, messages):
                conn.exec_driver_sql(f"VACUUM {table.name}")
    engine.dispose()
    return {
        "seconds": round(seconds, 2),
        "rows": written,
        "peak_rss_mb": peak_rss_mb(),
        "cpu_seconds": cpu_seconds(),
        "rss_after_imports_mb": baseline,
    }


@contextlib.contextmanager
def _streamed(engine: Any, statement: Any, params: dict[str, Any]) -> Iterator[tuple[Any, Any]]:
    """A stage's read streamed as the stages stream it (warehouse.query_chunks), under
    their collector settings (collector.bulk_work), and a write connection beside it."""
    from outbound_pipeline.audience import CHUNK_ROWS
    from outbound_pipeline.collector import bulk_work
    from outbound_pipeline.warehouse import query_chunks

    with bulk_work(), engine.connect() as read, engine.connect() as write:
        read = read.execution_options(read_only=True)
        with query_chunks(read, statement, params, CHUNK_ROWS) as query:
            yield query, write
