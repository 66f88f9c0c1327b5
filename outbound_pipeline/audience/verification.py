"""The row-by-row part of the audience's blocking checks, in plain code that a worker process runs
on a chunk (outbound_pipeline.workers): each stored recipient confirmed by libphonenumber,
independently of the code that wrote it."""

from __future__ import annotations

import bisect
import operator
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from outbound_pipeline.whatsapp import is_valid_e164

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


def invalid_recipients(chunk: Sequence[Sequence[Any]], start: int = 0) -> Findings:
    """Of rows (row_number, recipient) in any order, those whose recipient is not a valid number
    written in E.164, as {"row_number": ..., "recipient": ...}, the first by row number."""
    found = Findings(order="row_number")
    for row_number, recipient in chunk:
        if not is_valid_e164(recipient):
            found.add({"row_number": row_number, "recipient": recipient})
    return found
