"""The brand's warehouse: the engine and resource, the pipeline's own tables (with the column
documentation analysts read), bulk writes, safe database errors, and the brand's consent table (queried per
batch, or polled on an analytical warehouse). Each dialect's bulk paths, dates and quoting: dialects/.

The engine helpers (`create_engine`, `create_owned_tables`, `lock_partition`, ...) and the versioned
schemas (`VersionedSchema`, `ensure_schema`, `upgrade_schema`: Alembic migrations under
`outbound_pipeline/migrations/`) serve the state store too (outbound_pipeline.ledger.store)."""

from __future__ import annotations

from outbound_pipeline.warehouse.columns import (
    ANALYST_TABLES,
    markdown_reference,
    table_metadata,
    table_schema,
)
from outbound_pipeline.warehouse.consent import (
    OPTED_IN,
    OPTED_OUT,
    ConsentSource,
    WarehouseConsent,
    consent_id_is_integer,
    current_consent_states,
)
from outbound_pipeline.warehouse.consent_poll import (
    CONSENT_CHECKS,
    ConsentSettings,
    ConsentSettingsError,
    PolledConsent,
    consent_source,
)
from outbound_pipeline.warehouse.dialects import (
    StageWrites,
    analyze_in_transaction,
    compares_text_exactly,
    date_parameter,
    insert_rows,
    key_lists,
    loader_for,
    one_of,
    partition_rows,
    quote_name,
    refresh_statistics,
    replace_partition,
    replace_partition_from,
    upsert_rows,
)
from outbound_pipeline.warehouse.dialects.arrow import Chunk, columns_of, every_column, rows_of
from outbound_pipeline.warehouse.dialects.rows import QueryChunks, query_chunks
from outbound_pipeline.warehouse.engine import (
    INDEXED_DIALECTS,
    PostgresUnreachable,
    create_engine,
    create_owned_tables,
    dialect_insert,
    is_postgres,
    lock_partition,
    normalise_url,
    reading,
    temporary_postgres_database,
)
from outbound_pipeline.warehouse.errors import (
    WarehouseError,
    database_message,
    rows_kept_out_of_errors,
)
from outbound_pipeline.warehouse.report_tables import (
    conversations,
    daily_groups,
    daily_reasons,
    daily_stats,
)
from outbound_pipeline.warehouse.resource import (
    StoreResource,
    WarehouseResource,
    embedded_warehouse_path,
)
from outbound_pipeline.warehouse.retry import is_lock_conflict, with_lock_retry
from outbound_pipeline.warehouse.schema import create_warehouse_tables, warehouse_schema
from outbound_pipeline.warehouse.tables import (
    Timestamp,
    audience,
    deliveries,
    documented_column,
    dry_runs,
    messages,
    metadata,
    provenance_columns,
    suppression_list,
    test_sends,
)
from outbound_pipeline.warehouse.versioning import (
    UPGRADE_COMMAND,
    SchemaOutOfDate,
    VersionedSchema,
    comparison_options,
    current_revision,
    ensure_schema,
    register_dialect,
    run_migrations,
    upgrade_schema,
)

__all__ = [
    "Chunk",
    "QueryChunks",
    "INDEXED_DIALECTS",
    "UPGRADE_COMMAND",
    "SchemaOutOfDate",
    "StageWrites",
    "VersionedSchema",
    "comparison_options",
    "create_warehouse_tables",
    "current_revision",
    "ensure_schema",
    "register_dialect",
    "run_migrations",
    "upgrade_schema",
    "warehouse_schema",
    "ANALYST_TABLES",
    "CONSENT_CHECKS",
    "OPTED_IN",
    "OPTED_OUT",
    "ConsentSettings",
    "ConsentSettingsError",
    "ConsentSource",
    "PolledConsent",
    "PostgresUnreachable",
    "StoreResource",
    "Timestamp",
    "WarehouseError",
    "WarehouseConsent",
    "WarehouseResource",
    "analyze_in_transaction",
    "audience",
    "consent_id_is_integer",
    "consent_source",
    "conversations",
    "columns_of",
    "create_engine",
    "create_owned_tables",
    "current_consent_states",
    "daily_groups",
    "daily_reasons",
    "daily_stats",
    "database_message",
    "date_parameter",
    "deliveries",
    "dialect_insert",
    "documented_column",
    "dry_runs",
    "embedded_warehouse_path",
    "every_column",
    "insert_rows",
    "is_lock_conflict",
    "is_postgres",
    "compares_text_exactly",
    "key_lists",
    "loader_for",
    "lock_partition",
    "markdown_reference",
    "messages",
    "metadata",
    "normalise_url",
    "one_of",
    "partition_rows",
    "provenance_columns",
    "query_chunks",
    "quote_name",
    "reading",
    "refresh_statistics",
    "replace_partition",
    "replace_partition_from",
    "rows_kept_out_of_errors",
    "rows_of",
    "table_metadata",
    "suppression_list",
    "table_schema",
    "temporary_postgres_database",
    "test_sends",
    "upsert_rows",
    "with_lock_retry",
]
