"""One message per phone, and per customer, per campaign and day: the later audience rows of a
phone or customer already eligible are skipped as duplicates."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import sqlalchemy as sa

from outbound_pipeline.audience.rows import ROW_COLUMNS
from outbound_pipeline.outcomes import Reason
from outbound_pipeline.warehouse import Chunk, audience, key_lists

# Where ROW_COLUMNS has the columns that tell a written row's duplicates.
_KEY, _RECIPIENT, _CUSTOMER, _ELIGIBLE = (
    ROW_COLUMNS.index(c) for c in ("row_key", "recipient", "customer_id", "eligible")
)
# A row key (audience.query.row_key: 32 hexadecimal digits) held as its 16 bytes.
_KEY_TYPE = pa.binary(16)


def told_by(columns: Sequence[Sequence[Any]], packed: Any) -> pa.RecordBatch:
    """A chunk's row keys, recipients and customer IDs (of `columns`, in ROW_COLUMNS' order), as
    `WrittenRows.add` keeps them, made where its rows are made (a worker) rather than by the stage
    process, which sets the pace on SQLite (0.5 s a million rows): the recipients and IDs taken
    from `packed` where it is a record batch (DuckDB), which has them."""
    keys = pa.array([bytes.fromhex(key) for key in columns[_KEY]], _KEY_TYPE)
    if isinstance(packed, pa.RecordBatch):
        recipients, customers = packed.column(_RECIPIENT), packed.column(_CUSTOMER)
    else:
        recipients = pa.array(columns[_RECIPIENT], pa.string())
        customers = pa.array(columns[_CUSTOMER], pa.string())
    return pa.record_batch([keys, recipients, customers], names=["key", "recipient", "customer"])


class WrittenRows:
    """What tells the duplicates among the rows a stage writes (their key, recipient, customer ID
    and eligibility), gathered as it writes them, in the query's order, as Arrow arrays: 50-60
    bytes a row, where the rows' Python values take hundreds.

    A million-customer day's two window queries (sorts of the day's rows in the warehouse) took
    2.4 s on SQLite, on the stage's critical path; gathering these as the rows pass, then telling
    the later rows by sorting them (Arrow), well under a second."""

    def __init__(self) -> None:
        self._keys: list[pa.Array] = []
        self._recipients: list[pa.Array] = []
        self._customers: list[pa.Array] = []
        self._eligible: list[np.ndarray] = []

    def add(self, rows: Chunk | Sequence[Sequence[Any]], told: pa.RecordBatch) -> None:
        """Rows as the stage writes them (ROW_COLUMNS: lists, or a record batch), after the
        suppression list changed any, and their columns `told_by` (which it leaves as they
        were)."""
        if isinstance(rows, pa.RecordBatch):
            eligible = rows.column(_ELIGIBLE).to_numpy(zero_copy_only=False)
        else:
            eligible = np.fromiter((row[_ELIGIBLE] for row in rows), bool, len(rows))
        if len(eligible) != told.num_rows:
            raise ValueError(f"{len(eligible)} rows told by {told.num_rows} rows' columns")
        self._keys.append(told.column(0))
        self._recipients.append(told.column(1))
        self._customers.append(told.column(2))
        self._eligible.append(eligible.astype(bool))

    def later_rows(self) -> dict[Reason, list[str]]:
        """The keys of the eligible rows whose recipient an earlier eligible row already has
        (duplicate_recipient), then of those left eligible whose customer ID an earlier one has
        (duplicate_customer). Values compare as written, byte for byte; a row without one (null)
        is nobody's duplicate. Once only: each column is let go as it is read."""
        still = np.concatenate(self._eligible) if self._eligible else np.zeros(0, dtype=bool)
        later_recipient = _later(self._recipients, still)
        still &= ~later_recipient
        later_customer = _later(self._customers, still)
        keys = pa.chunked_array(self._keys, _KEY_TYPE)
        return {
            reason: [key.hex() for key in keys.filter(pa.array(later)).to_pylist()]
            for reason, later in (
                (Reason.DUPLICATE_RECIPIENT, later_recipient),
                (Reason.DUPLICATE_CUSTOMER, later_customer),
            )
        }


def _later(chunks: list[pa.Array], among: np.ndarray) -> np.ndarray:
    """Which rows hold a value (not null) that an earlier row of `among` holds, themselves among.
    `chunks` (the values in order) is emptied: each is let go once copied into one array."""
    import pyarrow.compute as pc  # 30 ms that loading the definitions need not pay

    values = pa.concat_arrays(chunks) if chunks else pa.array([], pa.string())
    chunks.clear()
    rows = np.flatnonzero(among & values.is_valid().to_numpy(zero_copy_only=False))
    theirs = values.take(rows)
    del values
    # A stable sort keeps each value's rows in their order: every one after its first is later.
    # (Sorted, not hashed: a hash table of a million texts held 70 MB more at its peak.)
    later = np.zeros(len(among), dtype=bool)
    if len(theirs) < 2:
        return later
    order = pc.sort_indices(theirs).to_numpy()
    ordered = theirs.take(order)
    repeated = pc.equal(ordered.slice(1), ordered.slice(0, len(ordered) - 1))
    later[rows[order[1:][repeated.to_numpy(zero_copy_only=False)]]] = True
    return later


def mark_duplicates(
    engine: sa.Engine, campaign_key: str, partition_date: str, written: WrittenRows
) -> dict[str, int]:
    """One message per phone, and per customer, per campaign and day: the first eligible row (in
    query order) keeps it, the later ones are skipped as duplicate_recipient or duplicate_customer
    (`written`: the day's rows as the stage wrote them).

    A customer ID returned with two different phones is a data problem (which number did the
    customer opt in with?): sending to both could reach someone who never consented.
    """
    return {
        reason.value: _mark(engine, campaign_key, partition_date, keys, reason)
        for reason, keys in written.later_rows().items()
    }


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
