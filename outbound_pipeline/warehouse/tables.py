"""The warehouse tables the pipeline owns, with the column descriptions analysts read.

Each stage writes its table here (audience, messages, dry runs, test sends; the report's tables are in
report_tables.py), and the send ledger is published here as `outbound_deliveries`. What coordinates
sending (the ledger itself, claims, limits, pace, halts) lives in the state store: `outbound_pipeline.ledger.tables`.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

metadata = sa.MetaData()

Timestamp = sa.DateTime(timezone=True)


def documented_column(name: str, type_: sa.types.TypeEngine, doc: str, **kwargs: Any) -> sa.Column:
    return sa.Column(name, type_, comment=doc, **kwargs)


def provenance_columns() -> list[sa.Column]:
    """The consent record that allowed a row, as the audience read it (plan, ledger, deliveries)."""
    return [
        documented_column(
            "consent_category", sa.String(100), "Consent category of the record that allowed it."
        ),
        documented_column(
            "consent_status", sa.String(20), "That record's status at extraction (opted_in)."
        ),
        documented_column(
            "consent_updated_at", sa.String(40), "That record's updated_at, as the brand stores it."
        ),
        documented_column(
            "consent_record_json",
            sa.Text,
            "That record's identifying columns (consent_columns: an id, its source...), JSON.",
        ),
    ]


audience = sa.Table(
    "outbound_audience",
    metadata,
    documented_column("campaign_key", sa.String(64), "Campaign slug.", nullable=False),
    documented_column("partition_date", sa.String(10), "Campaign day, YYYY-MM-DD.", nullable=False),
    documented_column(
        "row_key",
        sa.String(200),
        "Stable identity of the audience row: customer, raw phone, occurrence.",
        nullable=False,
    ),
    documented_column(
        "row_number", sa.Integer, "Position in the audience query's result.", nullable=False
    ),
    documented_column("customer_id", sa.String(200), "The brand's customer ID."),
    documented_column("phone_raw", sa.Text, "Phone as the warehouse holds it."),
    documented_column("recipient", sa.String(20), "Phone in E.164, when valid."),
    documented_column("phone_region", sa.String(3), "Country of the recipient's number."),
    documented_column(
        "consent_status",
        sa.String(20),
        "Current consent for the campaign's category: opted_in, opted_out or none.",
    ),
    documented_column("consent_updated_at", sa.String(40), "When that consent was last recorded."),
    documented_column("consent_category", sa.String(100), "The campaign's consent category."),
    documented_column(
        "consent_record_json",
        sa.Text,
        "The consent record's identifying columns (consent_columns: an id, its source...), JSON.",
    ),
    documented_column("variant", sa.String(32), "The campaign variant assigned (null: none)."),
    documented_column(
        "eligible",
        sa.Boolean,
        "True when the row goes on to rendering and sending.",
        nullable=False,
    ),
    documented_column(
        "reason",
        sa.String(200),
        "Why the row is not eligible (opted_out, no_consent, phone_invalid, duplicate_recipient, ...).",
    ),
    documented_column(
        "fields_json", sa.Text, "The audience columns the template variables read, as JSON."
    ),
    documented_column("run_id", sa.String(64), "Dagster run that extracted the row."),
    sa.PrimaryKeyConstraint("campaign_key", "partition_date", "row_key"),
    sa.Index("ix_outbound_audience_recipient", "campaign_key", "partition_date", "recipient"),
)

messages = sa.Table(
    "outbound_messages",
    metadata,
    documented_column("campaign_key", sa.String(64), "Campaign slug.", nullable=False),
    documented_column("partition_date", sa.String(10), "Campaign day, YYYY-MM-DD.", nullable=False),
    documented_column("row_key", sa.String(200), "The audience row rendered.", nullable=False),
    documented_column("customer_id", sa.String(200), "The brand's customer ID."),
    documented_column("recipient", sa.String(20), "Phone in E.164.", nullable=False),
    documented_column("template_name", sa.String(200), "WhatsApp template name.", nullable=False),
    documented_column("language", sa.String(10), "Template language.", nullable=False),
    documented_column(
        "category",
        sa.String(20),
        "Template category: MARKETING, UTILITY or AUTHENTICATION.",
        nullable=False,
    ),
    documented_column("variant", sa.String(32), "The campaign variant rendered (null: none)."),
    documented_column(
        "header_params_json", sa.Text, "Header parameters, JSON list in placeholder order."
    ),
    documented_column(
        "body_params_json", sa.Text, "Body parameters, JSON list in placeholder order."
    ),
    documented_column("preview_text", sa.Text, "The message as the recipient reads it."),
    documented_column(
        "rendered",
        sa.Boolean,
        "True when the row can be sent; false when a parameter broke a rule.",
        nullable=False,
    ),
    documented_column(
        "reason", sa.String(300), "Why the row cannot be sent, naming the variable and the rule."
    ),
    documented_column("run_id", sa.String(64), "Dagster run that rendered the row."),
    sa.PrimaryKeyConstraint("campaign_key", "partition_date", "row_key"),
    # reconcile joins messages to the ledger by recipient.
    sa.Index("ix_outbound_messages_recipient", "campaign_key", "partition_date", "recipient"),
)


# The ledger's published copy (outbound_pipeline.ledger.publish): what analysts query. The state
# store's ledger, `outbound_ledger`, is this table's copy (same columns), with the ledger's indexes.
deliveries = sa.Table(
    "outbound_deliveries",
    metadata,
    documented_column("campaign_key", sa.String(64), "Campaign slug.", nullable=False),
    documented_column("partition_date", sa.String(10), "Campaign day, YYYY-MM-DD.", nullable=False),
    documented_column(
        "delivery_key",
        sa.String(220),
        "Ledger key: the recipient for a send, 'row:<row_key>' for a row that is not sent.",
        nullable=False,
    ),
    documented_column(
        "row_key", sa.String(200), "The audience row this outcome belongs to.", nullable=False
    ),
    documented_column("customer_id", sa.String(200), "The brand's customer ID."),
    documented_column(
        "recipient", sa.String(20), "Phone in E.164 (null when the row had no valid phone)."
    ),
    documented_column("campaign_id", sa.String(36), "iAdvize campaign UUID."),
    documented_column("sender", sa.String(20), "Sender number, E.164."),
    documented_column(
        "limit_scope", sa.String(120), "Messaging-limit scope the send counts against."
    ),
    documented_column("template_name", sa.String(200), "WhatsApp template name."),
    documented_column("language", sa.String(10), "Template language."),
    documented_column("category", sa.String(20), "Template category."),
    documented_column("header_params_json", sa.Text, "Header parameters sent, JSON list."),
    documented_column("body_params_json", sa.Text, "Body parameters sent, JSON list."),
    documented_column(
        "status",
        sa.String(20),
        "pending, sending, sent, failed, skipped, deferred or unknown.",
        nullable=False,
    ),
    documented_column("reason", sa.String(300), "Why the row has this status."),
    documented_column(
        "error_code", sa.String(40), "WhatsApp or iAdvize error code of the last failure."
    ),
    documented_column(
        "retryable",
        sa.Boolean,
        "True when a later run may try again (deferred rows, temporary failures).",
    ),
    documented_column("message_id", sa.String(100), "iAdvize messageId of the accepted message."),
    documented_column(
        "message_text", sa.Text, "messageText iAdvize answered: the rendered message."
    ),
    documented_column(
        "attempts",
        sa.Integer,
        "API calls made for this row, all runs together.",
        nullable=False,
        default=0,
    ),
    documented_column(
        "claim_token", sa.String(64), "Owner of an in-flight send (run and process)."
    ),
    documented_column(
        "claimed_at", Timestamp, "When the last send was claimed: the contact time for limits."
    ),
    documented_column("sent_at", Timestamp, "When iAdvize accepted the message."),
    documented_column(
        "attribution_expires_at",
        Timestamp,
        "sent_at + the campaign's attribution window: replies before it belong to the campaign.",
    ),
    documented_column(
        "not_before", Timestamp, "A deferred row is not tried again before this time."
    ),
    documented_column(
        "resend_requested_by",
        sa.String(64),
        "Run that explicitly asked to resend an unknown or failed row.",
    ),
    documented_column("run_id", sa.String(64), "Dagster run that last changed the row."),
    documented_column("updated_at", Timestamp, "Last change."),
    *provenance_columns(),
    documented_column(
        "consent_checked_at",
        Timestamp,
        "When the last-moment checks passed (consent opted_in, phone not suppressed).",
    ),
    documented_column("variant", sa.String(32), "The campaign variant sent (null: none)."),
    sa.PrimaryKeyConstraint("campaign_key", "partition_date", "delivery_key"),
)

dry_runs = sa.Table(
    "outbound_dry_runs",
    metadata,
    documented_column("campaign_key", sa.String(64), "Campaign slug.", nullable=False),
    documented_column("partition_date", sa.String(10), "Campaign day, YYYY-MM-DD.", nullable=False),
    documented_column(
        "delivery_key",
        sa.String(220),
        "The ledger key the row would have (recipient, or 'row:<row_key>').",
        nullable=False,
    ),
    documented_column("row_key", sa.String(200), "The audience row.", nullable=False),
    documented_column("customer_id", sa.String(200), "The brand's customer ID."),
    documented_column(
        "recipient", sa.String(20), "Phone in E.164 (null when the row had no valid phone)."
    ),
    documented_column(
        "outcome",
        sa.String(20),
        "would_send, or what a real run would record now without a call: skipped, deferred, or the row's final status from an earlier real run (sent, failed, unknown).",
        nullable=False,
    ),
    documented_column(
        "reason",
        sa.String(300),
        "Why the row would not be sent (same vocabulary as outbound_deliveries.reason).",
    ),
    documented_column(
        "not_before", Timestamp, "A deferred row would not be tried before this time."
    ),
    documented_column("template_name", sa.String(200), "WhatsApp template name."),
    documented_column("language", sa.String(10), "Template language."),
    documented_column("preview_text", sa.Text, "The message the recipient would read."),
    documented_column("run_id", sa.String(64), "Dagster run of the dry run."),
    documented_column("dry_run_at", Timestamp, "When the dry run was made."),
    sa.PrimaryKeyConstraint("campaign_key", "partition_date", "delivery_key"),
)

test_sends = sa.Table(
    "outbound_test_sends",
    metadata,
    documented_column(
        "run_id",
        sa.String(64),
        "Dagster run of the launch checklist (preflight job).",
        nullable=False,
    ),
    documented_column("campaign_key", sa.String(64), "Campaign slug.", nullable=False),
    documented_column(
        "recipient",
        sa.String(20),
        "A test recipient configured for the campaign (test_recipients), E.164.",
        nullable=False,
    ),
    documented_column("campaign_id", sa.String(36), "iAdvize campaign UUID."),
    documented_column("sender", sa.String(20), "Sender number, E.164."),
    documented_column("template_name", sa.String(200), "WhatsApp template name."),
    documented_column("language", sa.String(10), "Template language."),
    documented_column(
        "status",
        sa.String(20),
        "sent, failed or unknown: the API's answer to the test message.",
        nullable=False,
    ),
    documented_column("reason", sa.String(300), "accepted, or why the test message was refused."),
    documented_column("error_code", sa.String(40), "WhatsApp or iAdvize error code of a refusal."),
    documented_column(
        "message_id", sa.String(100), "iAdvize messageId of the accepted test message."
    ),
    documented_column("message_text", sa.Text, "messageText iAdvize answered."),
    documented_column(
        "parameters_from",
        sa.String(40),
        "first_eligible_row or sample_values: where the template's values came from.",
    ),
    documented_column("sent_at", Timestamp, "When the test message was sent."),
    sa.PrimaryKeyConstraint("run_id", "campaign_key", "recipient"),
)

# The state store's outbound_suppressions, published for the brand's CRM (another name: the two
# stores may be one database).
suppression_list = sa.Table(
    "outbound_suppression_list",
    metadata,
    documented_column(
        "phone",
        sa.String(16),
        "Phone in E.164 that receives no message from any campaign.",
        primary_key=True,
    ),
    documented_column("source", sa.String(16), "How it was asked: link (recipient) or cli."),
    documented_column("suppressed_at", Timestamp, "When it was first recorded (UTC)."),
    documented_column("published_at", Timestamp, "When this copy was written."),
)
