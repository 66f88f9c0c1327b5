"""The suppression list as the rest of the pipeline reads it: which phones of a batch are on it
(extraction), and its copy in the warehouse for the brand's CRM (`outbound_suppression_list`).

The list itself lives in the state store (`outbound_pipeline.unsubscribe`), where the endpoint and
the CLI write it and the claim reads it in the transaction that decides a send.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence

import sqlalchemy as sa

from outbound_pipeline.unsubscribe import is_suppressed, list_suppressions, suppressed_if_at_most
from outbound_pipeline.warehouse import reading, suppression_list, upsert_rows

# Rows a publication writes per statement.
_CHUNK = 5000
# A list of up to this many phones is read whole by an extraction's first chunk and kept (some
# 10 MB at most); a longer one is asked chunk by chunk. A million-customer audience asked 200
# times for some 4,000 phones each: 2 s of the stage process's time (docs/performance.md).
WHOLE_LIST_MAX = 100_000


def suppressed_phones(
    state: sa.Engine, whole_list_max: int = WHOLE_LIST_MAX
) -> Callable[[Sequence[str]], set[str]]:
    """A function answering which of some phones are on the list: from the list as the first call
    with phones read it, whole, when it holds at most `whole_list_max` phones; else a short read
    each call.

    Read once, the list is a snapshot of the stage's first chunk with candidates, as the audience
    query's consents are one of its start; a phone suppressed after it is still stopped at its
    claim, which reads the list again."""
    whole: set[str] | None = None
    read_whole = False

    def suppressed(phones: Sequence[str]) -> set[str]:
        nonlocal whole, read_whole
        if not phones:
            return set()
        if not read_whole:
            read_whole = True  # once: if this read fails, the stage fails with it
            with reading(state) as conn:
                whole = suppressed_if_at_most(conn, whole_list_max)
        if whole is not None:
            return whole.intersection(phones)
        with reading(state) as conn:
            return is_suppressed(conn, phones)

    return suppressed


def publish_suppressions(state: sa.Engine, warehouse: sa.Engine, now: dt.datetime) -> int:
    """Replace the warehouse's copy of the list by the state store's (one warehouse transaction:
    a reader sees the old copy or the new one); the phones published.

    The copy holds full phone numbers: it is the brand's own warehouse, and its CRM needs them to
    stop its other channels too."""
    with reading(state) as conn:
        entries = list_suppressions(conn)
    rows = [
        {
            "phone": e.phone,
            "source": e.source,
            "suppressed_at": e.suppressed_at,
            "published_at": now,
        }
        for e in entries
    ]
    with warehouse.begin() as conn:
        conn.execute(sa.delete(suppression_list))
        for start in range(0, len(rows), _CHUNK):
            upsert_rows(conn, suppression_list, rows[start : start + _CHUNK])
    return len(rows)
