"""Outcomes counted in the summary as they come and written back to the ledger in batches: on
their own (`flush`) or with the next group of dispatch marks (`take`, `put_back`)."""

from __future__ import annotations

from outbound_pipeline.ledger import Outcome, record_results
from outbound_pipeline.sending.context import SendContext


class OutcomeRecorder:
    def __init__(self, ctx: SendContext) -> None:
        self._ctx = ctx
        self.pending: list[Outcome] = []  # recorded, not yet written to the ledger

    def record(self, outcome: Outcome) -> None:
        summary = self._ctx.summary
        summary.statuses[outcome.status] += 1
        summary.reasons[outcome.reason or outcome.status] += 1
        self.pending.append(outcome)

    @property
    def full(self) -> bool:
        """Enough outcomes waiting to write them now rather than at the next timed flush."""
        return len(self.pending) >= self._ctx.settings.flush_rows

    def take(self) -> list[Outcome]:
        """The outcomes waiting, for a transaction that writes them (`put_back` if it fails)."""
        batch, self.pending = self.pending, []
        return batch

    def put_back(self, batch: list[Outcome]) -> None:
        """Outcomes a failed transaction did not write: kept, not dropped. The end of the run must
        neither lose them nor release their rows as never called. Writing them twice is harmless
        (record_results only moves `sending` rows)."""
        self.pending[:0] = batch

    async def flush(self) -> None:
        if not self.pending:
            return
        ctx = self._ctx
        batch = self.take()
        try:
            await ctx.db.run(record_results, ctx.plan, ctx.token, batch, ctx.now())
        except BaseException:
            self.put_back(batch)
            raise

    async def flush_or_stop(self) -> bool:
        """Flush; an error stops the run (False), the outcomes kept for the end of it."""
        try:
            await self.flush()
        except Exception as exc:
            self._ctx.stop.fail(exc, "recording outcomes")
            return False
        return True
