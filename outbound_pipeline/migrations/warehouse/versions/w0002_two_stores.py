"""Two stores: outbound_deliveries is no longer the ledger but its published copy, for analysts; the
ledger's indexes on it go (the state store's outbound_ledger has them). Its rows stay: they are the
history analysts read, and the state store's migration copies them into the ledger.
Frozen: never edit a migration that has shipped.

Revision ID: w0002
Revises: w0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "w0002"
down_revision = "w0001"
branch_labels = None
depends_on = None

PREVIOUS_LEDGER_INDEXES = (
    "ix_outbound_deliveries_row",
    "ix_outbound_deliveries_customer",
    "ix_outbound_deliveries_scope",
    "ix_outbound_deliveries_recipient",
    "ix_outbound_deliveries_status",
)


def upgrade() -> None:
    present = {
        index["name"] for index in sa.inspect(op.get_bind()).get_indexes("outbound_deliveries")
    }
    for name in PREVIOUS_LEDGER_INDEXES:
        if name in present:
            op.drop_index(name, table_name="outbound_deliveries")
