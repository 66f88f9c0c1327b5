"""The warehouse tables the pipeline owns, with the column descriptions analysts read.

Everything the pipeline knows lives here, never in process memory or local files, so any step can be
restarted anywhere from the warehouse alone.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

metadata = sa.MetaData()

Timestamp = sa.DateTime(timezone=True)


def _col(name: str, type_: sa.types.TypeEngine, doc: str, **kwargs: Any) -> sa.Column:
    return sa.Column(name, type_, comment=doc, **kwargs)


audience = sa.Table(
    "outbound_audience",
    metadata,
    _col("campaign_key", sa.String(64), "Campaign slug.", nullable=False),
    _col("partition_date", sa.String(10), "Campaign day, YYYY-MM-DD.", nullable=False),
    _col(
        "row_key",
        sa.String(200),
        "Stable identity of the audience row: customer, raw phone, occurrence.",
        nullable=False,
    ),
    _col("row_number", sa.Integer, "Position in the audience query's result.", nullable=False),
    _col("customer_id", sa.String(200), "The brand's customer ID."),
    _col("phone_raw", sa.Text, "Phone as the warehouse holds it."),
    _col("recipient", sa.String(20), "Phone in E.164, when valid."),
    _col("phone_region", sa.String(3), "Country of the recipient's number."),
    _col(
        "consent_status",
        sa.String(20),
        "Current consent for the campaign's category: opted_in, opted_out or none.",
    ),
    _col("consent_updated_at", sa.String(40), "When that consent was last recorded."),
    _col(
        "eligible",
        sa.Boolean,
        "True when the row goes on to rendering and sending.",
        nullable=False,
    ),
    _col(
        "reason",
        sa.String(200),
        "Why the row is not eligible (opted_out, no_consent, phone_invalid, duplicate_recipient, ...).",
    ),
    _col("fields_json", sa.Text, "The audience columns the template variables read, as JSON."),
    _col("run_id", sa.String(64), "Dagster run that extracted the row."),
    sa.PrimaryKeyConstraint("campaign_key", "partition_date", "row_key"),
    sa.Index("ix_outbound_audience_recipient", "campaign_key", "partition_date", "recipient"),
)

messages = sa.Table(
    "outbound_messages",
    metadata,
    _col("campaign_key", sa.String(64), "Campaign slug.", nullable=False),
    _col("partition_date", sa.String(10), "Campaign day, YYYY-MM-DD.", nullable=False),
    _col("row_key", sa.String(200), "The audience row rendered.", nullable=False),
    _col("customer_id", sa.String(200), "The brand's customer ID."),
    _col("recipient", sa.String(20), "Phone in E.164.", nullable=False),
    _col("template_name", sa.String(200), "WhatsApp template name.", nullable=False),
    _col("language", sa.String(10), "Template language.", nullable=False),
    _col(
        "category",
        sa.String(20),
        "Template category: MARKETING, UTILITY or AUTHENTICATION.",
        nullable=False,
    ),
    _col("header_params_json", sa.Text, "Header parameters, JSON list in placeholder order."),
    _col("body_params_json", sa.Text, "Body parameters, JSON list in placeholder order."),
    _col("preview_text", sa.Text, "The message as the recipient reads it."),
    _col(
        "rendered",
        sa.Boolean,
        "True when the row can be sent; false when a parameter broke a rule.",
        nullable=False,
    ),
    _col("reason", sa.String(300), "Why the row cannot be sent, naming the variable and the rule."),
    _col("run_id", sa.String(64), "Dagster run that rendered the row."),
    sa.PrimaryKeyConstraint("campaign_key", "partition_date", "row_key"),
    # reconcile joins messages to the ledger by recipient.
    sa.Index("ix_outbound_messages_recipient", "campaign_key", "partition_date", "recipient"),
)

deliveries = sa.Table(
    "outbound_deliveries",
    metadata,
    _col("campaign_key", sa.String(64), "Campaign slug.", nullable=False),
    _col("partition_date", sa.String(10), "Campaign day, YYYY-MM-DD.", nullable=False),
    _col(
        "delivery_key",
        sa.String(220),
        "Ledger key: the recipient for a send, 'row:<row_key>' for a row that is not sent.",
        nullable=False,
    ),
    _col("row_key", sa.String(200), "The audience row this outcome belongs to.", nullable=False),
    _col("customer_id", sa.String(200), "The brand's customer ID."),
    _col("recipient", sa.String(20), "Phone in E.164 (null when the row had no valid phone)."),
    _col("campaign_id", sa.String(36), "iAdvize campaign UUID."),
    _col("sender", sa.String(20), "Sender number, E.164."),
    _col("limit_scope", sa.String(120), "Messaging-limit scope the send counts against."),
    _col("template_name", sa.String(200), "WhatsApp template name."),
    _col("language", sa.String(10), "Template language."),
    _col("category", sa.String(20), "Template category."),
    _col("header_params_json", sa.Text, "Header parameters sent, JSON list."),
    _col("body_params_json", sa.Text, "Body parameters sent, JSON list."),
    _col(
        "status",
        sa.String(20),
        "pending, sending, sent, failed, skipped, deferred or unknown.",
        nullable=False,
    ),
    _col("reason", sa.String(300), "Why the row has this status."),
    _col("error_code", sa.String(40), "WhatsApp or iAdvize error code of the last failure."),
    _col(
        "retryable",
        sa.Boolean,
        "True when a later run may try again (deferred rows, temporary failures).",
    ),
    _col("message_id", sa.String(100), "iAdvize messageId of the accepted message."),
    _col("message_text", sa.Text, "messageText iAdvize answered: the rendered message."),
    _col(
        "attempts",
        sa.Integer,
        "API calls made for this row, all runs together.",
        nullable=False,
        default=0,
    ),
    _col("claim_token", sa.String(64), "Owner of an in-flight send (run and process)."),
    _col("claimed_at", Timestamp, "When the last send was claimed: the contact time for limits."),
    _col("sent_at", Timestamp, "When iAdvize accepted the message."),
    _col(
        "attribution_expires_at",
        Timestamp,
        "sent_at + the campaign's attribution window: replies before it belong to the campaign.",
    ),
    _col("not_before", Timestamp, "A deferred row is not tried again before this time."),
    _col(
        "resend_requested_by",
        sa.String(64),
        "Run that explicitly asked to resend an unknown or failed row.",
    ),
    _col("run_id", sa.String(64), "Dagster run that last changed the row."),
    _col("updated_at", Timestamp, "Last change."),
    sa.PrimaryKeyConstraint("campaign_key", "partition_date", "delivery_key"),
    # reconcile finds each audience row's outcome by row_key.
    sa.Index("ix_outbound_deliveries_row", "campaign_key", "partition_date", "row_key"),
    # Reconcile looks up whether a customer was already handled today on another phone.
    sa.Index("ix_outbound_deliveries_customer", "campaign_key", "partition_date", "customer_id"),
    sa.Index("ix_outbound_deliveries_scope", "limit_scope", "claimed_at"),
    sa.Index("ix_outbound_deliveries_recipient", "recipient", "claimed_at"),
    sa.Index("ix_outbound_deliveries_status", "campaign_key", "partition_date", "status"),
)

daily_stats = sa.Table(
    "outbound_daily_stats",
    metadata,
    _col("campaign_key", sa.String(64), "Campaign slug.", nullable=False),
    _col("partition_date", sa.String(10), "Campaign day, YYYY-MM-DD.", nullable=False),
    _col("audience_rows", sa.Integer, "Rows the audience query returned."),
    _col("eligible", sa.Integer, "Rows with consent and a valid, unique phone."),
    _col("rendered", sa.Integer, "Eligible rows whose template rendered within WhatsApp's rules."),
    _col("sent", sa.Integer, "Messages accepted by iAdvize."),
    _col("failed", sa.Integer, "Rows that failed."),
    _col(
        "skipped", sa.Integer, "Rows not sent on purpose (consent, phone, rendering, duplicates)."
    ),
    _col(
        "deferred", sa.Integer, "Rows left for a later run (limits, quiet hours, temporary errors)."
    ),
    _col("unknown", sa.Integer, "Calls whose outcome is unknown: never resent automatically."),
    _col("pending", sa.Integer, "Rows not yet resolved (a run is sending or was interrupted)."),
    _col("reasons_json", sa.Text, "Counts per status and reason, JSON."),
    _col("first_sent_at", Timestamp, "First acceptance of the day."),
    _col("last_sent_at", Timestamp, "Last acceptance of the day."),
    _col(
        "send_rate_per_s", sa.Float, "Accepted messages per second between the first and last send."
    ),
    _col("computed_at", Timestamp, "When the report was computed."),
    _col("run_id", sa.String(64), "Dagster run that computed it."),
    sa.PrimaryKeyConstraint("campaign_key", "partition_date"),
)

send_runs = sa.Table(
    "outbound_send_runs",
    metadata,
    _col("claim_token", sa.String(64), "One sending process of one run.", primary_key=True),
    _col("run_id", sa.String(64), "Dagster run."),
    _col("campaign_key", sa.String(64), "Campaign slug."),
    _col("partition_date", sa.String(10), "Campaign day."),
    _col("host", sa.String(255), "Host of the sending process."),
    _col("pid", sa.Integer, "Process ID of the sending process."),
    _col("started_at", Timestamp, "Start of sending."),
    _col("heartbeat_at", Timestamp, "Last sign of life; a stale heartbeat means the process died."),
    _col("finished_at", Timestamp, "End of sending, when it ended cleanly."),
)

quota_scopes = sa.Table(
    "outbound_quota_scopes",
    metadata,
    # One row per limit scope: locking it serialises quota decisions across runs and hosts.
    _col("limit_scope", sa.String(120), "Messaging-limit scope.", primary_key=True),
    _col("updated_at", Timestamp, "Last quota decision."),
)

quota_usage = sa.Table(
    "outbound_quota_usage",
    metadata,
    # Counting a scope's distinct recipients of the last 24 h reads the whole day's ledger; summing
    # these hourly counts is an upper bound of it, so a claim far from the limit reads ~25 rows.
    _col("limit_scope", sa.String(120), "Messaging-limit scope.", primary_key=True),
    _col(
        "hour_start",
        Timestamp,
        "Start of the hour (UTC) the claims were made in.",
        primary_key=True,
    ),
    _col(
        "claims",
        sa.Integer,
        "Rows claimed for sending in the scope in this hour, plus, in the first hour counted, the "
        "distinct recipients already contacted in the 24 h before. At least the recipients counted "
        "against the messaging limit.",
        nullable=False,
    ),
    _col(
        "last_claim_at",
        Timestamp,
        "The latest claim counted in this hour: a later contact in the ledger was not counted.",
    ),
)

sender_pace = sa.Table(
    "outbound_sender_pace",
    metadata,
    # A sender's calls are paced in the warehouse, not only in the memory of the process that sends:
    # every claim reserves the next stretch of the sender's time for its rows, so two runs (two
    # processes, two machines) of one sender share its messages/s instead of each taking all of it.
    _col("sender", sa.String(20), "Sender number, E.164.", primary_key=True),
    _col(
        "next_free_slot",
        sa.Float,
        "Unix time (seconds) from which the sender's time is free: the slots before it are reserved "
        "by claims already made, one per message, 1/max_send_rate apart.",
        nullable=False,
    ),
    _col("updated_at", Timestamp, "Last reservation."),
)

halts = sa.Table(
    "outbound_halts",
    metadata,
    _col("scope", sa.String(120), "'all' or 'campaign:<key>'.", primary_key=True),
    _col("reason", sa.String(300), "Why sending stopped (error code and meaning)."),
    _col("halted_at", Timestamp, "When it stopped."),
    _col(
        "until",
        Timestamp,
        "When sends may resume by themselves; null: only when an operator clears it.",
    ),
    _col("run_id", sa.String(64), "Run that hit the error."),
)


# -- tables added for analysts and operators (issue #6) ---------------------------------------

daily_reasons = sa.Table(
    "outbound_daily_reasons",
    metadata,
    _col("campaign_key", sa.String(64), "Campaign slug.", nullable=False),
    _col("partition_date", sa.String(10), "Campaign day, YYYY-MM-DD.", nullable=False),
    _col(
        "status",
        sa.String(20),
        "Outcome: sent, failed, skipped, deferred, unknown (or pending, sending).",
        nullable=False,
    ),
    _col(
        "reason",
        sa.String(300),
        "Why the rows have this status (the ledger's reason; the status itself when empty).",
        nullable=False,
    ),
    _col(
        "row_count",
        sa.Integer,
        "Ledger rows of the day with this status and reason.",
        nullable=False,
    ),
    _col("computed_at", Timestamp, "When the report was computed."),
    _col("run_id", sa.String(64), "Dagster run that computed it."),
    sa.PrimaryKeyConstraint("campaign_key", "partition_date", "status", "reason"),
)

dry_runs = sa.Table(
    "outbound_dry_runs",
    metadata,
    _col("campaign_key", sa.String(64), "Campaign slug.", nullable=False),
    _col("partition_date", sa.String(10), "Campaign day, YYYY-MM-DD.", nullable=False),
    _col(
        "delivery_key",
        sa.String(220),
        "The ledger key the row would have (recipient, or 'row:<row_key>').",
        nullable=False,
    ),
    _col("row_key", sa.String(200), "The audience row.", nullable=False),
    _col("customer_id", sa.String(200), "The brand's customer ID."),
    _col("recipient", sa.String(20), "Phone in E.164 (null when the row had no valid phone)."),
    _col(
        "outcome",
        sa.String(20),
        "would_send, or what a real run would record now without a call: skipped, deferred, or the row's final status from an earlier real run (sent, failed, unknown).",
        nullable=False,
    ),
    _col(
        "reason",
        sa.String(300),
        "Why the row would not be sent (same vocabulary as outbound_deliveries.reason).",
    ),
    _col("not_before", Timestamp, "A deferred row would not be tried before this time."),
    _col("template_name", sa.String(200), "WhatsApp template name."),
    _col("language", sa.String(10), "Template language."),
    _col("preview_text", sa.Text, "The message the recipient would read."),
    _col("run_id", sa.String(64), "Dagster run of the dry run."),
    _col("dry_run_at", Timestamp, "When the dry run was made."),
    sa.PrimaryKeyConstraint("campaign_key", "partition_date", "delivery_key"),
)

test_sends = sa.Table(
    "outbound_test_sends",
    metadata,
    _col(
        "run_id",
        sa.String(64),
        "Dagster run of the launch checklist (preflight job).",
        nullable=False,
    ),
    _col("campaign_key", sa.String(64), "Campaign slug.", nullable=False),
    _col(
        "recipient",
        sa.String(20),
        "A test recipient configured for the campaign (test_recipients), E.164.",
        nullable=False,
    ),
    _col("campaign_id", sa.String(36), "iAdvize campaign UUID."),
    _col("sender", sa.String(20), "Sender number, E.164."),
    _col("template_name", sa.String(200), "WhatsApp template name."),
    _col("language", sa.String(10), "Template language."),
    _col(
        "status",
        sa.String(20),
        "sent, failed or unknown: the API's answer to the test message.",
        nullable=False,
    ),
    _col("reason", sa.String(300), "accepted, or why the test message was refused."),
    _col("error_code", sa.String(40), "WhatsApp or iAdvize error code of a refusal."),
    _col("message_id", sa.String(100), "iAdvize messageId of the accepted test message."),
    _col("message_text", sa.Text, "messageText iAdvize answered."),
    _col(
        "parameters_from",
        sa.String(40),
        "first_eligible_row or sample_values: where the template's values came from.",
    ),
    _col("sent_at", Timestamp, "When the test message was sent."),
    sa.PrimaryKeyConstraint("run_id", "campaign_key", "recipient"),
)

OWNED_TABLES = [t.name for t in metadata.sorted_tables]
