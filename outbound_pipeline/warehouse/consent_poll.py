"""The last-moment consent check on an analytical warehouse: polled, not queried per batch.

A warehouse that answers in seconds and bills per query (DuckDB, Snowflake, BigQuery, Databricks,
Redshift) cannot be asked about each batch of a send. `PolledConsent` reads the current consent of
the campaign's category once, then only what changed: every poll reads the current state of the
customers with a consent row whose `updated_at` (or the load-time column the brand names) is later
than the watermark minus the lookback. `updated_at` is business time and rows land late (a loader's
batch, a replayed file): the lookback (default 24 h) catches an opt-out stamped an hour ago that
arrives now. The watermark is the highest value of that column the previous poll saw, never later
than the clock (a row dated in the future must not push the next polls past today's opt-outs).

Every claim and every re-check of the send step asks the source, which answers from what it read,
polling again first when that read began more than `max_age_seconds` ago. The send step sets that
age from the bound (`ConsentSettings.bound_seconds`): an opt-out visible in the warehouse longer
than the bound before a call always stops that call.

Each poll connects, reads and closes (a DuckDB file admits one process at a time), and waits for a
writer's lock like every other operation (`retry.with_lock_retry`). An opt-out must be a row: a
consent row deleted from the warehouse is not seen by the poll (the per-batch check sees it).
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from outbound_pipeline.warehouse.consent import (
    OPTED_IN,
    OPTED_OUT,
    ConsentSource,
    WarehouseConsent,
    brand_table,
    current_consent_select,
)
from outbound_pipeline.warehouse.engine import reading
from outbound_pipeline.warehouse.retry import with_lock_retry

# Warehouses that answer a short indexed query in milliseconds: checked per batch under `auto`.
PER_BATCH_DIALECTS = ("sqlite", "postgresql")
CONSENT_CHECKS = ("auto", "batch", "poll")
DEFAULT_BOUND_SECONDS = 30.0
DEFAULT_LOOKBACK_HOURS = 24.0
# Below this the warehouse would be polled about every second: the per-batch check is then better.
MIN_BOUND_SECONDS = 5.0
READ_CHUNK_ROWS = 50_000
# `refresh` polls ahead of a claim this long before the answers reach their age limit (or a tenth
# of the limit, if longer; half of it at most).
REFRESH_AHEAD_SECONDS = 0.5
# One string object per status for a million customers, not one per row.
_STATUSES = {OPTED_IN: OPTED_IN, OPTED_OUT: OPTED_OUT}


class ConsentSettingsError(ValueError):
    """A consent setting out of range; the message names it and says what is expected."""


@dataclass(frozen=True)
class ConsentSettings:
    """How the send step checks consent at the last moment.

    `check`: `batch` (a query per batch), `poll` (`PolledConsent`) or `auto` (per batch on SQLite
    and PostgreSQL, polled elsewhere). `bound_seconds`: the polled check's bound (see the module).
    `lookback_hours`: how far behind the watermark each poll reads again."""

    check: str = "auto"
    bound_seconds: float = DEFAULT_BOUND_SECONDS
    lookback_hours: float = DEFAULT_LOOKBACK_HOURS

    def __post_init__(self) -> None:
        if self.check not in CONSENT_CHECKS:
            raise ConsentSettingsError(
                f"consent check {self.check!r}: expected one of {', '.join(CONSENT_CHECKS)}"
            )
        if not MIN_BOUND_SECONDS <= self.bound_seconds <= 3600:
            raise ConsentSettingsError(
                f"consent bound {self.bound_seconds} s: expected {MIN_BOUND_SECONDS:g} to 3600 "
                "seconds (how late an opt-out may stop a call)"
            )
        if not 0 <= self.lookback_hours <= 24 * 90:
            raise ConsentSettingsError(
                f"consent lookback {self.lookback_hours} h: expected 0 to 2160 hours "
                "(how late a consent row may land after its updated_at)"
            )

    def polls(self, dialect_name: str) -> bool:
        """Whether a warehouse of this dialect is polled rather than queried per batch."""
        if self.check == "auto":
            return dialect_name not in PER_BATCH_DIALECTS
        return self.check == "poll"


def consent_source(
    engine: sa.Engine,
    consents_table: str,
    category: str,
    settings: ConsentSettings,
    *,
    check_to_call_seconds: float,
    loaded_at_column: str | None = None,
) -> ConsentSource:
    """The send step's consent source for the warehouse's dialect. `check_to_call_seconds`: how
    long a call may follow the check that let it go; polls are that much more frequent than the
    bound."""
    if not settings.polls(engine.dialect.name):
        return WarehouseConsent(engine, consents_table, category)
    return PolledConsent(
        engine,
        consents_table,
        category,
        max_age_seconds=max(1.0, settings.bound_seconds - check_to_call_seconds),
        lookback=dt.timedelta(hours=settings.lookback_hours),
        loaded_at_column=loaded_at_column,
    )


class PolledConsent:
    """The campaign category's current consents, read once and then polled for changes."""

    def __init__(
        self,
        engine: sa.Engine,
        consents_table: str,
        category: str,
        *,
        max_age_seconds: float,
        lookback: dt.timedelta,
        loaded_at_column: str | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._engine = engine
        self._table = consents_table
        self._category = category
        self.max_age_seconds = max_age_seconds
        self._lookback = lookback
        self._column = loaded_at_column or "updated_at"
        self._monotonic = monotonic
        # One poll at a time: claims, rechecks and dry runs may ask from different threads.
        self._lock = threading.Lock()
        self._states: dict[str, str] = {}
        self._watermark: Any = None
        self._polled_at: float | None = None  # when the last successful poll began (monotonic)
        self.polls = 0

    def refresh_due(self) -> bool:
        return self._older_than(self._refresh_after())

    def refresh(self) -> None:
        """Poll now if the answers are near their age limit, so that the claim transaction that
        follows finds them fresh and does not poll inside itself."""
        self._poll_if_older_than(self._refresh_after())

    def _refresh_after(self) -> float:
        ahead = min(self.max_age_seconds / 2, max(REFRESH_AHEAD_SECONDS, self.max_age_seconds / 10))
        return self.max_age_seconds - ahead

    def states(self, customer_ids: Iterable[Any]) -> dict[str, str]:
        keys = {str(c) for c in customer_ids if c is not None}
        # Still polled here when too old (a claim that waited for the state store's lock longer
        # than the margin `refresh` leaves): the bound holds either way. Fresh answers are read
        # without waiting for a poll another thread has under way.
        self._poll_if_older_than(self.max_age_seconds)
        states = self._states
        return {k: states[k] for k in keys if k in states}

    def _older_than(self, seconds: float) -> bool:
        return self._polled_at is None or self._monotonic() - self._polled_at > seconds

    def _poll_if_older_than(self, seconds: float) -> None:
        if not self._older_than(seconds):
            return
        with self._lock:
            if self._older_than(seconds):  # not polled by another thread meanwhile
                self._poll()

    def _poll(self) -> None:
        since = None if self._watermark is None else self._watermark - self._lookback
        started, changes, highest = with_lock_retry(lambda: self._read(since))
        self._states.update(changes)
        if highest is not None:
            self._watermark = _not_after_now(highest)
        self._polled_at = started
        self.polls += 1

    def _read(self, since: Any) -> tuple[float, dict[str, str], Any]:
        """(when the read began; customer -> current status for those changed since `since`, or
        all when None; the highest value of the poll's column), on a connection opened and closed
        here."""
        typed = sa.column(self._column, sa.DateTime())
        marks = brand_table(self._table, "customer_id", "category", typed).alias("changed")
        column = marks.c[self._column]
        with reading(self._engine) as conn:
            # The read sees every row committed before it began: the answers' age counts from
            # here, once connected, not from a wait for another process's lock on the file.
            started = self._monotonic()
            # Read before the changes: a row landing in between is read now or by the next poll.
            highest = conn.execute(
                sa.select(sa.func.max(column)).where(marks.c.category == self._category)
            ).scalar()
            changed = None
            if since is not None:
                changed = sa.select(marks.c.customer_id).where(
                    marks.c.category == self._category, column > since
                )
            latest = current_consent_select(
                self._table, self._category, changed_ids=changed
            ).subquery("latest")
            # Two columns in chunks: the first read is the whole category (a million customers).
            rows = conn.execution_options(yield_per=READ_CHUNK_ROWS).execute(
                sa.select(latest.c.customer_id, latest.c.status)
            )
            states = {
                str(customer): _STATUSES.get(status, status)
                for chunk in rows.partitions()
                for customer, status in chunk
            }
        return started, states, highest


def _not_after_now(value: Any) -> Any:
    """The watermark, capped at the clock (in the column's own kind of datetime)."""
    if not isinstance(value, dt.datetime):
        return value
    now = dt.datetime.now(dt.UTC)
    if value.tzinfo is None:
        now = now.replace(tzinfo=None)
    return min(value, now)
