"""Versioned schemas: each store's own tables are made and upgraded by Alembic migrations.

Two stores, two migration histories (`outbound_pipeline/migrations/state/` and `.../warehouse/`),
each with a version table of its own (`outbound_state_version`, `outbound_warehouse_version`): the
stores may be one database or two, and neither history may touch the other's tables. Neither is
named `alembic_version`, which a brand's warehouse may already hold for its own schema.

The pipeline's processes never migrate: opening a store creates its tables at the head revision
when it has none of them, and refuses one at another revision, naming the command that upgrades it
(`outbound-pipeline db upgrade`), run once, on purpose, by whoever owns the schema.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.ddl.impl import DefaultImpl
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from outbound_pipeline.warehouse.engine import INDEXED_DIALECTS, create_tables, lock_ddl

MIGRATIONS = Path(__file__).resolve().parents[1] / "migrations"
UPGRADE_COMMAND = "outbound-pipeline db upgrade"


class SchemaOutOfDate(RuntimeError):
    """A store's schema is not the one this code needs; the message names the command."""


@dataclass(frozen=True)
class VersionedSchema:
    """One store's own tables and their migrations.

    `baseline` names the revision of a database that has the store's tables but no version table
    (made before versioning: the previous release's schema, or today's before its first migration),
    or None when it has none of them."""

    name: str
    label: str  # how messages name the store
    metadata: sa.MetaData
    baseline: Callable[[sa.Inspector], str | None]

    @property
    def directory(self) -> Path:
        return MIGRATIONS / self.name

    @property
    def version_table(self) -> str:
        return f"outbound_{self.name}_version"

    def config(self, conn: sa.Connection | None = None) -> Config:
        """Alembic's configuration of this history; `conn`, when given, is the one it runs on."""
        config = Config()
        config.set_main_option("script_location", str(self.directory))
        config.attributes["schema"] = self
        config.attributes["connection"] = conn
        return config

    @property
    def head(self) -> str:
        return _head(self)


@functools.cache
def _scripts(schema: VersionedSchema) -> ScriptDirectory:
    """The history's migrations, read once per process."""
    return ScriptDirectory.from_config(schema.config())


@functools.cache
def _head(schema: VersionedSchema) -> str:
    head = _scripts(schema).get_current_head()
    assert head is not None, f"no migration in {schema.directory}"
    return head


def _stamp(conn: sa.Connection, schema: VersionedSchema, revision: str) -> None:
    """Record `revision` in the version table (made if missing), running no migration."""
    register_dialect(conn.dialect.name)
    context = MigrationContext.configure(conn, opts={"version_table": schema.version_table})
    context.stamp(_scripts(schema), revision)


def current_revision(conn: sa.Connection, schema: VersionedSchema) -> str | None:
    """The revision the version table records, else the baseline the tables show (None: none)."""
    register_dialect(conn.dialect.name)
    context = MigrationContext.configure(conn, opts={"version_table": schema.version_table})
    recorded = context.get_current_revision()
    return recorded if recorded is not None else schema.baseline(sa.inspect(conn))


def ensure_schema(engine: sa.Engine, schema: VersionedSchema) -> None:
    """The store's schema at head before use: created when the store has none of its tables (and
    the version table stamped), left alone at head, refused at any other revision."""
    with engine.begin() as conn:
        lock_ddl(conn)
        found = current_revision(conn, schema)
        if found is None:
            create_tables(conn, schema.metadata)
            _stamp(conn, schema, schema.head)
        elif found != schema.head:
            raise SchemaOutOfDate(_out_of_date(schema, found))
        elif not _has_version_table(conn, schema):  # today's tables, made before versioning
            _stamp(conn, schema, schema.head)


def _out_of_date(schema: VersionedSchema, found: str) -> str:
    where = f"the {schema.label}'s schema is at revision {found}, this code needs {schema.head}"
    if found not in {script.revision for script in _scripts(schema).walk_revisions()}:
        # A later release's revision (the code was rolled back): no upgrade leads back from it.
        return f"{where}, and {found} is unknown to it: run the release that made it"
    return f"{where}: run `{UPGRADE_COMMAND}` (docs/migrations.md)"


def upgrade_schema(engine: sa.Engine, schema: VersionedSchema) -> tuple[str | None, str]:
    """Bring the store to head in one transaction: (revision before, revision after). A store
    without its tables is created at head; one made before versioning is stamped with its baseline
    revision first, then upgraded."""
    with engine.begin() as conn:
        lock_ddl(conn)
        before = current_revision(conn, schema)
        if before is None:
            create_tables(conn, schema.metadata)
            _stamp(conn, schema, schema.head)
            return None, schema.head
        if not _has_version_table(conn, schema):
            _stamp(conn, schema, before)
        command.upgrade(schema.config(conn), "head")
        return before, schema.head


def _has_version_table(conn: sa.Connection, schema: VersionedSchema) -> bool:
    return sa.inspect(conn).has_table(schema.version_table)


def comparison_options(schema: VersionedSchema, dialect: str) -> dict[str, Any]:
    """How Alembic compares a store with its metadata (autogenerate, the tests): the store's own
    tables only (a warehouse holds the brand's, one database may hold both stores), without
    indexes where the store's engine has none (warehouse.engine.INDEXED_DIALECTS)."""
    indexed = dialect in INDEXED_DIALECTS

    def include_name(name: str | None, type_: str, _parents: Any) -> bool:
        if type_ == "table":
            return name in schema.metadata.tables
        return indexed or type_ not in ("index", "unique_constraint")

    return {"target_metadata": schema.metadata, "include_name": include_name, "compare_type": True}


def run_migrations(context: Any) -> None:
    """The body of each history's env.py: run what Alembic was asked on the connection it was given."""
    schema: VersionedSchema = context.config.attributes["schema"]
    conn: sa.Connection = context.config.attributes["connection"]
    register_dialect(conn.dialect.name)
    context.configure(
        connection=conn,
        version_table=schema.version_table,
        render_as_batch=True,  # SQLite alters a table by copying it: autogenerate writes batch ops
        **comparison_options(schema, conn.dialect.name),
    )
    with context.begin_transaction():
        context.run_migrations()


def register_dialect(name: str) -> None:
    """Alembic knows SQLite, PostgreSQL and a few others; any other SQLAlchemy dialect (DuckDB,
    Snowflake, BigQuery, Databricks) gets the generic implementation, with DDL in transactions where
    the engine has them (DuckDB)."""
    try:
        DefaultImpl.get_by_dialect(_Named(name))  # type: ignore[arg-type]
    except KeyError:
        # Defining the class registers it under __dialect__ (Alembic's ImplMeta).
        transactional = name in _TRANSACTIONAL_DDL
        type(
            f"{name}Impl", (DefaultImpl,), {"__dialect__": name, "transactional_ddl": transactional}
        )


_TRANSACTIONAL_DDL = ("duckdb",)


@dataclass(frozen=True)
class _Named:
    name: str
