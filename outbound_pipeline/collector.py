"""The garbage collector during bulk work.

CPython's collector walks every tracked object of a generation when it collects it. A Dagster
process holds some hundred thousand long-lived objects, and a stage keeps some hundred thousand rows
in flight (chunks read ahead, results not yet written). Left alone, the collector walks both over
and over: a stage's full collections walk the whole heap, and its young collections (by default
one every 700 new objects on CPython 3.11) move the rows in flight into older generations that are
walked again.

- `bulk_work`, for the stages' chunk loops (throughput): the heap alive when the loop starts is
  set aside (`gc.freeze`) and the young generation is collected only after BULK_YOUNG_THRESHOLD
  new objects, more than a stage ever holds in flight, so rows are freed by reference counting
  before the collector sees them.
- `heap_set_aside`, for the send loop (latency): only the heap is set aside; young collections stay
  small and frequent, as one of 200,000 objects would stall the calls for tens of milliseconds.
- `start_worker`, a stage worker process's initializer: `bulk_work`'s settings for its whole life.

Either way what the loop itself makes is still collected. Nested or concurrent uses, of either kind:
the heap is set aside by the first and put back by the last; the young threshold is raised while
any `bulk_work` runs. A program that froze objects itself keeps them frozen."""

from __future__ import annotations

import contextlib
import gc
import threading
from collections.abc import Iterator

# Young collections during bulk work: one after this many more tracked objects made than freed.
BULK_YOUNG_THRESHOLD = 200_000

_lock = threading.Lock()
_users = 0  # bulk_work and heap_set_aside under way in this process
_bulk_users = 0  # bulk_work alone
_froze = False
_thresholds: tuple[int, int, int] | None = None


@contextlib.contextmanager
def bulk_work() -> Iterator[None]:
    """The heap set aside and young collections rare while a stage's chunk loop runs."""
    with _set_up(bulk=True):
        yield


@contextlib.contextmanager
def heap_set_aside() -> Iterator[None]:
    """The heap set aside while the send loop runs (a full pass over a Dagster process's heap
    stops its event loop for a sixth of a second: 170 calls missed at 1,000 msg/s)."""
    with _set_up(bulk=False):
        yield


def start_worker() -> None:
    """A stage worker's initializer: what it inherited set aside, young collections rare, for good
    (a worker does nothing but bulk work)."""
    gc.freeze()
    _raise_young_threshold()


def _raise_young_threshold() -> tuple[int, int, int]:
    """Young collections after BULK_YOUNG_THRESHOLD new objects; the thresholds before."""
    before = gc.get_threshold()
    gc.set_threshold(BULK_YOUNG_THRESHOLD, *before[1:])
    return before


@contextlib.contextmanager
def _set_up(bulk: bool) -> Iterator[None]:
    global _users, _bulk_users, _froze, _thresholds
    with _lock:
        if _users == 0:
            _froze = gc.get_freeze_count() == 0
            if _froze:
                gc.freeze()
        _users += 1
        if bulk:
            if _bulk_users == 0:
                _thresholds = _raise_young_threshold()
            _bulk_users += 1
    try:
        yield
    finally:
        with _lock:
            if bulk:
                _bulk_users -= 1
                if _bulk_users == 0 and _thresholds is not None:
                    gc.set_threshold(*_thresholds)
                    _thresholds = None
            _users -= 1
            if _users == 0 and _froze:
                gc.unfreeze()
