"""Time as the pipeline sees it: UTC, and controllable in tests (shifted or frozen, never slept)."""

from __future__ import annotations

import datetime as dt

import dagster as dg
from pydantic import Field


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def as_utc(value: dt.datetime | None) -> dt.datetime | None:
    """SQLite hands datetimes back naive; the pipeline only ever writes UTC."""
    if value is None:
        return None
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


class ClockResource(dg.ConfigurableResource):
    """The current time for limits, windows and timestamps. Production leaves both fields empty."""

    offset_seconds: float = Field(
        default=0.0, description="Shift the clock (tests of rolling windows)."
    )
    frozen_at: str | None = Field(default=None, description="ISO timestamp the clock is stuck at.")

    def now(self) -> dt.datetime:
        if self.frozen_at:
            return as_utc(dt.datetime.fromisoformat(self.frozen_at))  # type: ignore[return-value]
        return utcnow() + dt.timedelta(seconds=self.offset_seconds)
