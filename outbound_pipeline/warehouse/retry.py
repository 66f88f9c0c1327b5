"""Waiting for a warehouse that admits one writing process at a time (a DuckDB file).

A DuckDB file is locked by the process that opens it: another process's connection fails at once
with "Could not set lock on file ... Conflicting lock is held". The pipeline holds no connection to
such a warehouse between operations (engine.py: no pool), and an operation that meets the lock waits
and tries again with backoff, so parallel runs of a backfill queue their writes instead of failing.
A write-write conflict between two transactions of one process is retried the same way by callers
whose whole transaction can be run again (`with_lock_retry`).
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

# How long an operation waits for the lock in all before it fails: a backfill's other runs hold the
# file for their own writes (seconds), or for a whole extraction (minutes at a million rows).
LOCK_WAIT_SECONDS = 900.0
FIRST_BACKOFF_SECONDS = 0.05
MAX_BACKOFF_SECONDS = 2.0

# What DuckDB says when another process holds the file, or another transaction wrote the same rows.
_LOCK_MARKS = (
    "could not set lock on file",
    "conflicting lock",
    "conflict on",
    "write-write conflict",
)

log = logging.getLogger(__name__)


def is_lock_conflict(exc: BaseException) -> bool:
    """True for an error that goes away once the other writer is done."""
    orig = getattr(exc, "orig", None) or exc
    text = str(orig).lower()
    return any(mark in text for mark in _LOCK_MARKS)


def with_lock_retry(
    operation: Callable[[], T],
    *,
    wait_seconds: float = LOCK_WAIT_SECONDS,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Run `operation`, again after a backoff while it fails on a lock conflict, for at most
    `wait_seconds` in all; any other error, or the last conflict, is raised."""
    deadline = time.monotonic() + wait_seconds
    backoff = FIRST_BACKOFF_SECONDS
    waited = False
    while True:
        try:
            return operation()
        except Exception as exc:  # the driver's own error class at connect time, SQLAlchemy's after
            if not is_lock_conflict(exc) or time.monotonic() >= deadline:
                raise
            if not waited:
                log.info("the warehouse is locked by another writer; waiting for it")
                waited = True
        sleep(min(backoff, max(0.0, deadline - time.monotonic())) * (0.5 + random.random() / 2))
        backoff = min(MAX_BACKOFF_SECONDS, backoff * 2)
