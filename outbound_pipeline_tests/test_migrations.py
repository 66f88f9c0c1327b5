"""The stores' versioned schemas: the migrations build exactly the tables the code declares, on each
engine, and a store is created at head, recognised when made before versioning, or refused."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from outbound_pipeline.ledger import state_schema
from outbound_pipeline.warehouse import (
    SchemaOutOfDate,
    VersionedSchema,
    comparison_options,
    create_engine,
    current_revision,
    ensure_schema,
    upgrade_schema,
    warehouse_schema,
)
from outbound_pipeline_tests.stores import postgres_server_url, scratch_postgres_database

ENGINES = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres), "duckdb"]


@contextlib.contextmanager
def empty_engine(kind: str, tmp_path: Path) -> Iterator[sa.Engine]:
    with contextlib.ExitStack() as stack:
        if kind == "postgres":
            url = stack.enter_context(scratch_postgres_database(postgres_server_url()))  # type: ignore[arg-type]
        else:
            url = f"{kind}:///{tmp_path / 'store'}.{kind}"
        engine = create_engine(url)
        stack.callback(engine.dispose)
        yield engine


def migrate_from_scratch(engine: sa.Engine, schema: VersionedSchema) -> None:
    """Every migration of the history, from the first, as Alembic runs them."""
    with engine.begin() as conn:
        command.upgrade(schema.config(conn), "head")


def differences(engine: sa.Engine, schema: VersionedSchema) -> list[object]:
    """What the store lacks or has too much against the code's tables (Alembic's comparison)."""
    if engine.dialect.name == "duckdb":
        return duckdb_differences(engine, schema)
    with engine.connect() as conn:
        options = comparison_options(schema, conn.dialect.name)
        context = MigrationContext.configure(conn, opts=options)
        return compare_metadata(context, schema.metadata)


# DuckDB's names of the types the code declares (TEXT is its VARCHAR).
_DUCKDB_ALIASES = {"TEXT": "VARCHAR"}


def duckdb_differences(engine: sa.Engine, schema: VersionedSchema) -> list[object]:
    """The comparison by DuckDB's own catalog: Alembic's needs SQLAlchemy's reflection, which
    duckdb-engine 0.17 cannot do under SQLAlchemy 2.1 (it queries pg_catalog.pg_collation).
    Tables, columns, types, nullability and primary keys; DuckDB tables have no index here."""
    with engine.connect() as conn:
        found = {
            (table, column): (data_type, nullable == "YES")
            for table, column, data_type, nullable in conn.exec_driver_sql(
                "SELECT table_name, column_name, data_type, is_nullable "
                "FROM information_schema.columns WHERE table_name LIKE 'outbound_%'"
            )
            if table in schema.metadata.tables
        }
        keys = dict(
            conn.exec_driver_sql(
                "SELECT table_name, constraint_column_names FROM duckdb_constraints() "
                "WHERE constraint_type = 'PRIMARY KEY'"
            ).all()
        )
    wanted = {}
    for table in schema.metadata.tables.values():
        for column in table.columns:
            type_name = column.type.compile(engine.dialect).split("(")[0]
            wanted[(table.name, column.name)] = (
                _DUCKDB_ALIASES.get(type_name, type_name),
                bool(column.nullable),
            )
    missing = [(k, v) for k, v in wanted.items() if found.get(k) != v]
    extra = [k for k in found if k not in wanted]
    keys_differ = [
        t.name
        for t in schema.metadata.tables.values()
        if list(keys.get(t.name, [])) != [c.name for c in t.primary_key.columns]
    ]
    return [*missing, *extra, *keys_differ]


def schemas_for(kind: str) -> list[VersionedSchema]:
    # DuckDB cannot hold the state (no row locks): it is only ever a warehouse.
    return [warehouse_schema] if kind == "duckdb" else [state_schema, warehouse_schema]


@pytest.mark.parametrize("kind", ENGINES)
def test_the_migrations_build_exactly_the_tables_the_code_declares(
    kind: str, tmp_path: Path
) -> None:
    """A table or column added to the code without its migration fails here (docs/migrations.md)."""
    with empty_engine(kind, tmp_path) as engine:
        for schema in schemas_for(kind):  # both histories in one database, as by default
            migrate_from_scratch(engine, schema)
            assert differences(engine, schema) == [], f"{schema.name}: a migration is missing"
            with engine.connect() as conn:
                assert current_revision(conn, schema) == schema.head


@pytest.mark.parametrize("kind", ["sqlite", "duckdb"])
def test_a_store_without_its_tables_is_created_at_head_and_then_left_alone(
    kind: str, tmp_path: Path
) -> None:
    with empty_engine(kind, tmp_path) as engine:
        for _ in range(2):
            ensure_schema(engine, warehouse_schema)
        assert differences(engine, warehouse_schema) == []
        with engine.connect() as conn:
            assert current_revision(conn, warehouse_schema) == warehouse_schema.head


def test_tables_made_before_versioning_are_recognised_and_upgraded(tmp_path: Path) -> None:
    """The tables of the release before versioning (revisions s0002 and w0002, no version table):
    recognised as that revision, refused until upgraded, then brought to head and stamped."""
    with empty_engine("sqlite", tmp_path) as engine:
        for schema, unversioned in ((state_schema, "s0002"), (warehouse_schema, "w0002")):
            with engine.begin() as conn:
                command.upgrade(schema.config(conn), unversioned)
                conn.exec_driver_sql(f"DROP TABLE {schema.version_table}")
                assert current_revision(conn, schema) == unversioned
            if schema.head != unversioned:
                with pytest.raises(SchemaOutOfDate, match="outbound-pipeline db upgrade"):
                    ensure_schema(engine, schema)
            assert upgrade_schema(engine, schema) == (unversioned, schema.head)
            ensure_schema(engine, schema)
            with engine.connect() as conn:
                assert sa.inspect(conn).has_table(schema.version_table)
                assert current_revision(conn, schema) == schema.head


def test_a_store_at_an_older_revision_is_refused_with_the_command_that_upgrades_it(
    tmp_path: Path,
) -> None:
    with empty_engine("sqlite", tmp_path) as engine:
        with engine.begin() as conn:
            command.upgrade(warehouse_schema.config(conn), "w0001")
        with pytest.raises(SchemaOutOfDate, match="outbound-pipeline db upgrade") as refused:
            ensure_schema(engine, warehouse_schema)
        assert "warehouse's schema is at revision w0001" in str(refused.value)


def test_a_store_of_a_later_release_is_refused_without_an_upgrade_to_run(tmp_path: Path) -> None:
    with empty_engine("sqlite", tmp_path) as engine:
        ensure_schema(engine, warehouse_schema)
        with engine.begin() as conn:
            conn.execute(
                sa.text(f"UPDATE {warehouse_schema.version_table} SET version_num = 'w9999'")
            )
        with pytest.raises(SchemaOutOfDate, match="w9999 is unknown to it: run the release"):
            ensure_schema(engine, warehouse_schema)
