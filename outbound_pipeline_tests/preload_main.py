"""A program for `test_audience_workers`, run as `python -m outbound_pipeline_tests.preload_main`:
prints, for each chunk done on the pool, which process imported this module's imports (the
`preload_stamp` module notes its importer) and which worker did the chunk."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence

from outbound_pipeline_tests import preload_stamp


def importer_and_worker(chunk: Sequence[int], start: int) -> tuple[int, int]:
    return preload_stamp.IMPORTED_BY, os.getpid()


if __name__ == "__main__":
    from outbound_pipeline.workers import in_order

    print(json.dumps(list(in_order(importer_and_worker, [[1]] * 4, parallel_from=0))))
