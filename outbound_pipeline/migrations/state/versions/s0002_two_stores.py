"""Two stores: the ledger moves out of the analysts' outbound_deliveries into the state store's own
table, outbound_ledger (same columns, the ledger's indexes); the day's plan (outbound_plan) and the
suppression list (outbound_suppressions) join it.

A database of the previous release holds its ledger history in outbound_deliveries: when that table
is in this database (the state store is still the warehouse), its rows are copied into the new
ledger, so that nothing already sent is sent again. A state store apart from the warehouse gets the
history from `outbound-pipeline db upgrade` (outbound_pipeline.ledger.upgrade).
Frozen: never edit a migration that has shipped.

Revision ID: s0002
Revises: s0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "s0002"
down_revision = "s0001"
branch_labels = None
depends_on = None

PREVIOUS_LEDGER = "outbound_deliveries"


def upgrade() -> None:
    ledger = op.create_table(
        "outbound_ledger",
        sa.Column("campaign_key", sa.String(length=64), nullable=False, comment="Campaign slug."),
        sa.Column(
            "partition_date",
            sa.String(length=10),
            nullable=False,
            comment="Campaign day, YYYY-MM-DD.",
        ),
        sa.Column(
            "delivery_key",
            sa.String(length=220),
            nullable=False,
            comment="Ledger key: the recipient for a send, 'row:<row_key>' for a row that is not sent.",
        ),
        sa.Column(
            "row_key",
            sa.String(length=200),
            nullable=False,
            comment="The audience row this outcome belongs to.",
        ),
        sa.Column(
            "customer_id", sa.String(length=200), nullable=True, comment="The brand's customer ID."
        ),
        sa.Column(
            "recipient",
            sa.String(length=20),
            nullable=True,
            comment="Phone in E.164 (null when the row had no valid phone).",
        ),
        sa.Column(
            "campaign_id", sa.String(length=36), nullable=True, comment="iAdvize campaign UUID."
        ),
        sa.Column("sender", sa.String(length=20), nullable=True, comment="Sender number, E.164."),
        sa.Column(
            "limit_scope",
            sa.String(length=120),
            nullable=True,
            comment="Messaging-limit scope the send counts against.",
        ),
        sa.Column(
            "template_name", sa.String(length=200), nullable=True, comment="WhatsApp template name."
        ),
        sa.Column("language", sa.String(length=10), nullable=True, comment="Template language."),
        sa.Column("category", sa.String(length=20), nullable=True, comment="Template category."),
        sa.Column(
            "header_params_json",
            sa.Text(),
            nullable=True,
            comment="Header parameters sent, JSON list.",
        ),
        sa.Column(
            "body_params_json", sa.Text(), nullable=True, comment="Body parameters sent, JSON list."
        ),
        sa.Column(
            "status",
            sa.String(length=20),
            nullable=False,
            comment="pending, sending, sent, failed, skipped, deferred or unknown.",
        ),
        sa.Column(
            "reason", sa.String(length=300), nullable=True, comment="Why the row has this status."
        ),
        sa.Column(
            "error_code",
            sa.String(length=40),
            nullable=True,
            comment="WhatsApp or iAdvize error code of the last failure.",
        ),
        sa.Column(
            "retryable",
            sa.Boolean(),
            nullable=True,
            comment="True when a later run may try again (deferred rows, temporary failures).",
        ),
        sa.Column(
            "message_id",
            sa.String(length=100),
            nullable=True,
            comment="iAdvize messageId of the accepted message.",
        ),
        sa.Column(
            "message_text",
            sa.Text(),
            nullable=True,
            comment="messageText iAdvize answered: the rendered message.",
        ),
        sa.Column(
            "attempts",
            sa.Integer(),
            nullable=False,
            comment="API calls made for this row, all runs together.",
        ),
        sa.Column(
            "claim_token",
            sa.String(length=64),
            nullable=True,
            comment="Owner of an in-flight send (run and process).",
        ),
        sa.Column(
            "claimed_at",
            sa.DateTime(timezone=True),
            nullable=True,
            comment="When the last send was claimed: the contact time for limits.",
        ),
        sa.Column(
            "sent_at",
            sa.DateTime(timezone=True),
            nullable=True,
            comment="When iAdvize accepted the message.",
        ),
        sa.Column(
            "attribution_expires_at",
            sa.DateTime(timezone=True),
            nullable=True,
            comment="sent_at + the campaign's attribution window: replies before it belong to the campaign.",
        ),
        sa.Column(
            "not_before",
            sa.DateTime(timezone=True),
            nullable=True,
            comment="A deferred row is not tried again before this time.",
        ),
        sa.Column(
            "resend_requested_by",
            sa.String(length=64),
            nullable=True,
            comment="Run that explicitly asked to resend an unknown or failed row.",
        ),
        sa.Column(
            "run_id",
            sa.String(length=64),
            nullable=True,
            comment="Dagster run that last changed the row.",
        ),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=True, comment="Last change."),
        sa.PrimaryKeyConstraint("campaign_key", "partition_date", "delivery_key"),
    )
    op.create_index(
        "ix_outbound_ledger_customer",
        "outbound_ledger",
        ["campaign_key", "partition_date", "customer_id"],
        unique=False,
    )
    op.create_index(
        "ix_outbound_ledger_recipient", "outbound_ledger", ["recipient", "claimed_at"], unique=False
    )
    op.create_index(
        "ix_outbound_ledger_row",
        "outbound_ledger",
        ["campaign_key", "partition_date", "row_key"],
        unique=False,
    )
    op.create_index(
        "ix_outbound_ledger_scope", "outbound_ledger", ["limit_scope", "claimed_at"], unique=False
    )
    op.create_index(
        "ix_outbound_ledger_status",
        "outbound_ledger",
        ["campaign_key", "partition_date", "status"],
        unique=False,
    )
    op.create_table(
        "outbound_plan",
        sa.Column("campaign_key", sa.String(length=64), nullable=False, comment="Campaign slug."),
        sa.Column(
            "partition_date",
            sa.String(length=10),
            nullable=False,
            comment="Campaign day, YYYY-MM-DD.",
        ),
        sa.Column("row_key", sa.String(length=200), nullable=False, comment="The audience row."),
        sa.Column(
            "customer_id", sa.String(length=200), nullable=True, comment="The brand's customer ID."
        ),
        sa.Column(
            "recipient", sa.String(length=20), nullable=True, comment="Phone in E.164, when valid."
        ),
        sa.Column(
            "eligible",
            sa.Boolean(),
            nullable=False,
            comment="The audience row's verdict: true when it goes on.",
        ),
        sa.Column(
            "audience_reason",
            sa.String(length=200),
            nullable=True,
            comment="Why the audience row is not eligible.",
        ),
        sa.Column(
            "rendered",
            sa.Boolean(),
            nullable=True,
            comment="True when its message can be sent; null without a message.",
        ),
        sa.Column(
            "message_reason",
            sa.String(length=300),
            nullable=True,
            comment="Why the message cannot be sent.",
        ),
        sa.Column(
            "template_name", sa.String(length=200), nullable=True, comment="WhatsApp template name."
        ),
        sa.Column("language", sa.String(length=10), nullable=True, comment="Template language."),
        sa.Column("category", sa.String(length=20), nullable=True, comment="Template category."),
        sa.Column(
            "header_params_json", sa.Text(), nullable=True, comment="Header parameters, JSON list."
        ),
        sa.Column(
            "body_params_json", sa.Text(), nullable=True, comment="Body parameters, JSON list."
        ),
        sa.PrimaryKeyConstraint("campaign_key", "partition_date", "row_key"),
    )
    op.create_index(
        "ix_outbound_plan_recipient",
        "outbound_plan",
        ["campaign_key", "partition_date", "recipient"],
        unique=False,
    )
    # The unsubscribe command could make it on its own before it joined the state store's tables.
    if not sa.inspect(op.get_bind()).has_table("outbound_suppressions"):
        op.create_table(
            "outbound_suppressions",
            sa.Column("phone", sa.String(length=16), nullable=False, comment="Phone in E.164."),
            sa.Column(
                "source",
                sa.String(length=16),
                nullable=False,
                comment="How it was asked: link or cli.",
            ),
            sa.Column(
                "suppressed_at",
                sa.DateTime(timezone=True),
                nullable=False,
                comment="When the first request was recorded (UTC); a repeated one keeps it.",
            ),
            sa.PrimaryKeyConstraint("phone"),
            comment="Phones that receive no message from any campaign.",
        )
    _carry_over_history(ledger)


def _carry_over_history(ledger: sa.Table) -> None:
    """Copy the previous release's ledger rows, every column, into the new (empty) ledger."""
    if not sa.inspect(op.get_bind()).has_table(PREVIOUS_LEDGER):
        return
    names = [column.name for column in ledger.columns]
    previous = sa.table(PREVIOUS_LEDGER, *(sa.column(name) for name in names))
    op.execute(ledger.insert().from_select(names, sa.select(*previous.c)))
