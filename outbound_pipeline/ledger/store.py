"""The state store: the transactional database of everything that coordinates sending (the ledger,
claims, limits, pace, halts, send runs), as a Dagster resource.

SQLite or PostgreSQL, nothing else: claims lock rows (PostgreSQL's `FOR UPDATE SKIP LOCKED`, its
advisory locks) or need a single transactional writer (SQLite's `BEGIN IMMEDIATE`), which the
analytical engines a brand's warehouse runs on (DuckDB, Snowflake, BigQuery, ...) do not offer.
By default it is the warehouse itself when that is SQLite or PostgreSQL (settings.py).
"""

from __future__ import annotations

import sqlalchemy as sa

from outbound_pipeline.ledger.tables import metadata
from outbound_pipeline.unsubscribe import metadata as suppressions_metadata
from outbound_pipeline.warehouse import StoreResource, create_owned_tables, normalise_url

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


def create_state_tables(engine: sa.Engine) -> None:
    """Create the state store's tables if missing (the one place its schema is made), the
    suppression list the unsubscribe endpoint writes included."""
    create_owned_tables(engine, metadata)
    create_owned_tables(engine, suppressions_metadata)


class StateStoreResource(StoreResource):
    """The state store: SQLite or PostgreSQL, named by URL (from the environment, a `dg.EnvVar`).

    `url` empty means the embedded default: the embedded warehouse's SQLite file. Its tables are
    created on first use. The URL never reaches logs or metadata: `describe()` hides the password.
    """

    def open(self) -> sa.Engine:
        """Build the engine and create the state tables; a URL that cannot hold state is refused."""
        problem = state_dialect_problem(self.resolved_url)
        if problem:
            raise StateStoreError(f"the state store cannot be this database: {problem}")
        engine = super().open()
        create_state_tables(engine)
        return engine
