"""Quiet hours: a campaign sends only between its allowed local hours; other rows wait.

A claim-time check for `ledger.claim_batch(extra_checks=...)`: a row whose recipient is outside
the allowed hours is recorded `deferred` with the reason `quiet_hours:<timezone>` and `not_before`
set to the next allowed time, so a later run sends it (the ledger never takes a deferred row back
before then). Nothing is called for it.

Whose clock:
- `quiet_hours.timezone` when the campaign sets one: every recipient alike;
- otherwise the recipient's: the time zone(s) libphonenumber's geocoding data gives for the number
  (`phonenumbers.timezone.time_zones_for_number`). A number it cannot place (mobile ranges of some
  countries) takes its country's zone, read from that country's example landline. A number that may
  be in several zones is sent only when the hour is allowed in all of them; if the zones' windows
  never overlap (a country wider than the window), or nothing is known, the campaign's timezone
  (its schedule's) decides.

Hours are local wall-clock hours: `start_hour <= hour < end_hour`; a window with start >= end wraps
midnight (22 -> 6 allows 22:00-05:59).
"""

from __future__ import annotations

import datetime as dt
import zoneinfo
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

import phonenumbers
import sqlalchemy as sa
from phonenumbers.timezone import UNKNOWN_TIMEZONE, time_zones_for_number

from outbound_pipeline.config import Campaign
from outbound_pipeline.ledger.plan import CampaignPlan, Decision, ExtraCheck
from outbound_pipeline.outcomes import Reason, Status, with_detail

# How far ahead to look for the next allowed instant common to every zone of a number.
_HORIZON_DAYS = 3


def _known(zones: Sequence[str]) -> tuple[str, ...]:
    available = zoneinfo.available_timezones()
    return tuple(sorted({z for z in zones if z != UNKNOWN_TIMEZONE and z in available}))


@lru_cache(maxsize=65536)
def recipient_zones(recipient: str) -> tuple[str, ...]:
    """The distinct clocks an E.164 number may be on, as IANA zones; empty when nothing is known.

    Zones that keep the same time (Europe/London, Europe/Jersey...) count once, named by the zone
    of the calling code's main country when it is among them.
    """
    try:
        number = phonenumbers.parse(recipient, None)
    except phonenumbers.NumberParseException:
        return ()
    zones = _known(time_zones_for_number(number))
    if not zones:
        region = phonenumbers.region_code_for_number(number)
        zones = _country_zones(region) if region else ()
    main = _country_zones(phonenumbers.region_code_for_country_code(number.country_code))
    return _distinct_clocks(zones, main)


def _distinct_clocks(zones: Sequence[str], preferred: Sequence[str]) -> tuple[str, ...]:
    by_clock: dict[tuple[Any, ...], str] = {}
    for zone in sorted(zones, key=lambda z: (z not in preferred, z)):
        tz = zoneinfo.ZoneInfo(zone)
        signature = tuple(
            dt.datetime(2026, month, 15, 12, tzinfo=tz).utcoffset() for month in (1, 4, 7, 10)
        )
        by_clock.setdefault(signature, zone)
    return tuple(by_clock.values())


@lru_cache(maxsize=512)
def _country_zones(region: str) -> tuple[str, ...]:
    """A country's zone(s), from its example landline (libphonenumber places landlines best)."""
    for kind in (
        phonenumbers.PhoneNumberType.FIXED_LINE,
        phonenumbers.PhoneNumberType.FIXED_LINE_OR_MOBILE,
    ):
        example = phonenumbers.example_number_for_type(region, kind)
        if example is not None:
            zones = _known(time_zones_for_number(example))
            if zones:
                return zones
    return ()


def is_allowed(when: dt.datetime, zone: str, start_hour: int, end_hour: int) -> bool:
    hour = when.astimezone(zoneinfo.ZoneInfo(zone)).hour
    if start_hour < end_hour:
        return start_hour <= hour < end_hour
    return hour >= start_hour or hour < end_hour


def next_allowed(
    now: dt.datetime, zones: Sequence[str], start_hour: int, end_hour: int
) -> dt.datetime | None:
    """`now` when sending is allowed in every zone now; else the next instant it is; None when
    the zones' windows never overlap within a few days."""
    if all(is_allowed(now, z, start_hour, end_hour) for z in zones):
        return now
    candidates = []
    for zone in zones:
        tz = zoneinfo.ZoneInfo(zone)
        local_day = now.astimezone(tz).date()
        for days in range(_HORIZON_DAYS + 1):
            day = local_day + dt.timedelta(days=days)
            start = dt.datetime.combine(day, dt.time(start_hour % 24), tzinfo=tz).astimezone(dt.UTC)
            if start > now:
                candidates.append(start)
    for candidate in sorted(candidates):
        if all(is_allowed(candidate, z, start_hour, end_hour) for z in zones):
            return candidate
    return None


def quiet_hours_check(campaign: Campaign) -> ExtraCheck | None:
    """The claim-time check of a campaign with `quiet_hours`, or None when it has none."""
    window = campaign.quiet_hours
    if window is None:
        return None
    fallback = window.timezone or campaign.schedule.timezone
    start, end = window.start_hour, window.end_hour

    def check(
        conn: sa.Connection, plan: CampaignPlan, rows: Sequence[Any], now: dt.datetime
    ) -> dict[str, Decision]:
        decisions: dict[str, Decision] = {}
        memo: dict[tuple[str, ...], tuple[dt.datetime | None, str]] = {}
        for row in rows:
            zones = (
                (window.timezone,)
                if window.timezone
                else (recipient_zones(row.recipient or "") or (fallback,))
            )
            if zones not in memo:
                resume, label = (
                    next_allowed(now, zones, start, end),
                    zones[0] if len(zones) == 1 else f"{len(zones)}_zones",
                )
                if resume is None:
                    # Windows that never overlap: the campaign's clock decides.
                    resume, label = next_allowed(now, (fallback,), start, end), fallback
                memo[zones] = (resume, label)
            resume, label = memo[zones]
            if resume is not None and resume > now:
                decisions[row.delivery_key] = (
                    Status.DEFERRED,
                    with_detail(Reason.QUIET_HOURS, label),
                    resume,
                )
        return decisions

    check.__name__ = f"quiet_hours_{campaign.key}"
    return check
