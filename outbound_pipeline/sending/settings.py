"""What a send loop is told (SendSettings), what it reports (SendSummary), and its tuning constants."""

from __future__ import annotations

import datetime as dt
import math
import time
from collections import Counter
from dataclasses import dataclass, field

from outbound_pipeline.ledger import DEAD_SENDER_SECONDS
from outbound_pipeline.outcomes import Status


@dataclass(frozen=True)
class SendSettings:
    concurrency: int = 32
    batch_size: int = 100
    max_attempts: int = 4
    rate_per_second: float | None = 80.0  # None: no pacing (benchmarks only)
    stale_after: dt.timedelta = dt.timedelta(seconds=DEAD_SENDER_SECONDS)
    flush_rows: int = 200
    flush_seconds: float = 0.25
    heartbeat_seconds: float = 5.0
    backoff_base_seconds: float = 0.5
    backoff_max_seconds: float = 30.0
    # How long the end of a run keeps trying to write the outcomes it knows while the state store
    # is unreachable; after that they are left unwritten (their rows become unknown, never resent).
    write_back_seconds: float = 120.0
    # How long the dispatch gate gathers the marks asked for before committing them together.
    dispatch_gather_seconds: float = 0.005


# Rows claimed ahead of the calls cover about this much sending: enough to hide a claim's round trip
# from the workers, few enough that consent is re-checked close to the call and that a killed run
# leaves few claimed rows behind (they become `unknown`).
CLAIM_AHEAD_SECONDS = 0.25


# A concurrent run's reconcile or claim holds rows for milliseconds; a longer hold is someone else's
# transaction, and the rows are left pending for a later run rather than waited for forever.
BUSY_POLL_SECONDS = 0.05
BUSY_WAIT_SECONDS = 30.0

# The first and the longest wait between two tries of writing outcomes to an unreachable store.
WRITE_BACK_FIRST_WAIT_SECONDS = 0.5
WRITE_BACK_MAX_WAIT_SECONDS = 5.0

# `SendSummary.stopped` after `SendLoop.interrupt`.
INTERRUPTED = "interrupted"

# A call may leave this late after the send slot reserved for it, no later: the calls of a sender's
# other runs fill the slots that follow, so late calls add at most rate x this to a second of theirs.
# A busy process at 1,000 messages/s runs that late as a matter of course (a queue of claimed rows
# ahead of the workers); re-reserving each of those calls would halve what it sends.
LATE_SLOT_SECONDS = CLAIM_AHEAD_SECONDS

# How far behind its spacing a sender's calls may fall and still catch up (at most this long's worth
# of calls close together; the window of the last second still caps them at the rate).
CATCH_UP_SECONDS = 0.02

# The window in which a sender's calls are counted against its messages/s: a little longer than a
# second. Calls admitted at the edge of a full window reach the API a few milliseconds apart; counted
# over exactly one second, the API saw up to 1,003 messages in one of its seconds at 1,000 msg/s.
WINDOW_SECONDS = 1.01

# A call that follows a longer wait since the row's consent was checked (the queue, the limiter, a
# 429 pause, a retry's backoff, 131057's minute) checks it again first (invariant 1).
CONSENT_FRESH_SECONDS = 1.0

# The longest a call follows the consent check that let it go: the re-check's age above, then at most
# a second in the rate limiter's window, and a margin. A polled consent source polls this much more
# often than its bound (warehouse.consent_poll).
CHECK_TO_CALL_SECONDS = CONSENT_FRESH_SECONDS + 2.0


def claim_ahead(settings: SendSettings) -> int:
    """How many claimed rows may wait for a worker (the send queue's size)."""
    most = settings.concurrency + settings.batch_size
    if not settings.rate_per_second:
        return most
    return max(
        settings.concurrency, min(most, math.ceil(settings.rate_per_second * CLAIM_AHEAD_SECONDS))
    )


@dataclass
class SendSummary:
    claimed: int = 0
    calls: int = 0
    statuses: Counter[str] = field(default_factory=Counter)
    reasons: Counter[str] = field(default_factory=Counter)
    decided_at_claim: Counter[str] = field(default_factory=Counter)
    expired_claims: int = 0
    stopped: str | None = None
    stop_all: bool = False
    halted_until: dt.datetime | None = (
        None  # the end of the halt this run's first stop set, if it has one
    )
    started: float = field(default_factory=time.monotonic)
    ended: float | None = None  # set when the loop has recorded its last outcome
    first_sent_at: dt.datetime | None = None
    last_sent_at: dt.datetime | None = None

    @property
    def seconds(self) -> float:
        """The loop's own time: not the publication and counts that follow it in the step."""
        return (self.ended or time.monotonic()) - self.started

    @property
    def send_rate(self) -> float:
        return self.statuses[Status.SENT] / self.seconds if self.seconds > 0 else 0.0


class SendLoopError(RuntimeError):
    """The loop stopped on an unexpected error (a worker, a claim, the ledger); rows were recorded first."""
