"""A program for `test_audience_workers`, run as
`python -m outbound_pipeline_tests.preload_main <word>`: chunks given to the pool from the first
one on, in a process that has no pool yet, until four were done on the pool. Prints its own process
ID and, for each chunk in the order they came back, which process imported this module's imports
(the `preload_stamp` module notes its importer), which process did the chunk, the word this module
read from its command line as it was imported, and the chunk's start."""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterator, Sequence

from outbound_pipeline_tests import preload_stamp

# Read as the module is imported: the fork server, which imports it first, has no command line.
WORD = sys.argv[1]


def importer_worker_and_word(chunk: Sequence[int], start: int) -> tuple[int, int, str, int]:
    return preload_stamp.IMPORTED_BY, os.getpid(), WORD, start


def chunks() -> Iterator[list[int]]:
    while True:  # as many as it takes: read at most 100 a second, as a query would give them
        time.sleep(0.01)
        yield [1]


if __name__ == "__main__":
    from outbound_pipeline.workers import in_order

    done: list[tuple[int, int, str, int]] = []
    for chunk in in_order(importer_worker_and_word, chunks(), parallel_from=0):
        done.append(chunk)
        if sum(worker != os.getpid() for _, worker, _, _ in done) == 4:
            break
    print(json.dumps({"pid": os.getpid(), "chunks": done}))
