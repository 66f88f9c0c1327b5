"""Why a send loop stopped: a stop holds every call not yet made, and the first one names the outcome.

A stop comes from the API (an account blocked, a template paused), a halt found in the ledger, an
interrupt, or an unexpected error, which also fails the run once every row is recorded.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import traceback
from collections.abc import Callable
from typing import Any

from outbound_pipeline.outcomes import Reason, with_detail
from outbound_pipeline.sending.ledger_thread import safe_detail, store_unreachable
from outbound_pipeline.sending.settings import SendSummary


class RunStop:
    """The run's stop: the event every part checks, its reason in the summary, the error if any."""

    def __init__(self, summary: SendSummary, log: logging.Logger | Any, label: str) -> None:
        self.summary = summary
        self.event = asyncio.Event()
        self.error: tuple[BaseException, str] | None = None
        self._log = log
        self._label = label  # "<campaign> <day>", the start of every message
        self._on_stop: list[Callable[[], None]] = []

    def is_set(self) -> bool:
        return self.event.is_set()

    def also_call(self, fn: Callable[[], None]) -> None:
        """Call fn at every stop (wake a task that waits on something else)."""
        self._on_stop.append(fn)

    def with_reason(
        self, reason: str, everything: bool = False, until: dt.datetime | None = None
    ) -> None:
        """The first stop names the run's outcome; `until`: the end of the halt it set, if any."""
        if self.summary.stopped is None:
            self.summary.stopped = reason
            self.summary.halted_until = until
        self.summary.stop_all = self.summary.stop_all or everything
        self.event.set()
        for fn in self._on_stop:
            fn()

    def for_halt(self, halt: str) -> None:
        """A halt in force (`ledger.active_halt`'s description) found at a claim or a re-check."""
        self.with_reason(f"halted ({halt})", everything=halt.startswith("all"))

    def fail(self, exc: BaseException, where: str) -> None:
        """An unexpected error: stop sending; `run` records what it can, then raises it."""
        name = type(exc).__name__
        if store_unreachable(exc):
            self._store_unreachable(exc, where)
            return
        if self.error is None:
            self.error = (exc, where)
            # The frames without the message: the message may quote SQL parameters (phone numbers).
            frames = "".join(traceback.format_tb(exc.__traceback__))
            self._log.error(
                f"{self._label}: sends stopped: unexpected {name} "
                f"in {where}: {safe_detail(exc)}\n{frames}"
            )
        self.with_reason(with_detail(Reason.UNEXPECTED_ERROR, name))

    def _store_unreachable(self, exc: BaseException, where: str) -> None:
        """The state store out of reach: no call leaves without its dispatch mark, so sends stop
        at once; the outcomes of calls in flight wait in memory for the store (SendLoop)."""
        if self.error is None:
            self.error = (exc, where)
            self._log.error(
                f"{self._label}: the state store is unreachable ({where}: {safe_detail(exc)}): "
                "sends stopped, no call leaves without its dispatch mark; the outcomes known are "
                "kept in memory and written once it is back"
            )
        self.with_reason(Reason.STATE_STORE_UNAVAILABLE)
