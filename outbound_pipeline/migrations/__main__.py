"""`python -m outbound_pipeline.migrations revision STORE MESSAGE`: the next migration of a store
(`state` or `warehouse`), written by Alembic's autogenerate from what the code's tables have and the
migrations do not yet make (docs/migrations.md). Read and edit what it writes before committing."""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
from pathlib import Path

from alembic import command

from outbound_pipeline.ledger import state_schema
from outbound_pipeline.warehouse import VersionedSchema, create_engine, warehouse_schema

SCHEMAS = {schema.name: schema for schema in (state_schema, warehouse_schema)}


def next_revision(schema: VersionedSchema) -> str:
    """s0002 -> s0003: the store's letter and the next number."""
    prefix, number = re.fullmatch(r"([a-z]+)(\d+)", schema.head).groups()  # type: ignore[union-attr]
    return f"{prefix}{int(number) + 1:0{len(number)}d}"


def write_revision(schema: VersionedSchema, message: str, url: str | None = None) -> Path:
    """Migrate a scratch database (SQLite, or the empty database at `url`) to head, compare it with
    the code's tables and write the difference as the next migration; its path."""
    with tempfile.TemporaryDirectory() as scratch:
        engine = create_engine(url or f"sqlite:///{Path(scratch) / 'scratch.sqlite'}")
        try:
            with engine.begin() as conn:
                command.upgrade(schema.config(conn), "head")
                script = command.revision(
                    schema.config(conn), message, autogenerate=True, rev_id=next_revision(schema)
                )
        finally:
            engine.dispose()
    return Path(script.path)  # type: ignore[union-attr]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m outbound_pipeline.migrations")
    sub = parser.add_subparsers(dest="command", required=True)
    revision = sub.add_parser("revision", help="write the next migration of a store")
    revision.add_argument("store", choices=sorted(SCHEMAS))
    revision.add_argument("message", help="what the migration does, e.g. 'outbound_ledger.channel'")
    revision.add_argument(
        "--url",
        help="an EMPTY database to compare on (e.g. a scratch PostgreSQL one, which also compares "
        "column comments); default: a temporary SQLite file",
    )
    args = parser.parse_args(argv)
    path = write_revision(SCHEMAS[args.store], args.message, args.url)
    print(f"wrote {path}: read it, edit it (frozen definitions, data moves), then test it")
    return 0


if __name__ == "__main__":
    sys.exit(main())
