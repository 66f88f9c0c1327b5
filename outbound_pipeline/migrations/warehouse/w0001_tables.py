"""Part of revision w0001 (versions/w0001_previous_release.py), frozen with it: the previous
release's outbound_deliveries (then the send ledger itself), outbound_dry_runs and
outbound_test_sends, as that release created them. Kept apart only to keep the revision's module
short; never edit it, and never import today's tables here.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op


def create_ledger_shaped_tables() -> None:
    op.create_table(
        "outbound_deliveries",
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
    op.create_table(
        "outbound_dry_runs",
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
            comment="The ledger key the row would have (recipient, or 'row:<row_key>').",
        ),
        sa.Column("row_key", sa.String(length=200), nullable=False, comment="The audience row."),
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
            "outcome",
            sa.String(length=20),
            nullable=False,
            comment="would_send, or what a real run would record now without a call: skipped, deferred, or the row's final status from an earlier real run (sent, failed, unknown).",
        ),
        sa.Column(
            "reason",
            sa.String(length=300),
            nullable=True,
            comment="Why the row would not be sent (same vocabulary as outbound_deliveries.reason).",
        ),
        sa.Column(
            "not_before",
            sa.DateTime(timezone=True),
            nullable=True,
            comment="A deferred row would not be tried before this time.",
        ),
        sa.Column(
            "template_name", sa.String(length=200), nullable=True, comment="WhatsApp template name."
        ),
        sa.Column("language", sa.String(length=10), nullable=True, comment="Template language."),
        sa.Column(
            "preview_text",
            sa.Text(),
            nullable=True,
            comment="The message the recipient would read.",
        ),
        sa.Column(
            "run_id", sa.String(length=64), nullable=True, comment="Dagster run of the dry run."
        ),
        sa.Column(
            "dry_run_at",
            sa.DateTime(timezone=True),
            nullable=True,
            comment="When the dry run was made.",
        ),
        sa.PrimaryKeyConstraint("campaign_key", "partition_date", "delivery_key"),
    )
    op.create_table(
        "outbound_test_sends",
        sa.Column(
            "run_id",
            sa.String(length=64),
            nullable=False,
            comment="Dagster run of the launch checklist (preflight job).",
        ),
        sa.Column("campaign_key", sa.String(length=64), nullable=False, comment="Campaign slug."),
        sa.Column(
            "recipient",
            sa.String(length=20),
            nullable=False,
            comment="A test recipient configured for the campaign (test_recipients), E.164.",
        ),
        sa.Column(
            "campaign_id", sa.String(length=36), nullable=True, comment="iAdvize campaign UUID."
        ),
        sa.Column("sender", sa.String(length=20), nullable=True, comment="Sender number, E.164."),
        sa.Column(
            "template_name", sa.String(length=200), nullable=True, comment="WhatsApp template name."
        ),
        sa.Column("language", sa.String(length=10), nullable=True, comment="Template language."),
        sa.Column(
            "status",
            sa.String(length=20),
            nullable=False,
            comment="sent, failed or unknown: the API's answer to the test message.",
        ),
        sa.Column(
            "reason",
            sa.String(length=300),
            nullable=True,
            comment="accepted, or why the test message was refused.",
        ),
        sa.Column(
            "error_code",
            sa.String(length=40),
            nullable=True,
            comment="WhatsApp or iAdvize error code of a refusal.",
        ),
        sa.Column(
            "message_id",
            sa.String(length=100),
            nullable=True,
            comment="iAdvize messageId of the accepted test message.",
        ),
        sa.Column(
            "message_text", sa.Text(), nullable=True, comment="messageText iAdvize answered."
        ),
        sa.Column(
            "parameters_from",
            sa.String(length=40),
            nullable=True,
            comment="first_eligible_row or sample_values: where the template's values came from.",
        ),
        sa.Column(
            "sent_at",
            sa.DateTime(timezone=True),
            nullable=True,
            comment="When the test message was sent.",
        ),
        sa.PrimaryKeyConstraint("run_id", "campaign_key", "recipient"),
    )
