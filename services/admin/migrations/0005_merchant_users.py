"""Merchant users, their sessions and invitations; keys that expire after a roll; live_enabled.

Revision ID: admin_0005
Revises: admin_0004
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

revision = "admin_0005"
down_revision = "admin_0004"
branch_labels = None
depends_on = None

ROLE_KNOWN = "role IN ('admin', 'developer', 'viewer')"


def upgrade() -> None:
    """Creates the three tables and the key's expiry column."""
    op.add_column("api_keys", sa.Column("expire_time", sa.DateTime(timezone=True)))
    op.add_column(
        "merchants",
        sa.Column("live_enabled", sa.Boolean, nullable=False, server_default=sa.true()),
    )
    op.create_table(
        "merchant_users",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("merchant_id", sa.String(40), sa.ForeignKey("merchants.id"), nullable=False),
        sa.Column("email", sa.String(320), nullable=False, unique=True),
        sa.Column("password_hash", sa.String(200), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column(
            "create_time",
            sa.DateTime(timezone=True),
            nullable=False,
            server_default=sa.func.now(),
        ),
        sa.CheckConstraint(ROLE_KNOWN, name="ck_merchant_users_role_known"),
    )
    op.create_index("ix_merchant_users_merchant_id", "merchant_users", ["merchant_id"])
    op.create_table(
        "merchant_user_sessions",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column(
            "user_id",
            sa.String(40),
            sa.ForeignKey("merchant_users.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("client_ip", sa.String(64), nullable=False, server_default=""),
        sa.Column(
            "create_time",
            sa.DateTime(timezone=True),
            nullable=False,
            server_default=sa.func.now(),
        ),
        sa.Column("expire_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoke_time", sa.DateTime(timezone=True)),
    )
    op.create_index("ix_merchant_user_sessions_user_id", "merchant_user_sessions", ["user_id"])
    op.create_table(
        "merchant_invites",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("merchant_id", sa.String(40), sa.ForeignKey("merchants.id"), nullable=False),
        sa.Column("email", sa.String(320), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("invited_by", sa.String(40), nullable=False),
        sa.Column(
            "create_time",
            sa.DateTime(timezone=True),
            nullable=False,
            server_default=sa.func.now(),
        ),
        sa.Column("expire_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("accept_time", sa.DateTime(timezone=True)),
        sa.CheckConstraint(ROLE_KNOWN, name="ck_merchant_invites_role_known"),
    )
    op.create_index("ix_merchant_invites_merchant_id", "merchant_invites", ["merchant_id"])


def downgrade() -> None:
    """Drops them."""
    op.drop_table("merchant_invites")
    op.drop_table("merchant_user_sessions")
    op.drop_table("merchant_users")
    op.drop_column("merchants", "live_enabled")
    op.drop_column("api_keys", "expire_time")
