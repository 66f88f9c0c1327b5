"""The warehouse tables of the day's figures, with the column descriptions analysts read: the report
(`outbound_daily_stats`, `outbound_daily_reasons`), the conversations after the send
(`outbound_conversations`) and the holdout and variant groups (`outbound_daily_groups`). They share
the metadata of the pipeline's other warehouse tables (tables.py), so one versioned schema holds all.
"""

from __future__ import annotations

import sqlalchemy as sa

from outbound_pipeline.warehouse.tables import Timestamp, documented_column, metadata

daily_stats = sa.Table(
    "outbound_daily_stats",
    metadata,
    documented_column("campaign_key", sa.String(64), "Campaign slug.", nullable=False),
    documented_column("partition_date", sa.String(10), "Campaign day, YYYY-MM-DD.", nullable=False),
    documented_column("audience_rows", sa.Integer, "Rows the audience query returned."),
    documented_column("eligible", sa.Integer, "Rows with consent and a valid, unique phone."),
    documented_column(
        "rendered", sa.Integer, "Eligible rows whose template rendered within WhatsApp's rules."
    ),
    documented_column("sent", sa.Integer, "Messages accepted by iAdvize."),
    documented_column("failed", sa.Integer, "Rows that failed."),
    documented_column(
        "skipped", sa.Integer, "Rows not sent on purpose (consent, phone, rendering, duplicates)."
    ),
    documented_column(
        "deferred", sa.Integer, "Rows left for a later run (limits, quiet hours, temporary errors)."
    ),
    documented_column(
        "unknown", sa.Integer, "Calls whose outcome is unknown: never resent automatically."
    ),
    documented_column(
        "pending", sa.Integer, "Rows not yet resolved (a run is sending or was interrupted)."
    ),
    documented_column("reasons_json", sa.Text, "Counts per status and reason, JSON."),
    documented_column("first_sent_at", Timestamp, "First acceptance of the day."),
    documented_column("last_sent_at", Timestamp, "Last acceptance of the day."),
    documented_column(
        "send_rate_per_s", sa.Float, "Accepted messages per second between the first and last send."
    ),
    # From outbound_conversations (null before the day's conversations were first read).
    documented_column("replied", sa.Integer, "Sent messages answered within the window."),
    documented_column("reply_rate", sa.Float, "replied / sent (0 when nothing was sent)."),
    documented_column(
        "late_replies", sa.Integer, "Recipients who wrote only after the window (not counted)."
    ),
    documented_column(
        "wrong_campaign", sa.Integer, "Replies iAdvize attached to another campaign."
    ),
    documented_column("unattached", sa.Integer, "Replies iAdvize attached to no campaign."),
    documented_column("conversions", sa.Integer, "Replies whose conversation converted."),
    documented_column("conversion_rate", sa.Float, "conversions / sent (0 when nothing was sent)."),
    documented_column(
        "conversations_read_at", Timestamp, "When the day's conversations were last read."
    ),
    documented_column("computed_at", Timestamp, "When the report was computed."),
    documented_column("run_id", sa.String(64), "Dagster run that computed it."),
    sa.PrimaryKeyConstraint("campaign_key", "partition_date"),
)

daily_reasons = sa.Table(
    "outbound_daily_reasons",
    metadata,
    documented_column("campaign_key", sa.String(64), "Campaign slug.", nullable=False),
    documented_column("partition_date", sa.String(10), "Campaign day, YYYY-MM-DD.", nullable=False),
    documented_column(
        "status",
        sa.String(20),
        "Outcome: sent, failed, skipped, deferred, unknown (or pending, sending).",
        nullable=False,
    ),
    documented_column(
        "reason",
        sa.String(300),
        "Why the rows have this status (the ledger's reason; the status itself when empty).",
        nullable=False,
    ),
    documented_column(
        "row_count",
        sa.Integer,
        "Ledger rows of the day with this status and reason.",
        nullable=False,
    ),
    documented_column("computed_at", Timestamp, "When the report was computed."),
    documented_column("run_id", sa.String(64), "Dagster run that computed it."),
    sa.PrimaryKeyConstraint("campaign_key", "partition_date", "status", "reason"),
)

# One row per message sent: what came of it in iAdvize (outbound_pipeline.conversations).
conversations = sa.Table(
    "outbound_conversations",
    metadata,
    documented_column("campaign_key", sa.String(64), "Campaign slug.", nullable=False),
    documented_column(
        "partition_date", sa.String(10), "Campaign day of the message, YYYY-MM-DD.", nullable=False
    ),
    documented_column("customer_id", sa.String(200), "The brand's customer ID."),
    documented_column(
        "recipient", sa.String(20), "Phone the message was sent to, E.164.", nullable=False
    ),
    documented_column("message_id", sa.String(100), "iAdvize messageId of the message sent."),
    documented_column(
        "replied",
        sa.Boolean,
        "True when the recipient started a WhatsApp conversation after the message and before its "
        "attribution expiry: a reply counted for the campaign.",
        nullable=False,
    ),
    documented_column(
        "replied_at",
        Timestamp,
        "When the reply's conversation started (a late reply's when there is no reply).",
    ),
    documented_column(
        "conversation_id", sa.String(100), "iAdvize conversation ID of the reply (or late reply)."
    ),
    documented_column(
        "attached_campaign_id",
        sa.String(64),
        "iAdvize campaign the conversation is attached to; null when attached to none.",
    ),
    documented_column(
        "attached_to_campaign",
        sa.Boolean,
        "True when iAdvize attached the conversation to this campaign's iAdvize campaign ID; false "
        "when to another or none (check the campaign ID and attribution period); null without one.",
    ),
    documented_column(
        "converted",
        sa.Boolean,
        "True when the reply's conversation converted (iAdvize's flag); false for a late reply.",
        nullable=False,
    ),
    documented_column(
        "within_window",
        sa.Boolean,
        "True for a reply, false when the only conversation started after the attribution expiry "
        "(not counted), null when the recipient did not write.",
    ),
    documented_column("collected_at", Timestamp, "When the conversations were read from iAdvize."),
    documented_column("run_id", sa.String(64), "Dagster run that read them."),
    sa.PrimaryKeyConstraint("campaign_key", "partition_date", "recipient"),
)

# Holdout, contacted and variant groups per day: outbound_pipeline.reporting.experiments.
daily_groups = sa.Table(
    "outbound_daily_groups",
    metadata,
    documented_column("campaign_key", sa.String(64), "Campaign slug.", nullable=False),
    documented_column("partition_date", sa.String(10), "Campaign day, YYYY-MM-DD.", nullable=False),
    documented_column(
        "group_name",
        sa.String(64),
        "contacted (sent), holdout (kept out on purpose), or variant:<name> (sent that variant).",
        nullable=False,
    ),
    documented_column("customers", sa.Integer, "Distinct customers in the group.", nullable=False),
    documented_column("converted", sa.Integer, "Of them, converted (null: no conversion_sql)."),
    documented_column("conversion_rate", sa.Float, "converted / customers (null: unknown)."),
    documented_column("computed_at", Timestamp, "When the figures were computed."),
    documented_column("run_id", sa.String(64), "Dagster run that computed them."),
    sa.PrimaryKeyConstraint("campaign_key", "partition_date", "group_name"),
)
