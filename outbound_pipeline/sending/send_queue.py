"""The claimed rows between the producer and the workers, and the room the producer waits for.

Rows are claimed only a little ahead of the workers, never more than the queue takes, so the consent
re-check stays close to the call.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from outbound_pipeline.ledger import Claimed
from outbound_pipeline.sending.stops import RunStop


@dataclass
class QueuedRow:
    item: Claimed
    checked_at: float  # time.monotonic() when consent was last checked for this row
    slot: float | None = None  # Unix time of the send slot reserved for it in the warehouse


class SendQueue:
    """At most `maxsize` claimed rows waiting for one of `workers` workers; a None ends a worker."""

    def __init__(self, maxsize: int, workers: int, stop: RunStop) -> None:
        self._rows: asyncio.Queue[QueuedRow | None] = asyncio.Queue(maxsize=maxsize)
        self.maxsize = maxsize
        self._stop = stop
        # Set when a worker takes a row from the queue, exits, or the loop stops: what the producer waits on.
        self._room = asyncio.Event()
        stop.also_call(self._room.set)
        self._workers_alive = workers

    async def room_for(self, need: int, even_if_stopped: bool = False) -> int:
        """Free places in the queue once there are `need`; 0 when stopped or no worker is left."""
        while True:
            free = self.maxsize - self._rows.qsize()
            if free >= need:
                return free
            if self._workers_alive == 0 or (self._stop.is_set() and not even_if_stopped):
                return 0
            self._room.clear()
            await self._room.wait()

    def put(self, row: QueuedRow) -> None:
        """Queue a row where `room_for` measured room: never waits."""
        self._rows.put_nowait(row)

    async def take(self) -> QueuedRow | None:
        """A worker's next row; None: the worker ends."""
        row = await self._rows.get()
        self._room.set()
        return row

    def worker_left(self) -> None:
        self._workers_alive -= 1
        self._room.set()

    async def end_workers(self, workers: int) -> None:
        """One None per worker, after what is queued (skipped when stopped); workers that are gone
        cannot make this wait forever."""
        for _ in range(workers):
            if not await self.room_for(1, even_if_stopped=True):
                break
            self._rows.put_nowait(None)
