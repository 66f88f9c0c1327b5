"""Alembic's entry point for this store's migrations (see docs/migrations.md)."""

from alembic import context

from outbound_pipeline.warehouse import run_migrations

run_migrations(context)
