"""The previous release's state tables (release b0acc55: one database for everything, its ledger
the table outbound_deliveries, created by the warehouse's history): send runs, quota, pace, halts.
Frozen: never edit a migration that has shipped.

Revision ID: s0001
Revises: <base>
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "s0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "outbound_halts",
        sa.Column(
            "scope", sa.String(length=120), nullable=False, comment="'all' or 'campaign:<key>'."
        ),
        sa.Column(
            "reason",
            sa.String(length=300),
            nullable=True,
            comment="Why sending stopped (error code and meaning).",
        ),
        sa.Column(
            "halted_at", sa.DateTime(timezone=True), nullable=True, comment="When it stopped."
        ),
        sa.Column(
            "until",
            sa.DateTime(timezone=True),
            nullable=True,
            comment="When sends may resume by themselves; null: only when an operator clears it.",
        ),
        sa.Column("run_id", sa.String(length=64), nullable=True, comment="Run that hit the error."),
        sa.PrimaryKeyConstraint("scope"),
    )
    op.create_table(
        "outbound_quota_scopes",
        sa.Column(
            "limit_scope", sa.String(length=120), nullable=False, comment="Messaging-limit scope."
        ),
        sa.Column(
            "updated_at", sa.DateTime(timezone=True), nullable=True, comment="Last quota decision."
        ),
        sa.PrimaryKeyConstraint("limit_scope"),
    )
    op.create_table(
        "outbound_quota_usage",
        sa.Column(
            "limit_scope", sa.String(length=120), nullable=False, comment="Messaging-limit scope."
        ),
        sa.Column(
            "hour_start",
            sa.DateTime(timezone=True),
            nullable=False,
            comment="Start of the hour (UTC) the claims were made in.",
        ),
        sa.Column(
            "claims",
            sa.Integer(),
            nullable=False,
            comment="Rows claimed for sending in the scope in this hour, plus, in the first hour counted, the distinct recipients already contacted in the 24 h before. At least the recipients counted against the messaging limit.",
        ),
        sa.Column(
            "last_claim_at",
            sa.DateTime(timezone=True),
            nullable=True,
            comment="The latest claim counted in this hour: a later contact in the ledger was not counted.",
        ),
        sa.PrimaryKeyConstraint("limit_scope", "hour_start"),
    )
    op.create_table(
        "outbound_send_runs",
        sa.Column(
            "claim_token",
            sa.String(length=64),
            nullable=False,
            comment="One sending process of one run.",
        ),
        sa.Column("run_id", sa.String(length=64), nullable=True, comment="Dagster run."),
        sa.Column("campaign_key", sa.String(length=64), nullable=True, comment="Campaign slug."),
        sa.Column("partition_date", sa.String(length=10), nullable=True, comment="Campaign day."),
        sa.Column(
            "host", sa.String(length=255), nullable=True, comment="Host of the sending process."
        ),
        sa.Column("pid", sa.Integer(), nullable=True, comment="Process ID of the sending process."),
        sa.Column(
            "started_at", sa.DateTime(timezone=True), nullable=True, comment="Start of sending."
        ),
        sa.Column(
            "heartbeat_at",
            sa.DateTime(timezone=True),
            nullable=True,
            comment="Last sign of life; a stale heartbeat means the process died.",
        ),
        sa.Column(
            "finished_at",
            sa.DateTime(timezone=True),
            nullable=True,
            comment="End of sending, when it ended cleanly.",
        ),
        sa.PrimaryKeyConstraint("claim_token"),
    )
    op.create_table(
        "outbound_sender_pace",
        sa.Column("sender", sa.String(length=20), nullable=False, comment="Sender number, E.164."),
        sa.Column(
            "next_free_slot",
            sa.Float(),
            nullable=False,
            comment="Unix time (seconds) from which the sender's time is free: the slots before it are reserved by claims already made, one per message, 1/max_send_rate apart.",
        ),
        sa.Column(
            "updated_at", sa.DateTime(timezone=True), nullable=True, comment="Last reservation."
        ),
        sa.PrimaryKeyConstraint("sender"),
    )
