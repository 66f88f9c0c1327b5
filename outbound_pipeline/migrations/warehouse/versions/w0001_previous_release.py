"""The previous release's analysts' tables (release b0acc55: one database for everything), among
them outbound_deliveries, then the send ledger itself, with the ledger's indexes.
Frozen: never edit a migration that has shipped.

Revision ID: w0001
Revises: <base>
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from outbound_pipeline.migrations.warehouse.w0001_tables import create_ledger_shaped_tables
from outbound_pipeline.warehouse import INDEXED_DIALECTS

revision = "w0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "outbound_audience",
        sa.Column("campaign_key", sa.String(length=64), nullable=False, comment="Campaign slug."),
        sa.Column(
            "partition_date",
            sa.String(length=10),
            nullable=False,
            comment="Campaign day, YYYY-MM-DD.",
        ),
        sa.Column(
            "row_key",
            sa.String(length=200),
            nullable=False,
            comment="Stable identity of the audience row: customer, raw phone, occurrence.",
        ),
        sa.Column(
            "row_number",
            sa.Integer(),
            nullable=False,
            comment="Position in the audience query's result.",
        ),
        sa.Column(
            "customer_id", sa.String(length=200), nullable=True, comment="The brand's customer ID."
        ),
        sa.Column(
            "phone_raw", sa.Text(), nullable=True, comment="Phone as the warehouse holds it."
        ),
        sa.Column(
            "recipient", sa.String(length=20), nullable=True, comment="Phone in E.164, when valid."
        ),
        sa.Column(
            "phone_region",
            sa.String(length=3),
            nullable=True,
            comment="Country of the recipient's number.",
        ),
        sa.Column(
            "consent_status",
            sa.String(length=20),
            nullable=True,
            comment="Current consent for the campaign's category: opted_in, opted_out or none.",
        ),
        sa.Column(
            "consent_updated_at",
            sa.String(length=40),
            nullable=True,
            comment="When that consent was last recorded.",
        ),
        sa.Column(
            "eligible",
            sa.Boolean(),
            nullable=False,
            comment="True when the row goes on to rendering and sending.",
        ),
        sa.Column(
            "reason",
            sa.String(length=200),
            nullable=True,
            comment="Why the row is not eligible (opted_out, no_consent, phone_invalid, duplicate_recipient, ...).",
        ),
        sa.Column(
            "fields_json",
            sa.Text(),
            nullable=True,
            comment="The audience columns the template variables read, as JSON.",
        ),
        sa.Column(
            "run_id",
            sa.String(length=64),
            nullable=True,
            comment="Dagster run that extracted the row.",
        ),
        sa.PrimaryKeyConstraint("campaign_key", "partition_date", "row_key"),
    )
    op.create_table(
        "outbound_daily_reasons",
        sa.Column("campaign_key", sa.String(length=64), nullable=False, comment="Campaign slug."),
        sa.Column(
            "partition_date",
            sa.String(length=10),
            nullable=False,
            comment="Campaign day, YYYY-MM-DD.",
        ),
        sa.Column(
            "status",
            sa.String(length=20),
            nullable=False,
            comment="Outcome: sent, failed, skipped, deferred, unknown (or pending, sending).",
        ),
        sa.Column(
            "reason",
            sa.String(length=300),
            nullable=False,
            comment="Why the rows have this status (the ledger's reason; the status itself when empty).",
        ),
        sa.Column(
            "row_count",
            sa.Integer(),
            nullable=False,
            comment="Ledger rows of the day with this status and reason.",
        ),
        sa.Column(
            "computed_at",
            sa.DateTime(timezone=True),
            nullable=True,
            comment="When the report was computed.",
        ),
        sa.Column(
            "run_id", sa.String(length=64), nullable=True, comment="Dagster run that computed it."
        ),
        sa.PrimaryKeyConstraint("campaign_key", "partition_date", "status", "reason"),
    )
    op.create_table(
        "outbound_daily_stats",
        sa.Column("campaign_key", sa.String(length=64), nullable=False, comment="Campaign slug."),
        sa.Column(
            "partition_date",
            sa.String(length=10),
            nullable=False,
            comment="Campaign day, YYYY-MM-DD.",
        ),
        sa.Column(
            "audience_rows",
            sa.Integer(),
            nullable=True,
            comment="Rows the audience query returned.",
        ),
        sa.Column(
            "eligible",
            sa.Integer(),
            nullable=True,
            comment="Rows with consent and a valid, unique phone.",
        ),
        sa.Column(
            "rendered",
            sa.Integer(),
            nullable=True,
            comment="Eligible rows whose template rendered within WhatsApp's rules.",
        ),
        sa.Column("sent", sa.Integer(), nullable=True, comment="Messages accepted by iAdvize."),
        sa.Column("failed", sa.Integer(), nullable=True, comment="Rows that failed."),
        sa.Column(
            "skipped",
            sa.Integer(),
            nullable=True,
            comment="Rows not sent on purpose (consent, phone, rendering, duplicates).",
        ),
        sa.Column(
            "deferred",
            sa.Integer(),
            nullable=True,
            comment="Rows left for a later run (limits, quiet hours, temporary errors).",
        ),
        sa.Column(
            "unknown",
            sa.Integer(),
            nullable=True,
            comment="Calls whose outcome is unknown: never resent automatically.",
        ),
        sa.Column(
            "pending",
            sa.Integer(),
            nullable=True,
            comment="Rows not yet resolved (a run is sending or was interrupted).",
        ),
        sa.Column(
            "reasons_json", sa.Text(), nullable=True, comment="Counts per status and reason, JSON."
        ),
        sa.Column(
            "first_sent_at",
            sa.DateTime(timezone=True),
            nullable=True,
            comment="First acceptance of the day.",
        ),
        sa.Column(
            "last_sent_at",
            sa.DateTime(timezone=True),
            nullable=True,
            comment="Last acceptance of the day.",
        ),
        sa.Column(
            "send_rate_per_s",
            sa.Float(),
            nullable=True,
            comment="Accepted messages per second between the first and last send.",
        ),
        sa.Column(
            "computed_at",
            sa.DateTime(timezone=True),
            nullable=True,
            comment="When the report was computed.",
        ),
        sa.Column(
            "run_id", sa.String(length=64), nullable=True, comment="Dagster run that computed it."
        ),
        sa.PrimaryKeyConstraint("campaign_key", "partition_date"),
    )
    create_ledger_shaped_tables()
    op.create_table(
        "outbound_messages",
        sa.Column("campaign_key", sa.String(length=64), nullable=False, comment="Campaign slug."),
        sa.Column(
            "partition_date",
            sa.String(length=10),
            nullable=False,
            comment="Campaign day, YYYY-MM-DD.",
        ),
        sa.Column(
            "row_key", sa.String(length=200), nullable=False, comment="The audience row rendered."
        ),
        sa.Column(
            "customer_id", sa.String(length=200), nullable=True, comment="The brand's customer ID."
        ),
        sa.Column("recipient", sa.String(length=20), nullable=False, comment="Phone in E.164."),
        sa.Column(
            "template_name",
            sa.String(length=200),
            nullable=False,
            comment="WhatsApp template name.",
        ),
        sa.Column("language", sa.String(length=10), nullable=False, comment="Template language."),
        sa.Column(
            "category",
            sa.String(length=20),
            nullable=False,
            comment="Template category: MARKETING, UTILITY or AUTHENTICATION.",
        ),
        sa.Column(
            "header_params_json",
            sa.Text(),
            nullable=True,
            comment="Header parameters, JSON list in placeholder order.",
        ),
        sa.Column(
            "body_params_json",
            sa.Text(),
            nullable=True,
            comment="Body parameters, JSON list in placeholder order.",
        ),
        sa.Column(
            "preview_text",
            sa.Text(),
            nullable=True,
            comment="The message as the recipient reads it.",
        ),
        sa.Column(
            "rendered",
            sa.Boolean(),
            nullable=False,
            comment="True when the row can be sent; false when a parameter broke a rule.",
        ),
        sa.Column(
            "reason",
            sa.String(length=300),
            nullable=True,
            comment="Why the row cannot be sent, naming the variable and the rule.",
        ),
        sa.Column(
            "run_id",
            sa.String(length=64),
            nullable=True,
            comment="Dagster run that rendered the row.",
        ),
        sa.PrimaryKeyConstraint("campaign_key", "partition_date", "row_key"),
    )
    if op.get_bind().dialect.name not in INDEXED_DIALECTS:
        return  # an analytical engine: no index
    op.create_index(
        "ix_outbound_audience_recipient",
        "outbound_audience",
        ["campaign_key", "partition_date", "recipient"],
        unique=False,
    )
    op.create_index(
        "ix_outbound_deliveries_customer",
        "outbound_deliveries",
        ["campaign_key", "partition_date", "customer_id"],
        unique=False,
    )
    op.create_index(
        "ix_outbound_deliveries_recipient",
        "outbound_deliveries",
        ["recipient", "claimed_at"],
        unique=False,
    )
    op.create_index(
        "ix_outbound_deliveries_row",
        "outbound_deliveries",
        ["campaign_key", "partition_date", "row_key"],
        unique=False,
    )
    op.create_index(
        "ix_outbound_deliveries_scope",
        "outbound_deliveries",
        ["limit_scope", "claimed_at"],
        unique=False,
    )
    op.create_index(
        "ix_outbound_deliveries_status",
        "outbound_deliveries",
        ["campaign_key", "partition_date", "status"],
        unique=False,
    )
    op.create_index(
        "ix_outbound_messages_recipient",
        "outbound_messages",
        ["campaign_key", "partition_date", "recipient"],
        unique=False,
    )
