"""The row-by-row part of the audience's blocking checks, in plain code that a worker process runs
on a chunk (outbound_pipeline.workers): each stored recipient confirmed by libphonenumber,
independently of the code that wrote it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from outbound_pipeline.whatsapp import is_valid_e164

# Offending rows a check shows (its metadata): enough to find the cause, never the whole day.
SAMPLE_ROWS = 10


@dataclass
class Findings:
    """The rows a check found: how many, and the first SAMPLE_ROWS of them in the query's order."""

    total: int = 0
    sample: list[dict[str, Any]] = field(default_factory=list)

    def add(self, row: dict[str, Any]) -> None:
        self.total += 1
        if len(self.sample) < SAMPLE_ROWS:
            self.sample.append(row)

    def merge(self, later: Findings) -> None:
        """Add the findings of the rows that come after these."""
        self.total += later.total
        self.sample.extend(later.sample[: SAMPLE_ROWS - len(self.sample)])


def invalid_recipients(chunk: Sequence[Sequence[Any]], start: int = 0) -> Findings:
    """Of rows (row_number, recipient), those whose recipient is not a valid number written in
    E.164, as {"row_number": ..., "recipient": ...}."""
    found = Findings()
    for row_number, recipient in chunk:
        if not is_valid_e164(recipient):
            found.add({"row_number": row_number, "recipient": recipient})
    return found
