"""The garbage collector during bulk work (`outbound_pipeline.collector`): the heap alive before a
loop set aside and young collections rare while a stage's chunks go through, put back after; the
send loop's young collections left small; cyclic garbage made during the loop still collected."""

from __future__ import annotations

import gc
import weakref

import pytest

from outbound_pipeline.collector import BULK_YOUNG_THRESHOLD, bulk_work, heap_set_aside
from outbound_pipeline.workers import in_order, worker_count


def _collector_state(chunk: list[int], start: int) -> tuple[int, int]:
    return gc.get_freeze_count(), gc.get_threshold()[0]


@pytest.fixture(autouse=True)
def _nothing_frozen_before() -> None:
    # Nothing else in a test process freezes objects or changes the thresholds.
    assert gc.get_freeze_count() == 0
    assert gc.get_threshold()[0] < BULK_YOUNG_THRESHOLD


def test_a_stage_loop_sets_the_heap_aside_and_makes_young_collections_rare() -> None:
    before = gc.get_threshold()
    states = list(in_order(_collector_state, [[1]] * 3, parallel_from=10**9))
    assert all(frozen > 0 and young == BULK_YOUNG_THRESHOLD for frozen, young in states)
    assert gc.get_freeze_count() == 0
    assert gc.get_threshold() == before


def test_nested_loops_put_the_collector_back_only_when_the_last_ends() -> None:
    before = gc.get_threshold()
    with bulk_work():
        frozen = gc.get_freeze_count()
        with bulk_work():
            pass
        assert gc.get_freeze_count() == frozen
        assert gc.get_threshold()[0] == BULK_YOUNG_THRESHOLD
    assert gc.get_freeze_count() == 0
    assert gc.get_threshold() == before


def test_a_program_that_froze_its_own_objects_keeps_them_frozen() -> None:
    gc.freeze()
    try:
        before = gc.get_freeze_count()
        with bulk_work():
            pass
        assert gc.get_freeze_count() >= before
    finally:
        gc.unfreeze()


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
    states = list(in_order(_collector_state, [[1]] * 4, parallel_from=0))
    assert all(frozen > 0 and young == BULK_YOUNG_THRESHOLD for frozen, young in states)
