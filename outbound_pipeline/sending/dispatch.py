"""The dispatch gate: a worker's call leaves only once its row's dispatch mark is committed.

Workers ask for their row's mark right before each call. The gate marks every row asked for since
its last commit in one transaction of the ledger thread, with the outcomes recorded meanwhile
(`ledger.dispatch`): one commit serves a group of calls, so the send rate holds, and a row called
without its outcome in the ledger is at most one per worker. After a crash, `unknown` rows are
thus at most the calls in flight; the rows claimed ahead and never called go back to the queue.

A call refused before acceptance (a 429, a 5xx, a temporary WhatsApp error) has its mark lifted
with the next commit while its row waits to be retried, and marked again before the retry: a crash
during the wait gives the row back to the queue instead of making it `unknown`.

The mark refuses a row whose recipient is on the suppression list (its worker records it skipped,
`unsubscribed`). When the state store fails, or the run stops, the gate refuses every mark: no
call whose mark is not durable.
"""

from __future__ import annotations

import asyncio
import enum

from outbound_pipeline.ledger import Dispatch, dispatch
from outbound_pipeline.sending.context import SendContext
from outbound_pipeline.sending.recorder import OutcomeRecorder


class Clearance(enum.Enum):
    """The gate's answer for one row."""

    GO = "go"  # the mark is committed: the call may leave
    UNSUBSCRIBED = "unsubscribed"  # refused: the recipient is on the suppression list
    HELD = "held"  # no mark: the run stopped, the store failed, or the row is no longer ours


class DispatchGate:
    def __init__(self, ctx: SendContext, recorder: OutcomeRecorder) -> None:
        self._ctx = ctx
        self._recorder = recorder
        self._asked: dict[str, asyncio.Future[Clearance]] = {}
        self._released: list[str] = []
        self._wake = asyncio.Event()
        ctx.stop.also_call(self._wake.set)

    async def clear(self, key: str) -> Clearance:
        """Wait for the row's mark to be committed (GO), or the reason it was not."""
        if self._ctx.stop.is_set():
            return Clearance.HELD
        future: asyncio.Future[Clearance] = asyncio.get_running_loop().create_future()
        self._asked[key] = future
        self._wake.set()
        return await future

    def release(self, key: str) -> None:
        """The row's call was refused before acceptance and waits for a retry: its mark is lifted
        with the next commit (until then, a crash leaves it marked, so `unknown`)."""
        self._released.append(key)
        self._wake.set()

    async def run(self) -> None:
        """Commit the marks asked for, a group at a time, until cancelled."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            if (self._asked or self._released) and not self._ctx.stop.is_set():
                # A moment for the workers about to ask too: fewer, larger commits (the ledger
                # thread shares the process's one core with the event loop).
                await asyncio.sleep(self._ctx.settings.dispatch_gather_seconds)
            if self._ctx.stop.is_set():
                self._answer(self._take_asked(), None)
            elif self._asked or self._released:
                await self._commit_group()

    def _take_asked(self) -> dict[str, asyncio.Future[Clearance]]:
        asked, self._asked = self._asked, {}
        return asked

    async def _commit_group(self) -> None:
        ctx = self._ctx
        asked = self._take_asked()
        outcomes = self._recorder.take()
        released, self._released = self._released, []
        try:
            result = await ctx.db.run(
                dispatch, ctx.plan, ctx.token, list(asked), ctx.now(), outcomes, released
            )
        except BaseException as exc:
            # Not known to be committed: no call for these rows, the outcomes and releases kept.
            self._recorder.put_back(outcomes)
            self._released[:0] = released
            self._answer(asked, None)
            if not isinstance(exc, Exception):
                raise
            ctx.stop.fail(exc, "dispatch marks")
            return
        self._answer(asked, result)

    @staticmethod
    def _answer(asked: dict[str, asyncio.Future[Clearance]], result: Dispatch | None) -> None:
        for key, future in asked.items():
            if future.done():  # its worker was cancelled (an interrupt)
                continue
            if result is not None and key in result.marked:
                future.set_result(Clearance.GO)
            elif result is not None and key in result.unsubscribed:
                future.set_result(Clearance.UNSUBSCRIBED)
            else:
                future.set_result(Clearance.HELD)
