"""Events carry the id of the transaction that stored them: the event stream's order.

A stream reads events in (txid, id) order below the oldest transaction still running
(pg_snapshot_xmin), so an event committed late by a long transaction is never skipped.
Existing rows get this migration's transaction id (one constant default: no table rewrite).

Revision ID: webhook_0003
Revises: webhook_0002
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

revision = "webhook_0003"
down_revision = "webhook_0002"
branch_labels = None
depends_on = None

CURRENT_TXID = "(pg_current_xact_id()::text::bigint)"


def upgrade() -> None:
    """Adds the column, filled for existing rows, and the stream's index."""
    op.add_column(
        "events",
        sa.Column("txid", sa.BigInteger, nullable=False, server_default=sa.text(CURRENT_TXID)),
    )
    op.create_index("ix_events_merchant_txid", "events", ["merchant_id", "livemode", "txid", "id"])


def downgrade() -> None:
    """Drops the index and the column."""
    op.drop_index("ix_events_merchant_txid", table_name="events")
    op.drop_column("events", "txid")
