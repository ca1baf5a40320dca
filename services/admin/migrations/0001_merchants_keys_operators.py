"""Merchants, API keys and operators.

Revision ID: admin_0001
Revises:
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op

revision = "admin_0001"
down_revision = None
branch_labels = ("admin",)
depends_on = None


def upgrade() -> None:
    """Creates the tables."""
    op.create_table(
        "merchants",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("fee_bps", sa.Integer, nullable=False),
        sa.Column("fee_fixed", sa.BigInteger, nullable=False),
        sa.Column("create_time", sa.DateTime(timezone=True), server_default=sa.func.now()),
        sa.CheckConstraint("fee_bps BETWEEN 0 AND 10000", name="ck_merchants_fee_bps_range"),
        sa.CheckConstraint("fee_fixed >= 0", name="ck_merchants_fee_fixed_nonnegative"),
    )
    op.create_table(
        "api_keys",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("merchant_id", sa.String(40), sa.ForeignKey("merchants.id"), nullable=False),
        sa.Column("mode", sa.String(8), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("prefix", sa.String(32), nullable=False),
        sa.Column("key_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("create_time", sa.DateTime(timezone=True), server_default=sa.func.now()),
        sa.Column("revoke_time", sa.DateTime(timezone=True)),
        sa.CheckConstraint("mode IN ('test', 'live')", name="ck_api_keys_mode_known"),
        sa.CheckConstraint("kind IN ('secret', 'publishable')", name="ck_api_keys_kind_known"),
    )
    op.create_index("ix_api_keys_merchant_id", "api_keys", ["merchant_id"])
    op.create_index("ix_api_keys_prefix", "api_keys", ["prefix"])
    op.create_table(
        "operators",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("email", sa.String(320), nullable=False, unique=True),
        sa.Column("password_hash", sa.String(200), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("create_time", sa.DateTime(timezone=True), server_default=sa.func.now()),
        sa.CheckConstraint("role IN ('viewer', 'operator')", name="ck_operators_role_known"),
    )


def downgrade() -> None:
    """Drops the tables."""
    op.drop_table("operators")
    op.drop_table("api_keys")
    op.drop_table("merchants")
