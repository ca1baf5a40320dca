"""3-D Secure: a payment may wait for its customer's authentication (`requires_action`).

Revision ID: payment_0002
Revises: payment_0001
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

revision = "payment_0002"
down_revision = "payment_0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Admits the status; indexes the payments the sweeper cancels when left unauthenticated."""
    op.drop_constraint("ck_payments_status_known", "payments", type_="check")
    op.create_check_constraint(
        "ck_payments_status_known",
        "payments",
        "status IN ('requires_payment_method', 'requires_action', 'processing',"
        " 'requires_capture', 'succeeded', 'failed', 'canceled')",
    )
    op.create_index(
        "ix_payments_requires_action",
        "payments",
        ["update_time"],
        postgresql_where=sa.text("status = 'requires_action'"),
    )


def downgrade() -> None:
    """Refuses the status again (after canceling any payment in it)."""
    op.execute(
        "UPDATE payment.payments SET status = 'canceled', cancellation_reason = 'abandoned'"
        " WHERE status = 'requires_action'"
    )
    op.drop_index("ix_payments_requires_action", "payments")
    op.drop_constraint("ck_payments_status_known", "payments", type_="check")
    op.create_check_constraint(
        "ck_payments_status_known",
        "payments",
        "status IN ('requires_payment_method', 'processing', 'requires_capture',"
        " 'succeeded', 'failed', 'canceled')",
    )
