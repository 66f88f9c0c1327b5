"""The state store: the transactional database of everything that coordinates sending (the ledger,
claims, limits, pace, halts, send runs), as a Dagster resource.

SQLite or PostgreSQL, nothing else: claims lock rows (PostgreSQL's `FOR UPDATE SKIP LOCKED`, its
advisory locks) or need a single transactional writer (SQLite's `BEGIN IMMEDIATE`), which the
analytical engines a brand's warehouse runs on (DuckDB, Snowflake, BigQuery, ...) do not offer.
By default it is the warehouse itself when that is SQLite or PostgreSQL (settings.py).
"""

from __future__ import annotations

import sqlalchemy as sa

from outbound_pipeline.ledger.tables import metadata as ledger_metadata
from outbound_pipeline.unsubscribe import metadata as suppressions_metadata
from outbound_pipeline.warehouse import (
    StoreResource,
    VersionedSchema,
    ensure_schema,
    normalise_url,
)

STATE_DIALECTS = ("sqlite", "postgresql")


class StateStoreError(ValueError):
    """The state store cannot be used: its URL names a database that cannot hold the state."""


def state_dialect_problem(url: str) -> str | None:
    """Why a URL cannot be the state store (its dialect named, never the URL), or None."""
    try:
        backend = sa.make_url(normalise_url(url)).get_backend_name()
    except sa.exc.ArgumentError:
        return "it is not a SQLAlchemy database URL"
    if backend in STATE_DIALECTS:
        return None
    return (
        f"it is a {backend} database, and the ledger's claims need row locks (PostgreSQL's) or a "
        f"single transactional writer (SQLite's), which {backend} does not offer"
    )


def _state_metadata() -> sa.MetaData:
    """The state store's tables: the ledger's and the suppression list the unsubscribe endpoint
    writes, on one MetaData (what the migrations' head must equal)."""
    merged = sa.MetaData()
    for source in (ledger_metadata, suppressions_metadata):
        for table in source.tables.values():
            table.to_metadata(merged)
    return merged


def _baseline(inspector: sa.Inspector) -> str | None:
    """The previous release kept its ledger in outbound_deliveries, beside outbound_send_runs; today's
    keeps it in outbound_ledger."""
    tables = set(inspector.get_table_names())
    if "outbound_ledger" in tables:
        return "s0002"
    if "outbound_send_runs" in tables:
        return "s0001"
    return None


state_schema = VersionedSchema("state", "state store", _state_metadata(), _baseline)


def create_state_tables(engine: sa.Engine) -> None:
    """The state store's tables at the head revision (made if missing; refused when older): the one
    place its schema is made, the suppression list the unsubscribe endpoint writes included."""
    ensure_schema(engine, state_schema)


class StateStoreResource(StoreResource):
    """The state store: SQLite or PostgreSQL, named by URL (from the environment, a `dg.EnvVar`).

    `url` empty means the embedded default: the embedded warehouse's SQLite file. Its tables are
    created on first use. The URL never reaches logs or metadata: `describe()` hides the password.
    """

    def open(self) -> sa.Engine:
        """Build the engine and check (or create) the state tables' schema; a URL that cannot hold
        state is refused."""
        problem = state_dialect_problem(self.resolved_url)
        if problem:
            raise StateStoreError(f"the state store cannot be this database: {problem}")
        engine = super().open()
        create_state_tables(engine)
        return engine
