"""The state store's tables: the send ledger and everything that coordinates sending.

They live in the transactional store named by `OUTBOUND_STATE_URL` (SQLite or PostgreSQL), never in
the brand's warehouse nor in process memory or local files, so any step can be restarted anywhere
from the state store alone, and claims can take the row locks they need. The warehouse gets the
ledger's published copy (`outbound_deliveries`, same columns: outbound_pipeline.ledger.publish).
Later additions to the state go here too.
"""

from __future__ import annotations

import sqlalchemy as sa

from outbound_pipeline.warehouse import (
    Timestamp,
    deliveries,
    documented_column,
    provenance_columns,
)

metadata = sa.MetaData()

# The ledger: one row per audience row and day (send rows keyed by recipient, the others by
# "row:<row_key>"), its outcome and every fact the claims decide from. The same columns as its
# published copy in the warehouse, `outbound_deliveries`, whose definition it copies.
send_ledger = deliveries.to_metadata(metadata, name="outbound_ledger")
# Set, and committed, before the row's call leaves (ledger.dispatch): a `sending` row without it was
# never called, so a dead run's claim goes back to the queue instead of becoming `unknown`. Not
# published (the warehouse's copy keeps the columns of `outbound_deliveries`).
send_ledger.append_column(
    documented_column(
        "dispatched_at",
        Timestamp,
        "When the row's call (its latest, for a retried one) was cleared to leave: committed before "
        "the call. Null: no call of this claim left.",
        nullable=True,
    )
)
_L = send_ledger.c
# reconcile finds each audience row's outcome by row_key.
sa.Index("ix_outbound_ledger_row", _L.campaign_key, _L.partition_date, _L.row_key)
# Reconcile looks up whether a customer was already handled today on another phone.
sa.Index("ix_outbound_ledger_customer", _L.campaign_key, _L.partition_date, _L.customer_id)
sa.Index("ix_outbound_ledger_scope", _L.limit_scope, _L.claimed_at)
sa.Index("ix_outbound_ledger_recipient", _L.recipient, _L.claimed_at)
sa.Index("ix_outbound_ledger_status", _L.campaign_key, _L.partition_date, _L.status)

# The day's audience rows and their messages as reconcile needs them, copied from the warehouse at
# the start of each deliveries step (outbound_pipeline.ledger.snapshot): reconcile's SQL then never
# spans the two stores.
plan_rows = sa.Table(
    "outbound_plan",
    metadata,
    documented_column("campaign_key", sa.String(64), "Campaign slug.", nullable=False),
    documented_column("partition_date", sa.String(10), "Campaign day, YYYY-MM-DD.", nullable=False),
    documented_column("row_key", sa.String(200), "The audience row.", nullable=False),
    documented_column("customer_id", sa.String(200), "The brand's customer ID."),
    documented_column("recipient", sa.String(20), "Phone in E.164, when valid."),
    documented_column(
        "eligible", sa.Boolean, "The audience row's verdict: true when it goes on.", nullable=False
    ),
    documented_column("audience_reason", sa.String(200), "Why the audience row is not eligible."),
    documented_column(
        "rendered", sa.Boolean, "True when its message can be sent; null without a message."
    ),
    documented_column("message_reason", sa.String(300), "Why the message cannot be sent."),
    documented_column("template_name", sa.String(200), "WhatsApp template name."),
    documented_column("language", sa.String(10), "Template language."),
    documented_column("category", sa.String(20), "Template category."),
    documented_column("header_params_json", sa.Text, "Header parameters, JSON list."),
    documented_column("body_params_json", sa.Text, "Body parameters, JSON list."),
    *provenance_columns(),
    documented_column("variant", sa.String(32), "The campaign variant rendered (null: none)."),
    sa.PrimaryKeyConstraint("campaign_key", "partition_date", "row_key"),
    # reconcile joins the day's messages to the ledger by recipient.
    sa.Index("ix_outbound_plan_recipient", "campaign_key", "partition_date", "recipient"),
)

send_runs = sa.Table(
    "outbound_send_runs",
    metadata,
    documented_column(
        "claim_token", sa.String(64), "One sending process of one run.", primary_key=True
    ),
    documented_column("run_id", sa.String(64), "Dagster run."),
    documented_column("campaign_key", sa.String(64), "Campaign slug."),
    documented_column("partition_date", sa.String(10), "Campaign day."),
    documented_column("host", sa.String(255), "Host of the sending process."),
    documented_column("pid", sa.Integer, "Process ID of the sending process."),
    documented_column("started_at", Timestamp, "Start of sending."),
    documented_column(
        "heartbeat_at", Timestamp, "Last sign of life; a stale heartbeat means the process died."
    ),
    documented_column("finished_at", Timestamp, "End of sending, when it ended cleanly."),
)

quota_scopes = sa.Table(
    "outbound_quota_scopes",
    metadata,
    # One row per limit scope: locking it serialises quota decisions across runs and hosts.
    documented_column("limit_scope", sa.String(120), "Messaging-limit scope.", primary_key=True),
    documented_column("updated_at", Timestamp, "Last quota decision."),
)

quota_usage = sa.Table(
    "outbound_quota_usage",
    metadata,
    # Counting a scope's distinct recipients of the last 24 h reads the whole day's ledger; summing
    # these hourly counts is an upper bound of it, so a claim far from the limit reads ~25 rows.
    documented_column("limit_scope", sa.String(120), "Messaging-limit scope.", primary_key=True),
    documented_column(
        "hour_start",
        Timestamp,
        "Start of the hour (UTC) the claims were made in.",
        primary_key=True,
    ),
    documented_column(
        "claims",
        sa.Integer,
        "Rows claimed for sending in the scope in this hour, plus, in the first hour counted, the "
        "distinct recipients already contacted in the 24 h before. At least the recipients counted "
        "against the messaging limit.",
        nullable=False,
    ),
    documented_column(
        "last_claim_at",
        Timestamp,
        "The latest claim counted in this hour: a later contact in the ledger was not counted.",
    ),
)

sender_pace = sa.Table(
    "outbound_sender_pace",
    metadata,
    # A sender's calls are paced in the state store, not only in the memory of the process that sends:
    # every claim reserves the next stretch of the sender's time for its rows, so two runs (two
    # processes, two machines) of one sender share its messages/s instead of each taking all of it.
    documented_column("sender", sa.String(20), "Sender number, E.164.", primary_key=True),
    documented_column(
        "next_free_slot",
        sa.Float,
        "Unix time (seconds) from which the sender's time is free: the slots before it are reserved "
        "by claims already made, one per message, 1/max_send_rate apart.",
        nullable=False,
    ),
    documented_column("updated_at", Timestamp, "Last reservation."),
)

halts = sa.Table(
    "outbound_halts",
    metadata,
    documented_column("scope", sa.String(120), "'all' or 'campaign:<key>'.", primary_key=True),
    documented_column("reason", sa.String(300), "Why sending stopped (error code and meaning)."),
    documented_column("halted_at", Timestamp, "When it stopped."),
    documented_column(
        "until",
        Timestamp,
        "When sends may resume by themselves; null: only when an operator clears it.",
    ),
    documented_column("run_id", sa.String(64), "Run that hit the error."),
)

login_slots = sa.Table(
    "outbound_login_slots",
    metadata,
    # iAdvize allows 10 logins a minute per user: every process that logs in takes one of these rows
    # first, counted over the last 60 s under a lock, so parallel runs (a backfill) share the budget.
    # The token itself is never stored, nor the username: the user is a hash of it.
    documented_column("slot_id", sa.String(32), "One login taken (random id).", primary_key=True),
    documented_column(
        "user_key",
        sa.String(64),
        "SHA-256 (hex) of the token URL and the username: the API user whose budget it counts.",
        nullable=False,
    ),
    documented_column("taken_at", Timestamp, "When the login was allowed to go.", nullable=False),
    documented_column("host", sa.String(255), "Host of the process that logged in."),
    documented_column("pid", sa.Integer, "Process ID of the process that logged in."),
    sa.Index("ix_outbound_login_slots_user", "user_key", "taken_at"),
)
