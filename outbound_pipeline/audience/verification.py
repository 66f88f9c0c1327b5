"""The audience's blocking checks' work on the stored rows, in plain code, a chunk at a time: each
stored recipient confirmed by libphonenumber's metadata, by code of its own (`phone_columns`: what
it shares with extraction's reading of the numbers written in E.164 is said there)."""

from __future__ import annotations

import bisect
import operator
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from outbound_pipeline.warehouse import Chunk

# Offending rows a check shows (its metadata): enough to find the cause, never the whole day.
SAMPLE_ROWS = 10


@dataclass
class Findings:
    """The rows a check found: how many, and the first SAMPLE_ROWS of them: in the order they
    came, or, with `order` (a field of each row), those first by it whatever order they came in
    (a query that need not sort every row to show ten)."""

    total: int = 0
    sample: list[dict[str, Any]] = field(default_factory=list)
    order: str | None = None

    def add(self, row: dict[str, Any]) -> None:
        self.total += 1
        if self.order is not None:
            bisect.insort(self.sample, row, key=operator.itemgetter(self.order))
            del self.sample[SAMPLE_ROWS:]
        elif len(self.sample) < SAMPLE_ROWS:
            self.sample.append(row)

    def merge(self, later: Findings) -> None:
        """Add the findings of more rows: those that came after these, without `order`."""
        if later.order != self.order:
            raise ValueError(f"findings kept by {later.order!r} merged into ones by {self.order!r}")
        if self.order is None:
            self.total += later.total
            self.sample.extend(later.sample[: SAMPLE_ROWS - len(self.sample)])
            return
        self.total += later.total - len(later.sample)
        for row in later.sample:
            self.add(row)


def invalid_recipients(chunk: Chunk) -> Findings:
    """Of rows (row_number, recipient) in any order (tuples, or an Arrow record batch of the two
    columns), those whose recipient is not a valid number written in E.164, as
    {"row_number": ..., "recipient": ...}, the first by row number.

    libphonenumber's validation of the whole chunk at once (`whatsapp.phone_columns`: its own
    reading of the metadata, apart from extraction's but for what that module says they share):
    the same bar, 13-14 times cheaper than a number at a time, so a day's check needs no worker
    processes."""
    # Imported here: pyarrow.compute is 30 ms that loading the definitions need not pay.
    from outbound_pipeline.whatsapp.phone_columns import valid_e164

    if isinstance(chunk, pa.RecordBatch):
        recipients = chunk.column(1)
    else:
        # A value that is not text (stored by another writer) is no number: found as invalid.
        recipients = pa.array([r if isinstance(r, str) else None for _, r in chunk], pa.string())
    found = Findings(order="row_number")
    for i, valid in enumerate(valid_e164(recipients).to_pylist()):
        if not valid:
            row_number, recipient = _row(chunk, i)
            found.add({"row_number": row_number, "recipient": recipient})
    return found


def prepare_phone_checks() -> None:
    """Import what `invalid_recipients` needs, ahead of it (on a thread while the stage streams
    its rows): pyarrow.compute, and pandas, which pyarrow imports for its first array of Python
    values (0.6 s of a million-customer day's audience checks on SQLite, where nothing else had
    imported it)."""
    invalid_recipients([])


def _row(chunk: Chunk, i: int) -> tuple[Any, Any]:
    if isinstance(chunk, pa.RecordBatch):
        return chunk.column(0)[i].as_py(), chunk.column(1)[i].as_py()
    return tuple(chunk[i])
