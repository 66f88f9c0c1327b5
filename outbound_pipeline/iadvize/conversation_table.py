"""The analysts' table of replies and conversions, `outbound_conversations`: one row per message
sent, written from `match_conversations`. On a MetaData of its own until the warehouse's tables
take it in.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterable
from typing import Any

import sqlalchemy as sa

from outbound_pipeline.iadvize.attribution import ConversationMatch

metadata = sa.MetaData()

Timestamp = sa.DateTime(timezone=True)


def _col(name: str, type_: sa.types.TypeEngine, doc: str, **kwargs: Any) -> sa.Column:
    """A column with its description as its comment, like the warehouse's tables."""
    return sa.Column(name, type_, comment=doc, **kwargs)


conversations = sa.Table(
    "outbound_conversations",
    metadata,
    _col("campaign_key", sa.String(64), "Campaign slug.", nullable=False),
    _col(
        "partition_date", sa.String(10), "Campaign day of the message, YYYY-MM-DD.", nullable=False
    ),
    _col("customer_id", sa.String(200), "The brand's customer ID."),
    _col("recipient", sa.String(20), "Phone the message was sent to, E.164.", nullable=False),
    _col("message_id", sa.String(100), "iAdvize messageId of the message sent."),
    _col(
        "replied",
        sa.Boolean,
        "True when the recipient started a WhatsApp conversation after the message and before its "
        "attribution expiry: a reply counted for the campaign.",
        nullable=False,
    ),
    _col(
        "replied_at",
        Timestamp,
        "When the reply's conversation started (a late reply's when there is no reply).",
    ),
    _col(
        "conversation_id", sa.String(100), "iAdvize conversation ID of the reply (or late reply)."
    ),
    _col(
        "attached_campaign_id",
        sa.String(64),
        "iAdvize campaign the conversation is attached to; null when attached to none.",
    ),
    _col(
        "attached_to_campaign",
        sa.Boolean,
        "True when iAdvize attached the conversation to this campaign's iAdvize campaign ID; false "
        "when to another or none (check the campaign ID and attribution period); null without one.",
    ),
    _col(
        "converted",
        sa.Boolean,
        "True when the reply's conversation converted (iAdvize's flag); false for a late reply.",
        nullable=False,
    ),
    _col(
        "within_window",
        sa.Boolean,
        "True for a reply, false when the only conversation started after the attribution expiry "
        "(not counted), null when the recipient did not write.",
    ),
    _col("collected_at", Timestamp, "When the conversations were read from iAdvize."),
    _col("run_id", sa.String(64), "Dagster run that read them."),
    sa.PrimaryKeyConstraint("campaign_key", "partition_date", "recipient"),
)


def table_rows(
    matches: Iterable[ConversationMatch], collected_at: dt.datetime, run_id: str | None
) -> list[dict[str, Any]]:
    """The table's rows for a batch of matches read at `collected_at` by `run_id`."""
    names = {column.name for column in conversations.columns}
    return [
        {
            **{k: v for k, v in dataclasses.asdict(match).items() if k in names},
            "collected_at": collected_at,
            "run_id": run_id,
        }
        for match in matches
    ]
