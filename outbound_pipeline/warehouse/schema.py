"""The warehouse's versioned schema: the analysts' tables the pipeline owns there, their migrations in
`outbound_pipeline/migrations/warehouse/`, and how a warehouse made before versioning is recognised."""

from __future__ import annotations

import sqlalchemy as sa

from outbound_pipeline.warehouse.tables import metadata
from outbound_pipeline.warehouse.versioning import VersionedSchema, ensure_schema

# The previous release (one database for everything) indexed outbound_deliveries, its ledger; its
# published copy has no index.
_PREVIOUS_RELEASE_INDEX = "ix_outbound_deliveries_row"


def _baseline(inspector: sa.Inspector) -> str | None:
    tables = set(inspector.get_table_names())
    if not tables & {"outbound_audience", "outbound_deliveries"}:
        return None
    if "outbound_deliveries" in tables:
        indexes = {index["name"] for index in inspector.get_indexes("outbound_deliveries")}
        if _PREVIOUS_RELEASE_INDEX in indexes:
            return "w0001"
    return "w0002"


warehouse_schema = VersionedSchema("warehouse", "warehouse", metadata, _baseline)


def create_warehouse_tables(engine: sa.Engine) -> None:
    """The warehouse's own tables at the head revision (made if missing; refused when older)."""
    ensure_schema(engine, warehouse_schema)
