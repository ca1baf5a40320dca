"""Each merchant's default API version (services/common/versions.py).

Revision ID: admin_0003
Revises: admin_0002
Create Date: 2026-12-05
"""

import sqlalchemy as sa
from alembic import op

revision = "admin_0003"
down_revision = "admin_0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Adds the column; merchants that exist are pinned to the first dated version."""
    op.add_column(
        "merchants",
        sa.Column("api_version", sa.String(10), nullable=False, server_default="2026-12-05"),
    )


def downgrade() -> None:
    """Drops the column."""
    op.drop_column("merchants", "api_version")
