"""A card saved while paying is attached to its customer only once that payment succeeds.

Revision ID: payment_0007
Revises: payment_0006
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

revision = "payment_0007"
down_revision = "payment_0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Adds the nullable column naming the payment a card waits on (no table rewrite)."""
    op.add_column("payment_methods", sa.Column("setup_payment_id", sa.String(40), nullable=True))


def downgrade() -> None:
    """Drops what upgrade added."""
    op.drop_column("payment_methods", "setup_payment_id")
