"""Column documentation from one source: the comments of the owned tables (tables.py).

The same text reaches the Dagster UI (`dagster/column_schema` metadata on each asset), the warehouse
(column comments on PostgreSQL) and the analysts' guide (`docs/analysts.md`, checked by a test).

    outbound-pipeline columns     # print the Markdown column reference
"""

from __future__ import annotations

import dagster as dg
import sqlalchemy as sa

from outbound_pipeline.warehouse.report_tables import (
    conversations,
    daily_groups,
    daily_reasons,
    daily_stats,
)
from outbound_pipeline.warehouse.tables import (
    audience,
    deliveries,
    dry_runs,
    messages,
    suppression_list,
    test_sends,
)

# The tables analysts read, in the order the guide presents them.
ANALYST_TABLES: tuple[sa.Table, ...] = (
    deliveries,
    daily_stats,
    daily_reasons,
    conversations,
    audience,
    messages,
    dry_runs,
    test_sends,
    daily_groups,
    suppression_list,
)


def column_type(column: sa.Column) -> str:
    """A portable type name: the SQL type as SQLAlchemy names it generically."""
    type_ = column.type
    if isinstance(type_, sa.DateTime):
        return "timestamp with time zone" if type_.timezone else "timestamp"
    if isinstance(type_, sa.String) and not isinstance(type_, sa.Text) and type_.length:
        return f"varchar({type_.length})"
    return type_.__visit_name__.lower()


def table_schema(table: sa.Table) -> dg.TableSchema:
    """The table's columns with their types, descriptions and constraints, for the Dagster UI."""
    primary = {c.name for c in table.primary_key.columns}
    columns = []
    for column in table.columns:
        other = ["primary key"] if column.name in primary else []
        columns.append(
            dg.TableColumn(
                name=column.name,
                type=column_type(column),
                description=column.comment or "",
                constraints=dg.TableColumnConstraints(
                    nullable=bool(column.nullable) and column.name not in primary, other=other
                ),
            )
        )
    return dg.TableSchema(columns=columns)


def table_metadata(table: sa.Table) -> dict[str, object]:
    """Definition metadata of an asset that writes `table`: its name and documented columns."""
    return {
        "dagster/table_name": table.name,
        "dagster/column_schema": table_schema(table),
    }


def markdown_reference(selected: tuple[sa.Table, ...] = ANALYST_TABLES) -> str:
    """One Markdown table per warehouse table: column, type, description."""
    parts = []
    for table in selected:
        primary = [c.name for c in table.primary_key.columns]
        lines = [
            f"### `{table.name}`",
            "",
            f"Primary key: {', '.join(f'`{c}`' for c in primary)}.",
            "",
            "| column | type | description |",
            "|---|---|---|",
        ]
        for column in table.columns:
            text = (column.comment or "").replace("|", "\\|")
            lines.append(f"| `{column.name}` | {column_type(column)} | {text} |")
        parts.append("\n".join(lines))
    return "\n\n".join(parts) + "\n"
