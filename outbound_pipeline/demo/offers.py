"""The demo offer calendar: which customer segment gets the day's marketing offer, and its text."""

from __future__ import annotations

import datetime as dt
from typing import Any

from outbound_pipeline.demo.customers import OFFER_SEGMENTS
from outbound_pipeline.demo.orders import demo_days

OFFERS: tuple[str, ...] = (
    "-20 % sur tout le rayon hiver",
    "10 € offerts dès 50 € d'achat",
    "-30 % sur le deuxième article",
    "-15 % sur les manteaux",
)
# fmt: off
FRENCH_MONTHS: tuple[str, ...] = (
    "janvier", "février", "mars", "avril", "mai", "juin",
    "juillet", "août", "septembre", "octobre", "novembre", "décembre",
)
# fmt: on


def french_date(day: dt.date) -> str:
    """2026-12-08 -> '8 décembre 2026': a template parameter needs the text, not the date."""
    return f"{day.day} {FRENCH_MONTHS[day.month - 1]} {day.year}"


def generate_offer_calendar() -> list[dict[str, Any]]:
    """One row per date: weekdays rotate through the segments, so a Monday-to-Friday schedule
    reaches every segment once in 7 business days; Saturday and Sunday repeat Friday's segment
    (a manual run on a weekend still has an audience)."""
    rows: list[dict[str, Any]] = []
    business_day = -1
    for day in demo_days():
        if day.weekday() < 5 or business_day < 0:
            business_day += 1
        rows.append(
            {
                "offer_date": day,
                "segment": business_day % OFFER_SEGMENTS,
                "offer_label": OFFERS[(business_day // OFFER_SEGMENTS) % len(OFFERS)],
                "valid_until": french_date(day + dt.timedelta(days=7)),
            }
        )
    return rows
