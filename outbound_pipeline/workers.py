"""The stages' CPU work on every core: the audience's phone parsing, verdicts and JSON, the messages'
rendering and WhatsApp rules, done chunk by chunk by a pool of worker processes while this process
reads the next chunks and writes the finished ones, in the query's order. The workers run at a
lower priority than this process (WORKER_NICENESS), whose reads and writes set the pace.

A small day never starts the pool: a worker's start costs more than it saves. Once started, the pool
serves every later stage of the process (a run's audience, then its messages)."""

from __future__ import annotations

import atexit
import concurrent.futures
import contextlib
import logging
import multiprocessing
import os
import sys
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import TypeVar

from outbound_pipeline import collector
from outbound_pipeline.warehouse import Chunk

T = TypeVar("T")
# Rows done in this process before chunks go to the pool (a day below it never starts one).
PARALLEL_FROM_ROWS = 20_000
# From a first full chunk on, the pool starts while this process goes on with the next chunks.
WARM_FROM_ROWS = 5_000
MAX_WORKERS = 4
# Chunks in flight per worker (the one it works on and those waiting for it): while this process
# commits a stage's transaction (0.7 s on SQLite) the workers go on with them instead of standing
# idle (one per worker before).
CHUNKS_AHEAD = 4
# What the worker processes run, imported once by the fork server before any worker is forked.
PRELOAD = ("outbound_pipeline.audience", "outbound_pipeline.messages")
# The workers' niceness: they yield the cores to the stage process, which reads and writes every
# row and sets the pace on SQLite (a million-customer day 46.8-48.2 s against 49.3-50.9 s, run
# alternately three times; PostgreSQL 39.7 against 41.8 s once).
WORKER_NICENESS = 10
# The program's main module, for outbound_pipeline.workers_preload to import in the fork server.
MAIN_MODULE_VARIABLE = "OUTBOUND_WORKERS_MAIN_MODULE"

_log = logging.getLogger(__name__)
_pool: ProcessPoolExecutor | None = None
# The pool's start under way in a thread (ready_pool), or how it failed; None once it is started.
_starting: Future[ProcessPoolExecutor] | None = None
_pool_lock = threading.Lock()


def worker_count() -> int:
    return max(1, min(os.cpu_count() or 1, MAX_WORKERS))


def shared_pool(workers: int) -> ProcessPoolExecutor:
    """The process's pool of `workers` processes, started on first use and shut down at exit;
    returns once its workers can take work.

    Its workers are forked from a fork server (where there is one: not on Windows) that imported
    PRELOAD once, instead of each worker importing them afresh (2 s of CPU each, Dagster
    included); never forked from this process, whose threads (Dagster's) may hold locks."""
    while (pool := ready_pool(workers)) is None:
        with _pool_lock:
            starting = _starting
        if starting is not None:
            concurrent.futures.wait([starting])
    return pool


def ready_pool(workers: int) -> ProcessPoolExecutor | None:
    """The shared pool if its workers can take work; else None, its start under way in a thread.

    The fork server's imports take a second or two, which the caller spends on its next chunks
    instead of waiting (in_order). A start that failed is raised once, to the next caller; the
    call after starts the pool again."""
    global _starting
    with _pool_lock:
        if _pool is not None:
            return _pool
        if _starting is None:
            _starting = Future()
            # Not a daemon: a process that ends meanwhile waits for the start, as it waited
            # before; a daemon's fork server would fork workers whose locks exit removed.
            threading.Thread(
                target=_start,
                # Read here, not in the thread: it sets an environment variable.
                args=(workers, preloaded_modules(), _starting),
                name="outbound-workers-start",
            ).start()
            return None
        if not _starting.done():
            return None
        failed, _starting = _starting, None
    return failed.result()  # raises: a start that succeeded left no Future behind


def _start(workers: int, preload: list[str], starting: Future[ProcessPoolExecutor]) -> None:
    global _pool, _starting
    try:
        if "forkserver" in multiprocessing.get_all_start_methods():
            context = multiprocessing.get_context("forkserver")
            context.set_forkserver_preload(preload)
        else:
            context = multiprocessing.get_context("spawn")
        pool = ProcessPoolExecutor(workers, mp_context=context, initializer=_start_worker)
        atexit.register(pool.shutdown, wait=False, cancel_futures=True)
        # The executor starts one worker per task waiting; each start waits for the fork server.
        for _ in range(workers):
            pool.submit(int)
    except Exception as exc:  # raised to the next caller (ready_pool)
        starting.set_exception(exc)
        return
    with _pool_lock:
        _pool, _starting = pool, None
    starting.set_result(pool)  # for shared_pool, waiting on it


def _start_worker() -> None:
    collector.start_worker()
    # Not on Windows; a refusal (a sandbox without the call) leaves the workers as they are.
    with contextlib.suppress(AttributeError, OSError):
        os.nice(WORKER_NICENESS)


def preloaded_modules() -> list[str]:
    """What the fork server imports before it forks a worker: PRELOAD, after the program's main
    module.

    Each worker runs the main module again as `__mp_main__` (functions defined there must
    unpickle); imported by the fork server first, its own imports are done once, not by every
    worker (about a second of CPU each for the benchmarks'):
    - started as `python -m package.module`: imported by `outbound_pipeline.workers_preload`,
      named in MAIN_MODULE_VARIABLE (Python's "__main__" preload does nothing before 3.13.8: its
      fork server is not told the main module);
    - a script started by its path: "__main__", Python's own preload;
    - a `__main__` module (`python -m dagster`, how Dagster launches runs): never run again."""
    main = sys.modules.get("__main__")
    name = getattr(getattr(main, "__spec__", None), "name", None)
    if name is None:
        return ["__main__", *PRELOAD]
    if name == "__main__" or name.endswith(".__main__"):
        return list(PRELOAD)
    os.environ[MAIN_MODULE_VARIABLE] = name  # read by the fork server as it starts
    return ["outbound_pipeline.workers_preload", *PRELOAD]


def _forget(pool: ProcessPoolExecutor | None) -> None:
    global _pool
    with _pool_lock:
        if pool is not None and pool is _pool:
            _pool = None


def in_order(
    work: Callable[[Chunk, int], T],
    chunks: Iterable[Chunk],
    parallel_from: int = PARALLEL_FROM_ROWS,
) -> Iterator[T]:
    """`work(chunk, start)` of each chunk (`start`: its first row number), yielded in the
    chunks' order. A chunk is a sequence of rows, or an Arrow record batch
    (warehouse.query_chunks) that the work makes rows or columns of where it runs
    (warehouse.rows_of, warehouse.every_column). From `parallel_from` rows on, on a pool of
    processes (`work` and the chunks must pickle) once it has started (ready_pool: the chunks
    are done here meanwhile), at most CHUNKS_AHEAD chunks per worker ahead of the caller, so
    memory stays bounded."""
    workers = worker_count()
    pending: deque[Future[T]] = deque()
    pool: ProcessPoolExecutor | None = None
    pooled = workers > 1
    start = 0
    with collector.bulk_work():
        try:
            for chunk in chunks:
                if pool is None and pooled and start >= min(parallel_from, WARM_FROM_ROWS):
                    try:
                        pool = ready_pool(workers)  # None while it starts: chunks done here
                    except Exception as exc:  # no workers (a fork refused...): done here alone
                        _log.warning("The stage's worker processes could not start: %s", exc)
                        pooled = False
                if pool is None or start < parallel_from:
                    yield work(chunk, start)
                else:
                    pending.append(pool.submit(work, chunk, start))
                    while len(pending) > workers * CHUNKS_AHEAD:
                        yield pending.popleft().result()
                start += len(chunk)
            while pending:
                yield pending.popleft().result()
        except BrokenProcessPool:
            # A worker died (killed, out of memory): this stage fails, the next starts a new pool.
            _forget(pool)
            raise
        finally:
            # Stopped early (an error in the caller): nothing of this call left running in the pool.
            for future in pending:
                future.cancel()
            concurrent.futures.wait(pending)
