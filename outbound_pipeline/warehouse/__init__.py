"""The brand's warehouse: the engine and resource, the pipeline's own tables (with the column
documentation analysts read), bulk writes, safe database errors, and the brand's consent table."""

from __future__ import annotations

from outbound_pipeline.warehouse.bulk import refresh_statistics, upsert_rows
from outbound_pipeline.warehouse.columns import (
    ANALYST_TABLES,
    markdown_reference,
    table_metadata,
    table_schema,
)
from outbound_pipeline.warehouse.consent import (
    OPTED_IN,
    OPTED_OUT,
    consent_id_is_integer,
    current_consent_states,
)
from outbound_pipeline.warehouse.engine import (
    PostgresUnreachable,
    create_engine,
    create_owned_tables,
    dialect_insert,
    lock_partition,
    temporary_postgres_database,
)
from outbound_pipeline.warehouse.errors import (
    WarehouseError,
    database_message,
    rows_kept_out_of_errors,
)
from outbound_pipeline.warehouse.resource import WarehouseResource, embedded_warehouse_path
from outbound_pipeline.warehouse.tables import (
    audience,
    daily_reasons,
    daily_stats,
    deliveries,
    dry_runs,
    halts,
    messages,
    metadata,
    quota_scopes,
    quota_usage,
    send_runs,
    sender_pace,
    test_sends,
)

__all__ = [
    "ANALYST_TABLES",
    "OPTED_IN",
    "OPTED_OUT",
    "PostgresUnreachable",
    "WarehouseError",
    "WarehouseResource",
    "audience",
    "consent_id_is_integer",
    "create_engine",
    "create_owned_tables",
    "current_consent_states",
    "daily_reasons",
    "daily_stats",
    "database_message",
    "deliveries",
    "dialect_insert",
    "dry_runs",
    "embedded_warehouse_path",
    "halts",
    "lock_partition",
    "markdown_reference",
    "messages",
    "metadata",
    "quota_scopes",
    "quota_usage",
    "refresh_statistics",
    "rows_kept_out_of_errors",
    "send_runs",
    "sender_pace",
    "table_metadata",
    "table_schema",
    "temporary_postgres_database",
    "test_sends",
    "upsert_rows",
]
