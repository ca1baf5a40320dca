"""Idempotency keys of the merchants' writes of webhook endpoints and deliveries.

The table of services/common/idempotency.py, as the payment service's (payment_0001).

Revision ID: webhook_0002
Revises: webhook_0001
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

revision = "webhook_0002"
down_revision = "webhook_0001"
branch_labels = None
depends_on = None

NOW = sa.text("now()")


def upgrade() -> None:
    """Creates the table."""
    op.create_table(
        "idempotency_keys",
        sa.Column("merchant_id", sa.String(40), primary_key=True),
        sa.Column("livemode", sa.Boolean, primary_key=True),
        sa.Column("operation", sa.String(40), primary_key=True),
        sa.Column("key", sa.String(255), primary_key=True),
        sa.Column("request_hash", sa.String(64), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("response", sa.LargeBinary),
        sa.Column("lock_time", sa.DateTime(timezone=True), nullable=False, server_default=NOW),
        sa.Column("create_time", sa.DateTime(timezone=True), nullable=False, server_default=NOW),
        sa.Column("expire_time", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "state IN ('in_progress', 'completed')", name="ck_idempotency_keys_state_known"
        ),
        sa.CheckConstraint(
            "(state = 'completed') = (response IS NOT NULL)",
            name="ck_idempotency_keys_response_when_completed",
        ),
    )
    op.create_index("ix_idempotency_keys_expire", "idempotency_keys", ["expire_time"])


def downgrade() -> None:
    """Drops the table."""
    op.drop_table("idempotency_keys")
