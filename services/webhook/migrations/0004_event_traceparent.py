"""An event keeps the W3C traceparent of the trace that caused it.

So each delivery attempt, retries and replays included, continues that trace
(services/common/tracing.py). Null when tracing is off, and for the events stored before.

Revision ID: webhook_0004
Revises: webhook_0003
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

revision = "webhook_0004"
down_revision = "webhook_0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Adds the column (nullable: a catalog-only change, no table rewrite)."""
    op.add_column("events", sa.Column("traceparent", sa.String(128), nullable=True))


def downgrade() -> None:
    """Drops the column."""
    op.drop_column("events", "traceparent")
