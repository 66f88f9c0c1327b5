"""One message per phone, and per customer, per campaign and day: the later audience rows of a
phone or customer already eligible are skipped as duplicates.

Where the warehouse compares text byte for byte (SQLite, PostgreSQL: warehouse.compares_text_exactly)
and the day's columns fit in GATHERED_BYTES_MAX, the later rows are told from the rows as the stage
wrote them (DuplicateColumns); elsewhere by two window queries over the stored day, as SQL compares
(a collation may fold case), in memory that stays flat whatever the day's size."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import sqlalchemy as sa

from outbound_pipeline.audience.rows import ROW_COLUMNS
from outbound_pipeline.outcomes import Reason
from outbound_pipeline.warehouse import (
    Chunk,
    audience,
    compares_text_exactly,
    key_lists,
    partition_rows,
    reading,
)

# Where ROW_COLUMNS has the columns that tell a written row's duplicates.
_KEY, _RECIPIENT, _CUSTOMER, _ELIGIBLE = (
    ROW_COLUMNS.index(c) for c in ("row_key", "recipient", "customer_id", "eligible")
)
# A row key (audience.query.row_key: 32 lower-case hexadecimal digits) held as its 16 bytes.
_KEY_TYPE = pa.binary(16)
# The most bytes of columns DuplicateColumns keeps: about 2 million rows of the benchmark's (50-60
# bytes each: 16 for the key, a phone, a short ID), fewer of long IDs. A larger day is left to the
# window queries, whose memory is the warehouse's.
GATHERED_BYTES_MAX = 128 * 2**20
# The two passes, in this order: a customer's rows are those left eligible by the phones' pass.
_PASSES = (("recipient", Reason.DUPLICATE_RECIPIENT), ("customer_id", Reason.DUPLICATE_CUSTOMER))


class DuplicatesNotMarked(RuntimeError):
    """Fewer later rows were marked than the stage found: the day's rows changed meanwhile."""


def duplicate_columns(columns: Sequence[Sequence[Any]]) -> pa.RecordBatch:
    """A chunk's row keys, recipients and customer IDs (of `columns`, in ROW_COLUMNS' order), as
    DuplicateColumns keeps them, made where its rows are made (a worker) rather than by the stage
    process, which sets the pace on SQLite (0.5 s a million rows)."""
    return pa.record_batch(
        [
            pa.array([bytes.fromhex(key) for key in columns[_KEY]], _KEY_TYPE),
            pa.array(columns[_RECIPIENT], pa.string()),
            pa.array(columns[_CUSTOMER], pa.string()),
        ],
        names=["key", "recipient", "customer"],
    )


class DuplicateColumns:
    """What tells the duplicates among the rows a stage writes (their key, recipient, customer ID
    and eligibility), gathered as it writes them, in the query's order, as Arrow arrays: 50-60
    bytes a row, up to `max_bytes` of them (beyond, or given a chunk without them: `complete` is
    False, and nothing is kept).

    A million-customer day's two window queries (sorts of the day's rows in the warehouse) took
    2.4 s on SQLite, on the stage's critical path; telling the later rows from these, by sorting
    them (Arrow), 0.25-0.8 s."""

    def __init__(self, max_bytes: int = GATHERED_BYTES_MAX) -> None:
        self._max_bytes = max_bytes
        self._rows = 0
        self._bytes = 0
        self._keys: list[pa.Array] = []
        self._recipients: list[pa.Array] = []
        self._customers: list[pa.Array] = []
        self._eligible: list[np.ndarray] = []
        self.complete = True

    def add(self, rows: Chunk | Sequence[Sequence[Any]], columns: pa.RecordBatch | None) -> None:
        """Rows as the stage writes them (ROW_COLUMNS: lists, or a record batch), after the
        suppression list changed any, and their `duplicate_columns` (which it leaves as they
        were)."""
        if columns is None:  # a chunk not told: the window queries will tell the day's
            self._let_go()
            return
        if isinstance(rows, pa.RecordBatch):
            eligible = rows.column(_ELIGIBLE).to_numpy(zero_copy_only=False)
        else:
            eligible = np.fromiter((row[_ELIGIBLE] for row in rows), bool, len(rows))
        if len(eligible) != columns.num_rows:
            raise ValueError(f"{len(eligible)} rows told by {columns.num_rows} rows' columns")
        self._rows += len(eligible)
        self._bytes += columns.nbytes + len(eligible)
        if self._bytes > self._max_bytes:
            self._let_go()
        if not self.complete:
            return
        self._keys.append(columns.column(0))
        self._recipients.append(columns.column(1))
        self._customers.append(columns.column(2))
        self._eligible.append(eligible.astype(bool))

    @property
    def rows(self) -> int:
        """The rows given (`add`), kept or not."""
        return self._rows

    def later_rows(self) -> dict[Reason, list[str]]:
        """The keys of the eligible rows whose recipient an earlier eligible row already has
        (duplicate_recipient), then of those left eligible whose customer ID an earlier one has
        (duplicate_customer). Values compare as written, byte for byte; a row without one (null)
        is nobody's duplicate. Once only: each column is let go as it is read."""
        if not self.complete:
            raise RuntimeError("the rows' columns were let go (too many rows, or read already)")
        still = np.concatenate(self._eligible) if self._eligible else np.zeros(0, dtype=bool)
        later_recipient = _later(self._recipients, still)
        still &= ~later_recipient
        later_customer = _later(self._customers, still)
        keys = pa.chunked_array(self._keys, _KEY_TYPE)
        self._let_go()
        return {
            reason: [key.hex() for key in keys.filter(pa.array(later)).to_pylist()]
            for reason, later in (
                (Reason.DUPLICATE_RECIPIENT, later_recipient),
                (Reason.DUPLICATE_CUSTOMER, later_customer),
            )
        }

    def _let_go(self) -> None:
        self.complete = False
        for gathered in (self._keys, self._recipients, self._customers, self._eligible):
            gathered.clear()


def _later(chunks: list[pa.Array], among: np.ndarray) -> np.ndarray:
    """Which rows hold a value (not null) that an earlier row of `among` holds, themselves among.
    `chunks` (the values in order) is emptied: each is let go once copied into one array."""
    import pyarrow.compute as pc  # 30 ms that loading the definitions need not pay

    values = pa.concat_arrays(chunks) if chunks else pa.array([], pa.string())
    chunks.clear()
    rows = np.flatnonzero(among & values.is_valid().to_numpy(zero_copy_only=False))
    theirs = values.take(rows)
    del values
    later = np.zeros(len(among), dtype=bool)
    if len(theirs) < 2:
        return later
    # A stable sort keeps each value's rows in their order: every one after its first is later.
    # (Sorted, not hashed: a hash table of a million texts held 70 MB more at its peak.)
    order = pc.sort_indices(theirs).to_numpy()
    ordered = theirs.take(order)
    repeated = pc.equal(ordered.slice(1), ordered.slice(0, len(ordered) - 1))
    later[rows[order[1:][repeated.to_numpy(zero_copy_only=False)]]] = True
    return later


def mark_duplicates(
    engine: sa.Engine,
    campaign_key: str,
    partition_date: str,
    gathered: DuplicateColumns | None = None,
) -> dict[str, int]:
    """One message per phone, and per customer, per campaign and day: the first eligible row (in
    query order) keeps it, the later ones are skipped as duplicate_recipient or duplicate_customer;
    told from `gathered` (the day's rows as the stage wrote them) when it is complete, else by
    window queries over the stored day.

    A customer ID returned with two different phones is a data problem (which number did the
    customer opt in with?): sending to both could reach someone who never consented.
    """
    # Told from the rows as written where the table holds those rows and no other (not so when a
    # run of the same day wrote at the same time: the window queries then tell what it holds).
    if (
        gathered is not None
        and gathered.complete
        and compares_text_exactly(engine.dialect)
        and _day_rows(engine, campaign_key, partition_date) == gathered.rows
    ):
        found = gathered.later_rows()
        marked = {}
        for _, reason in _PASSES:
            marked[reason.value] = _mark(
                engine, campaign_key, partition_date, found[reason], reason
            )
            if marked[reason.value] != len(found[reason]):
                # A row no longer there or no longer eligible: the day was rewritten meanwhile.
                raise DuplicatesNotMarked(
                    f"campaign {campaign_key}: {len(found[reason])} rows of {partition_date} are "
                    f"{reason.value}, {marked[reason.value]} of them were marked: the day's "
                    "audience changed while its duplicates were marked (a run of the same day "
                    "at the same time?); nothing was sent, run the day again"
                )
        return marked
    return {
        reason.value: _mark(
            engine,
            campaign_key,
            partition_date,
            _later_rows(engine, campaign_key, partition_date, column),
            reason,
        )
        for column, reason in _PASSES
    }


def _day_rows(engine: sa.Engine, campaign_key: str, partition_date: str) -> int:
    a = audience.c
    with reading(engine) as conn:
        return partition_rows(
            conn,
            audience,
            sa.and_(a.campaign_key == campaign_key, a.partition_date == partition_date),
        )


def _later_rows(
    engine: sa.Engine, campaign_key: str, partition_date: str, column: str
) -> list[str]:
    """Row keys of the eligible rows whose `column` value an earlier eligible row already has."""
    # One window query (a sort: O(n log n)) lists the later rows, updated by key after. An UPDATE
    # ... WHERE row_key IN (window subquery) lets the planner pick a nested loop over a freshly
    # filled table (no statistics yet): quadratic, seconds at 2,000 rows.
    a = audience
    ranked = (
        sa.select(
            a.c.row_key,
            sa.func.row_number()
            .over(partition_by=a.c[column], order_by=a.c.row_number)
            .label("occurrence"),
        )
        .where(
            a.c.campaign_key == campaign_key,
            a.c.partition_date == partition_date,
            a.c.eligible == sa.true(),
            a.c[column].is_not(None),
        )
        .subquery("ranked")
    )
    with reading(engine) as conn:
        return list(
            conn.execute(sa.select(ranked.c.row_key).where(ranked.c.occurrence > 1)).scalars()
        )


def _mark(
    engine: sa.Engine, campaign_key: str, partition_date: str, later: list[str], reason: Reason
) -> int:
    # Updated by primary key in lists sized for the dialect (one on DuckDB, where each statement
    # scans the day).
    a = audience
    marked = 0
    # The campaign, the day and the two values set are parameters too.
    for batch in key_lists(engine.dialect, later, others=4):
        with engine.begin() as conn:
            marked += conn.execute(
                sa.update(a)
                .where(
                    a.c.campaign_key == campaign_key,
                    a.c.partition_date == partition_date,
                    a.c.row_key.in_(batch),
                    a.c.eligible == sa.true(),
                )
                .values(eligible=False, reason=reason.value)
            ).rowcount
    return marked
