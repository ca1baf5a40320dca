"""The outbox row keeps the W3C traceparent of the request or job that wrote it.

So the relay and the job or event the row becomes continue that trace (services/common/
tracing.py). Null when tracing is off, and for the rows written before.

Revision ID: payment_0003
Revises: payment_0002
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

revision = "payment_0003"
down_revision = "payment_0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Adds the column (nullable: a catalog-only change, no table rewrite)."""
    op.add_column("outbox", sa.Column("traceparent", sa.String(128), nullable=True))


def downgrade() -> None:
    """Drops the column."""
    op.drop_column("outbox", "traceparent")
