"""A program for `test_audience_workers`, run as
`python -m outbound_pipeline_tests.preload_main <word>`: prints, for each chunk done on the pool,
which process imported this module's imports (the `preload_stamp` module notes its importer), which
worker did the chunk, and the word this module read from its command line as it was imported."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence

from outbound_pipeline_tests import preload_stamp

# Read as the module is imported: the fork server, which imports it first, has no command line.
WORD = sys.argv[1]


def importer_worker_and_word(chunk: Sequence[int], start: int) -> tuple[int, int, str]:
    return preload_stamp.IMPORTED_BY, os.getpid(), WORD


if __name__ == "__main__":
    from outbound_pipeline.workers import in_order

    print(json.dumps(list(in_order(importer_worker_and_word, [[1]] * 4, parallel_from=0))))
