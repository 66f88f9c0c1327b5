"""Ctrl-C and a run terminated from the UI while sending: the send loop stops and records its rows."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Iterator
from typing import Any

from outbound_pipeline.sending.loop import SendLoop


@contextlib.contextmanager
def interrupts_stop(loop: SendLoop) -> Iterator[None]:
    """While sending, SIGINT and SIGTERM (Ctrl-C, a run terminated from the UI) call
    `loop.interrupt()` instead of raising wherever the event loop happens to be.

    Raised there, the interrupt killed one task or was swallowed by the event loop, and the rows
    claimed ahead stayed `sending` until judged dead, then were recorded unknown though never
    called. Repeated signals (a terminal and Dagster's executor each send one) only repeat the stop.
    Once every row is recorded, the first signal is raised again under the handler that was there
    before (Dagster's), so the run ends as interrupted. Outside the main thread (in-process tests)
    and where asyncio has no signal handlers (Windows) nothing is installed.
    """
    event_loop = asyncio.get_running_loop()
    received: list[signal.Signals] = []
    installed: list[tuple[signal.Signals, Any]] = []

    def on_signal(sig: signal.Signals) -> None:
        received.append(sig)
        loop.interrupt()

    for sig in (signal.SIGINT, signal.SIGTERM):
        previous = signal.getsignal(sig)
        try:
            event_loop.add_signal_handler(sig, on_signal, sig)
        except (RuntimeError, ValueError, NotImplementedError):
            break
        installed.append((sig, previous))
    try:
        yield
    finally:
        if installed:
            signals = {sig for sig, _ in installed}
            # A signal between the two calls below would meet the default action (SIGTERM's ends
            # the process at once): held until the previous handler is back, then delivered to it.
            signal.pthread_sigmask(signal.SIG_BLOCK, signals)
            try:
                for sig, previous in installed:
                    event_loop.remove_signal_handler(sig)
                    signal.signal(sig, previous)
            finally:
                signal.pthread_sigmask(signal.SIG_UNBLOCK, signals)
            if received:
                signal.raise_signal(received[0])
