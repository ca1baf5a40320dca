"""Idempotency keys of the operators' writes (livemode is always false: operators act across modes).

The table of services/common/idempotency.py, as the payment service's (payment_0001).

Revision ID: admin_0004
Revises: admin_0003
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

revision = "admin_0004"
down_revision = "admin_0003"
branch_labels = None
depends_on = None

NOW = sa.text("now()")


def upgrade() -> None:
    """Creates the table."""
    op.create_table(
        "idempotency_keys",
        sa.Column("operator_id", sa.String(40), primary_key=True),
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
