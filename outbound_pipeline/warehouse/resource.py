"""The warehouse as a Dagster resource: the embedded SQLite default (seeded with the demo) or the
brand's own database named by URL, any SQLAlchemy dialect (a DuckDB file included: its engine keeps
no connection between operations and waits for another process's lock, engine.py)."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import dagster as dg
import sqlalchemy as sa
from pydantic import PrivateAttr

from outbound_pipeline.warehouse.consent_poll import (
    DEFAULT_BOUND_SECONDS,
    DEFAULT_LOOKBACK_HOURS,
    ConsentSettings,
)
from outbound_pipeline.warehouse.engine import create_engine, normalise_url, reading
from outbound_pipeline.warehouse.schema import create_warehouse_tables

DEFAULT_WAREHOUSE_DIR = ".outbound"


def embedded_warehouse_path() -> Path:
    """The embedded default: a SQLite file under the working directory (or OUTBOUND_HOME)."""
    home = os.environ.get("OUTBOUND_HOME")
    base = Path(home) if home else Path.cwd() / DEFAULT_WAREHOUSE_DIR
    return base / "warehouse.sqlite"


def ensure_demo_seeded(engine: sa.Engine) -> None:
    """Seed the embedded default once, even when several step processes start together."""
    # Imported here: the demo is needed only by the embedded default, on first use.
    from outbound_pipeline.demo import demo_is_seeded, seed_demo

    if demo_is_seeded(engine):
        return
    try:
        seed_demo(engine)
    except Exception:
        # Another process won the race: its transaction committed first and ours failed.
        if not demo_is_seeded(engine):
            raise


class StoreResource(dg.ConfigurableResource):
    """A database the pipeline keeps an engine of: built from `url` (empty: the embedded SQLite
    file) on first use, disposed of when the run's resources are torn down. Subclasses say what
    opening it prepares (`open`)."""

    url: str | None = None
    _engine: sa.Engine | None = PrivateAttr(default=None)

    @property
    def is_embedded(self) -> bool:
        return not self.url

    @property
    def resolved_url(self) -> str:
        # A resource built outside a run (the CLI) still holds the dg.EnvVar, not its value.
        url = self.url.get_value() if isinstance(self.url, dg.EnvVar) else self.url
        if url:
            return normalise_url(url)
        return f"sqlite:///{embedded_warehouse_path()}"

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        self._engine = self.open()

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None

    def open(self) -> sa.Engine:
        """Build the engine (and whatever the store needs before use)."""
        return self.bare_engine()

    def bare_engine(self) -> sa.Engine:
        """The engine alone, its schema neither checked nor created (for `outbound-pipeline db`)."""
        if self.is_embedded:
            embedded_warehouse_path().parent.mkdir(parents=True, exist_ok=True)
        return create_engine(self.resolved_url, pooled=self._pooled())

    @classmethod
    def _pooled(cls) -> bool:
        """Whether the store's engine keeps connections open between operations."""
        return True

    @property
    def engine(self) -> sa.Engine:
        if self._engine is None:
            self._engine = self.open()
        return self._engine

    def reading(self) -> contextlib.AbstractContextManager[sa.Connection]:
        """A connection for reads that must not hold SQLite's write lock (the other store may be
        the same file, with a write transaction open)."""
        return reading(self.engine)

    def describe(self) -> str:
        """Where the data lives, without credentials, for metadata and logs."""
        return sa.make_url(self.resolved_url).render_as_string(hide_password=True)


class WarehouseResource(StoreResource):
    """The brand's warehouse: reads customers, consents and audience tables; writes outbound_* tables.

    `url` empty means the embedded SQLite default, seeded with demo data on first use. A warehouse named
    by URL is never seeded: the pipeline only reads the brand's tables there and writes its own.
    The `consent_*` fields say how the send step re-checks consent there (`ConsentSettings`).
    """

    consent_check: str = "auto"
    consent_bound_seconds: float = DEFAULT_BOUND_SECONDS
    consent_lookback_hours: float = DEFAULT_LOOKBACK_HOURS

    @classmethod
    def _pooled(cls) -> bool:
        # The warehouse holds no connection open between operations: a DuckDB file admits one
        # process at a time, and a brand's warehouse is not kept busy by idle sessions of ours.
        return False

    def consent_settings(self) -> ConsentSettings:
        return ConsentSettings(
            self.consent_check, self.consent_bound_seconds, self.consent_lookback_hours
        )

    def open(self) -> sa.Engine:
        """Build the engine, check (or create) the owned tables' schema and, for the embedded
        default, the demo."""
        engine = super().open()
        create_warehouse_tables(engine)
        if self.is_embedded:
            ensure_demo_seeded(engine)
        return engine
