"""The audience's CPU work on every core: each chunk's phone parsing, verdicts and JSON
(libphonenumber alone costs about 17 us a row) done by a pool of worker processes while this
process reads the next chunks and writes the finished ones, in the query's order.

A small audience never starts the pool: a worker's start (its imports) costs more than it saves."""

from __future__ import annotations

import multiprocessing
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")
# Rows done in this process before the pool starts (a day below it never starts one).
PARALLEL_FROM_ROWS = 50_000
MAX_WORKERS = 4


def worker_count() -> int:
    return max(1, min(os.cpu_count() or 1, MAX_WORKERS))


def in_order(
    work: Callable[[list[dict[str, Any]], int], T],
    chunks: Iterable[list[dict[str, Any]]],
    parallel_from: int = PARALLEL_FROM_ROWS,
) -> Iterator[T]:
    """`work(chunk, start)` of each chunk (`start`: the chunk's first row number), yielded in the
    chunks' order. From `parallel_from` rows on, on a pool of processes (`work` must pickle), at
    most one chunk per worker ahead of the caller, so memory stays bounded."""
    workers = worker_count()
    pending: deque[Future[T]] = deque()
    pool: ProcessPoolExecutor | None = None
    start = 0
    try:
        for chunk in chunks:
            if pool is None and workers > 1 and start >= parallel_from:
                # spawn: a fork of a process running threads (Dagster's) may inherit held locks.
                context = multiprocessing.get_context("spawn")
                pool = ProcessPoolExecutor(workers, mp_context=context)
            if pool is None:
                yield work(chunk, start)
            else:
                pending.append(pool.submit(work, chunk, start))
                while len(pending) > workers:
                    yield pending.popleft().result()
            start += len(chunk)
        while pending:
            yield pending.popleft().result()
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
