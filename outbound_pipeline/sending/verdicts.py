"""What the ledger records for a row the loop handled: from the API's verdict, a crash or a stop.

Plain functions of the row, the verdict and what the worker did so far (`Progress`): the worker
acts (waits, retries, sets halts), these only say which `Outcome` a row ends with. Statuses and
reasons come from `outbound_pipeline.outcomes`.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import httpx

from outbound_pipeline.iadvize import Action, IAdvizeError, SendResult, Verdict, request_never_left
from outbound_pipeline.ledger import Claimed, Decision, Outcome
from outbound_pipeline.outcomes import Reason, Status, with_detail
from outbound_pipeline.sending.ledger_thread import store_unreachable


@dataclass
class Progress:
    """What a worker knows of the row in its hands, read when it fails half way."""

    calls: int = 0
    maybe_accepted: bool = False  # a call went out and was not refused (yet)

    @property
    def extra_attempts(self) -> int:
        """Calls beyond the first (the ledger counts the first at claim time)."""
        return self.calls - 1


@dataclass(frozen=True)
class Halt:
    """The halt a stopping verdict sets in the ledger, and what the run's stop says of it."""

    scope: str  # "all" or "campaign:<key>"
    reason: str
    until: dt.datetime | None  # None: until an operator clears it
    everything: bool  # every campaign stops, not only this one


def login_failure_verdict(exc: IAdvizeError) -> Verdict:
    """Login or introspection failed: no message went out with it. When the API kept failing or
    throttling it past the client's bounds (retries, the login wait), this run stops and no other:
    runs holding a valid token go on. Refused credentials or a schema without the mutation stop
    every campaign until an operator clears the halt (retrying would only lock the account)."""
    if exc.transient:
        return Verdict(Action.STOP_RUN, f"{Reason.IADVIZE_UNAVAILABLE}: {exc}", "iadvize")
    return Verdict(Action.STOP_ALL, f"{Reason.IADVIZE_UNUSABLE}: {exc}", "iadvize")


def settled_outcome(
    item: Claimed, verdict: Verdict, result: SendResult | None, now: dt.datetime, extra: int
) -> Outcome | None:
    """The outcome a verdict gives the row by itself (sent, deferred, failed, unknown); None for a
    retry or a stop, which act on the run too."""
    action = verdict.action
    if action is Action.SENT and result is not None:
        return Outcome(
            item.delivery_key,
            Status.SENT,
            Reason.ACCEPTED,
            message_id=result.message_id,
            message_text=result.message_text,
            sent_at=now,
            extra_attempts=extra,
        )
    if action is Action.DEFER:
        not_before = now + dt.timedelta(seconds=verdict.defer_seconds or 0)
        return _with_verdict(item, verdict, Status.DEFERRED, True, extra, not_before=not_before)
    if action is Action.FAIL:
        return _with_verdict(item, verdict, Status.FAILED, False, extra)
    if action is Action.UNKNOWN:
        return _with_verdict(item, verdict, Status.UNKNOWN, False, extra)
    return None


def retries_exhausted(item: Claimed, verdict: Verdict, extra: int) -> Outcome:
    """A row still refused for a retryable reason after the last attempt."""
    reason = with_detail(verdict.reason, Reason.RETRIES_EXHAUSTED)
    return _with_verdict(item, verdict, Status.FAILED, True, extra, reason=reason)


def _with_verdict(
    item: Claimed,
    verdict: Verdict,
    status: Status,
    retryable: bool,
    extra: int,
    reason: str | None = None,
    not_before: dt.datetime | None = None,
) -> Outcome:
    """A row's outcome from a verdict other than sent: the verdict's code, its reason unless given."""
    return Outcome(
        item.delivery_key,
        status,
        verdict.reason if reason is None else reason,
        verdict.code,
        retryable,
        not_before=not_before,
        extra_attempts=extra,
    )


def halt_for(verdict: Verdict, campaign_key: str, now: dt.datetime) -> Halt:
    """The halt of a stopping verdict: this campaign's (STOP_CAMPAIGN) or every campaign's."""
    everything = verdict.action is not Action.STOP_CAMPAIGN
    scope = "all" if everything else f"campaign:{campaign_key}"
    until = now + dt.timedelta(seconds=verdict.defer_seconds) if verdict.defer_seconds else None
    return Halt(scope, f"{verdict.reason} ({verdict.code})", until, everything)


def stopped_outcome(item: Claimed, verdict: Verdict, halt: Halt, extra: int) -> Outcome:
    """The row whose verdict stopped sends: not accepted, it waits for a later run like the rest of
    the queue."""
    reason = with_detail(Reason.STOPPED, verdict.reason)
    return _with_verdict(
        item, verdict, Status.DEFERRED, True, extra, reason=reason, not_before=halt.until
    )


def decided_outcome(item: Claimed, decision: Decision, progress: Progress) -> Outcome:
    """A row the claim's checks, run again before a late call, do not let go (opt-out, limits)."""
    status, reason, not_before = decision
    return Outcome(
        item.delivery_key,
        status,
        reason,
        retryable=status == Status.DEFERRED,
        not_before=not_before,
        extra_attempts=progress.extra_attempts,
    )


def unsubscribed_outcome(item: Claimed, progress: Progress) -> Outcome:
    """A row its dispatch mark refused: the recipient is on the suppression list. No call made."""
    return Outcome(
        item.delivery_key,
        Status.SKIPPED,
        Reason.UNSUBSCRIBED,
        extra_attempts=progress.extra_attempts,
    )


def crash_outcome(item: Claimed, progress: Progress, exc: Exception) -> Outcome:
    """The row of a worker that failed: unknown when its call may have been accepted."""
    name = type(exc).__name__
    reason = with_detail(Reason.UNEXPECTED_ERROR, name)
    extra = progress.extra_attempts
    never_left = isinstance(exc, httpx.HTTPError) and request_never_left(exc)
    if progress.maybe_accepted and not never_left:
        return Outcome(item.delivery_key, Status.UNKNOWN, reason, name, False, extra_attempts=extra)
    if store_unreachable(exc):
        # Not an error of the row's: the run stopped for its ledger, like the rows still queued.
        reason = with_detail(Reason.NOT_SENT, Reason.STATE_STORE_UNAVAILABLE)
    return Outcome(item.delivery_key, Status.DEFERRED, reason, name, True, extra_attempts=extra)


def not_sent(item: Claimed, progress: Progress, stopped: str | None) -> Outcome:
    """A row the loop stopped before its (next) call: what the rows still queued get at the end."""
    reason = with_detail(Reason.NOT_SENT, stopped)[:300]
    return Outcome(
        item.delivery_key,
        Status.DEFERRED,
        reason,
        None,
        True,
        extra_attempts=progress.extra_attempts,
    )


def interrupted_outcome(item: Claimed, progress: Progress, stopped: str | None) -> Outcome:
    """The row of a worker stopped mid-send by an interrupt: unknown if its call may have left."""
    if progress.maybe_accepted:
        return Outcome(
            item.delivery_key,
            Status.UNKNOWN,
            Reason.INTERRUPTED_OUTCOME_UNKNOWN,
            extra_attempts=progress.extra_attempts,
        )
    return not_sent(item, progress, stopped)


def release_reason(stopped: str | None) -> str:
    """The reason of the claimed rows never called, given back at the end of the run."""
    return with_detail(Reason.NOT_SENT, stopped) if stopped else Reason.NOT_SENT
