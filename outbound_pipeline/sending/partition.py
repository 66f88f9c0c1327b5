"""One campaign's day through the ledger: the whole deliveries step, without Dagster.

`send_partition` runs the steps in order, on two stores: dead claims expire (their rows become
unknown), the day's audience and messages are read from the warehouse into the state store's plan and
the ledger reconciled with them (and an operator's resends), the table statistics are refreshed, the
send loop sends what it can claim (a Ctrl-C or a terminated run stops it cleanly), the day's status
counts are read back, and the ledger is published to the warehouse's `outbound_deliveries` (every
`publish_seconds` meanwhile, and at the end whatever happened). `dry_run_partition` decides every row
the same way and records what would be sent, without a call and without changing the ledger. Both
return what the deliveries asset shows as metadata.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from outbound_pipeline import ledger
from outbound_pipeline.config import Campaign, OutboundConfig
from outbound_pipeline.iadvize import IAdvizeClient, IAdvizeError, IAdvizeResource, login_count
from outbound_pipeline.ledger import CampaignPlan, Publication, send_ledger
from outbound_pipeline.outcomes import Reason, code_of
from outbound_pipeline.sending.interrupts import interrupts_stop
from outbound_pipeline.sending.loop import SendLoop
from outbound_pipeline.sending.publishing import Publisher
from outbound_pipeline.sending.settings import CHECK_TO_CALL_SECONDS, SendSettings, SendSummary
from outbound_pipeline.warehouse import (
    ConsentSettings,
    ConsentSource,
    consent_source,
    refresh_statistics,
)

Counts = dict[str, dict[str, int]]  # status -> reason -> rows


@dataclass(frozen=True, kw_only=True)
class DeliveryOptions:
    """How to send one day: the deliveries step's run configuration (its defaults are there)."""

    resend_unknown: bool
    resend_failed_codes: Sequence[str]
    concurrency: int
    batch_size: int
    max_attempts: int
    stale_claim_seconds: float
    max_send_rate: float | None  # None: the campaign's; 0: no pacing (benchmarks only)
    dry_run: bool
    publish_seconds: float  # a long send publishes its ledger this often

    def send_settings(self, campaign: Campaign) -> SendSettings:
        rate = (
            campaign.max_send_rate if self.max_send_rate is None else (self.max_send_rate or None)
        )
        return SendSettings(
            concurrency=self.concurrency,
            batch_size=self.batch_size,
            max_attempts=self.max_attempts,
            rate_per_second=rate,
            stale_after=dt.timedelta(seconds=self.stale_claim_seconds),
        )


@dataclass(frozen=True)
class CampaignDay:
    """A campaign's day as the ledger sees it, with the claim-time checks that apply to it."""

    campaign: Campaign
    plan: CampaignPlan
    extra_checks: tuple[Any, ...]
    consent: ConsentSource

    @property
    def label(self) -> str:
        return f"{self.plan.campaign_key} {self.plan.partition_date}"


def campaign_day(
    warehouse: sa.Engine,
    campaign: Campaign,
    config: OutboundConfig,
    day: str,
    consent_settings: ConsentSettings | None = None,
) -> CampaignDay:
    """The day, its consent read from the brand's consent table in the `warehouse`: per batch, or
    polled within the settings' bound (by default, by the warehouse's dialect)."""
    plan = ledger.plan_for(campaign, config, day)
    consent = consent_source(
        warehouse,
        config.consents_table,
        campaign.consent_category,
        consent_settings or ConsentSettings(),
        check_to_call_seconds=CHECK_TO_CALL_SECONDS,
        loaded_at_column=config.consents_loaded_at_column,
    )
    return CampaignDay(campaign, plan, ledger.extra_checks_for(campaign), consent)


@dataclass
class PartitionSend:
    """What one send of a day did, and where the day's ledger stands after it."""

    summary: SendSummary
    counts: Counts
    expired: ledger.ExpiredClaims  # a dead run's claims: unknown, and given back to the queue
    resent_unknown: int
    resent_failed: int
    logins: int
    publication: Publication | None = None  # the last, at the end of the step
    publication_error: str | None = None

    def stop_description(self, label: str) -> str | None:
        """Why the run must fail (a halt or a campaign stop), or None when it may succeed."""
        summary = self.summary
        if summary.stop_all and summary.halted_until is not None:
            return (
                f"{label}: ALL sends paused until {summary.halted_until:%Y-%m-%d %H:%M:%S} UTC: "
                f"{summary.stopped}. They resume by themselves after that (the deferred-retry sensor re-runs "
                "the day); nothing to clear."
            )
        if summary.stop_all:
            return (
                f"{label}: ALL sends stopped: {summary.stopped}. A halt without an end "
                "lifts only when an operator clears it: fix the account or credentials, then clear the "
                "halt with `outbound-pipeline halts clear all` (`outbound-pipeline halts list` shows the "
                "halts in force and their end)."
            )
        if summary.stopped and code_of(summary.stopped) == Reason.IADVIZE_UNAVAILABLE:
            return (
                f"{label}: this run stopped: {summary.stopped}. No halt was set: other runs go on, "
                "and the next run of the day sends the remaining rows (deferred)."
            )
        if summary.stopped:
            return (
                f"{label}: campaign sends stopped: {summary.stopped}; remaining rows are deferred."
            )
        return None


def _prepare(
    state: sa.Engine,
    warehouse: sa.Engine,
    day: CampaignDay,
    run_id: str,
    now: dt.datetime,
    options: DeliveryOptions,
    log: logging.Logger,
) -> tuple[ledger.ExpiredClaims, int, int]:
    """Expire dead claims, plan and reconcile the day (one state-store transaction); (dead runs'
    claims, resent unknown, resent failed)."""
    # The warehouse is read before the state store's transaction opens: that transaction (SQLite's
    # write lock) never waits on the warehouse.
    with ledger.read_snapshot(warehouse, day.plan) as snapshot, state.begin() as conn:
        stale_after = dt.timedelta(seconds=options.stale_claim_seconds)
        expired = ledger.expire_dead_claims(conn, day.plan, now, stale_after)
        reconciled = ledger.reconcile(
            conn,
            snapshot,
            run_id,
            now,
            resend_unknown=options.resend_unknown,
            resend_failed_codes=options.resend_failed_codes,
        )
    # The rows reconcile just wrote change the planner's picture of the table.
    refresh_statistics(state, send_ledger)
    if expired.unknown:
        log.warning(
            f"{day.label}: {expired.unknown} rows of a dead run whose call may have left "
            "recorded as unknown"
        )
    if expired.requeued:
        log.info(
            f"{day.label}: {expired.requeued} rows a dead run claimed and never called "
            "are pending again"
        )
    if reconciled.resent_unknown or reconciled.resent_failed:
        log.warning(
            f"{day.label}: operator resend of {reconciled.resent_unknown} unknown and "
            f"{reconciled.resent_failed} failed rows (recorded in resend_requested_by)"
        )
    return expired, reconciled.resent_unknown, reconciled.resent_failed


def send_partition(
    state: sa.Engine,
    warehouse: sa.Engine,
    day: CampaignDay,
    iadvize: IAdvizeResource,
    now: Callable[[], dt.datetime],
    run_id: str,
    options: DeliveryOptions,
    log: logging.Logger,
) -> PartitionSend:
    """Send the day's claimable rows and record every outcome; never sends a row twice. The ledger
    is published to the warehouse meanwhile and at the end, also when the send fails."""
    log.info(f"{day.label}: sending through {iadvize.describe()}")
    publisher = Publisher(state, warehouse, day.plan, log)
    try:
        expired, resent_unknown, resent_failed = _prepare(
            state, warehouse, day, run_id, now(), options, log
        )
        logins_before = login_count()
        settings = options.send_settings(day.campaign)

        def loop_for(client: IAdvizeClient) -> SendLoop:
            return SendLoop(
                state,
                day.plan,
                client,
                now,
                run_id,
                settings,
                log,
                consent=day.consent,
                extra_checks=day.extra_checks,
            )

        slots = ledger.StoreLoginSlots(state, iadvize.logins_per_minute)
        summary = asyncio.run(_send(loop_for, iadvize, slots, options, publisher))
        with state.connect() as conn:
            counts = ledger.status_counts(conn, day.plan)
    finally:
        publisher.publish()
    return PartitionSend(
        summary,
        counts,
        expired,
        resent_unknown,
        resent_failed,
        login_count() - logins_before,
        publisher.last,
        publisher.error,
    )


async def _send(
    loop_for: Callable[[IAdvizeClient], SendLoop],
    iadvize: IAdvizeResource,
    slots: ledger.StoreLoginSlots,
    options: DeliveryOptions,
    publisher: Publisher,
) -> SendSummary:
    """The send loop on a client of its own (its logins share the user's budget with every run
    through the state store's slots), the ledger published every `publish_seconds` beside."""
    async with iadvize.client(options.concurrency, slots) as client:
        # Log in and introspect before claiming: a wait for a login slot holds no claimed row and
        # spends none of their send slots. A failure is remembered by the client, and the workers'
        # calls meet it again (their verdict stops this run or, for refused credentials, all).
        with contextlib.suppress(IAdvizeError):
            await client.prepare()
        loop = loop_for(client)
        publishing = asyncio.create_task(publisher.every(options.publish_seconds))
        try:
            with interrupts_stop(loop):
                return await loop.run()
        finally:
            publishing.cancel()
            await asyncio.gather(publishing, return_exceptions=True)


@dataclass
class PartitionDryRun:
    """What a real run would do with the day; the ledger's counts are those before it."""

    rows: int
    would_send: int
    outcomes: Mapping[str, int]
    reasons: Counts
    halted: str | None
    counts: Counts = field(default_factory=dict)


def dry_run_partition(
    state: sa.Engine,
    warehouse: sa.Engine,
    day: CampaignDay,
    run_id: str,
    now: dt.datetime,
    options: DeliveryOptions,
    log: logging.Logger,
) -> PartitionDryRun:
    """Every check of a real run, recorded in outbound_dry_runs; no call, the ledger unchanged."""
    log.info(f"{day.label}: DRY RUN: every check, no call to iAdvize, the ledger unchanged")
    result = ledger.dry_run(
        state,
        warehouse,
        day.plan,
        run_id,
        now,
        batch_size=options.batch_size,
        consent=day.consent,
        extra_checks=day.extra_checks,
        resend_unknown=options.resend_unknown,
        resend_failed_codes=options.resend_failed_codes,
    )
    with state.connect() as conn:
        counts = ledger.status_counts(conn, day.plan)
    if result.halted:
        log.warning(f"{day.label}: a real run would stop at once: {result.halted}")
    log.info(f"{day.label}: dry run: {dict(result.outcomes)}")
    return PartitionDryRun(
        result.rows, result.would_send, result.outcomes, result.reasons, result.halted, counts
    )
