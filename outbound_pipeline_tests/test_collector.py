"""The garbage collector during bulk work (`outbound_pipeline.collector`): the heap alive before a
loop set aside and young collections rare while a stage's chunks go through, put back after; the
send loop's young collections left small; cyclic garbage made during the loop still collected."""

from __future__ import annotations

import gc
import os
import threading
import weakref
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager

import pytest

from outbound_pipeline.collector import BULK_YOUNG_THRESHOLD, bulk_work, heap_set_aside
from outbound_pipeline.workers import in_order, shared_pool, worker_count


def _collector_state(chunk: list[int], start: int) -> tuple[int, int, int]:
    return gc.get_freeze_count(), gc.get_threshold()[0], os.getpid()


@pytest.fixture(autouse=True)
def _collector_as_it_was() -> Iterator[None]:
    # Nothing else in a test process freezes objects or changes the thresholds; each test leaves
    # the collector as it found it.
    before = gc.get_threshold()
    assert gc.get_freeze_count() == 0
    assert before[0] < BULK_YOUNG_THRESHOLD
    yield
    assert gc.get_freeze_count() == 0
    assert gc.get_threshold() == before


def test_a_stage_loop_sets_the_heap_aside_and_makes_young_collections_rare() -> None:
    # (Put back after it: checked by the fixture after every test.)
    states = list(in_order(_collector_state, [[1]] * 3, parallel_from=10**9))
    assert all(frozen > 0 and young == BULK_YOUNG_THRESHOLD for frozen, young, _ in states)


def test_nested_loops_put_the_collector_back_only_when_the_last_ends() -> None:
    with bulk_work():
        with bulk_work():
            pass
        assert gc.get_freeze_count() > 0  # still set aside: unfrozen, the count would be 0
        assert gc.get_threshold()[0] == BULK_YOUNG_THRESHOLD


def test_a_send_loop_and_a_stage_loop_together_whichever_starts_first() -> None:
    # The young threshold is raised while a stage loop runs, and only then; the heap stays set
    # aside until the last of the two ends.
    before = gc.get_threshold()
    with heap_set_aside():
        with bulk_work():
            assert gc.get_threshold()[0] == BULK_YOUNG_THRESHOLD
        assert gc.get_threshold() == before
        assert gc.get_freeze_count() > 0
    assert gc.get_freeze_count() == 0
    with bulk_work():
        with heap_set_aside():
            assert gc.get_threshold()[0] == BULK_YOUNG_THRESHOLD
        assert gc.get_freeze_count() > 0
        assert gc.get_threshold()[0] == BULK_YOUNG_THRESHOLD


def test_loops_on_several_threads_put_the_collector_back_when_the_last_ends() -> None:
    inside = threading.Barrier(4)
    leave = threading.Event()

    def loop(kind: Callable[[], AbstractContextManager[None]]) -> None:
        with kind():
            inside.wait(timeout=10)
            leave.wait(timeout=10)

    threads = [
        threading.Thread(target=loop, args=(kind,))
        for kind in (bulk_work, heap_set_aside, bulk_work)
    ]
    for thread in threads:
        thread.start()
    inside.wait(timeout=10)
    assert gc.get_freeze_count() > 0
    assert gc.get_threshold()[0] == BULK_YOUNG_THRESHOLD
    leave.set()
    for thread in threads:
        thread.join(timeout=10)


def test_a_loop_that_fails_puts_the_collector_back() -> None:
    with pytest.raises(RuntimeError), bulk_work():
        raise RuntimeError("a stage's error")


def test_a_program_that_froze_its_own_objects_keeps_them_frozen() -> None:
    # Frozen objects are in no generation gc.get_objects lists (the freeze count is no witness:
    # it falls whenever a frozen object is freed).
    mine = [object()]
    gc.freeze()
    try:
        with bulk_work():
            pass
        assert not any(o is mine for o in gc.get_objects())
    finally:
        gc.unfreeze()
    assert any(o is mine for o in gc.get_objects())


def test_the_send_loop_sets_the_heap_aside_but_keeps_young_collections_small() -> None:
    before = gc.get_threshold()
    with heap_set_aside():
        assert gc.get_freeze_count() > 0
        assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0


class _Node:
    def __init__(self) -> None:
        self.me = self  # a cycle: only the collector frees it


def test_cyclic_garbage_made_during_a_loop_is_still_collected() -> None:
    # Twice the young threshold of cycles made and dropped, no explicit gc.collect: the first is
    # freed by a collection during the loop (it would never be, were the collector switched off).
    with bulk_work():
        first = _Node()
        freed = weakref.ref(first)
        del first
        for _ in range(2 * BULK_YOUNG_THRESHOLD):
            _Node()
        assert freed() is None


@pytest.mark.skipif(worker_count() < 2, reason="one core: the stages never use a pool")
def test_a_worker_sets_what_it_inherited_aside_and_makes_young_collections_rare() -> None:
    shared_pool(worker_count())  # ready: else the chunks are done here while it starts
    states = list(in_order(_collector_state, [[1]] * 4, parallel_from=0))
    assert all(pid != os.getpid() for _, _, pid in states)  # each chunk went to a worker
    assert all(frozen > 0 and young == BULK_YOUNG_THRESHOLD for frozen, young, _ in states)
