"""Customers and their saved payment methods (cards); payments name their customer and method.

Revision ID: payment_0004
Revises: payment_0003
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "payment_0004"
down_revision = "payment_0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Adds the two tables and the payments' three nullable columns (no table rewrite)."""
    op.create_table(
        "customers",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("merchant_id", sa.String(40), nullable=False),
        sa.Column("livemode", sa.Boolean(), nullable=False),
        sa.Column("email", sa.String(512), nullable=False),
        sa.Column("name", sa.String(256), nullable=False),
        sa.Column("description", sa.String(1000), nullable=False),
        sa.Column("metadata", JSONB(), nullable=False),
        sa.Column("delete_time", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "create_time", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.Column(
            "update_time", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
    )
    op.create_index(
        "ix_customers_merchant_created", "customers", ["merchant_id", "livemode", "create_time"]
    )
    op.create_index(
        "ix_customers_merchant_email", "customers", ["merchant_id", "livemode", "email"]
    )
    op.create_table(
        "payment_methods",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("merchant_id", sa.String(40), nullable=False),
        sa.Column("livemode", sa.Boolean(), nullable=False),
        sa.Column(
            "customer_id",
            sa.String(40),
            sa.ForeignKey("customers.id", name="fk_payment_methods_customer_id_customers"),
            nullable=True,
        ),
        sa.Column("card_brand", sa.String(32), nullable=False),
        sa.Column("card_last4", sa.String(4), nullable=False),
        sa.Column("card_exp_month", sa.Integer(), nullable=False),
        sa.Column("card_exp_year", sa.Integer(), nullable=False),
        sa.Column("card_fingerprint", sa.String(64), nullable=False),
        sa.Column("processor_token", sa.String(64), nullable=False),
        sa.Column(
            "create_time", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.Column(
            "update_time", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
    )
    op.create_index(
        "ix_payment_methods_customer_created", "payment_methods", ["customer_id", "create_time"]
    )
    op.add_column("payments", sa.Column("customer_id", sa.String(40), nullable=True))
    op.add_column("payments", sa.Column("payment_method_id", sa.String(40), nullable=True))
    op.add_column("payments", sa.Column("setup_future_usage", sa.String(16), nullable=True))


def downgrade() -> None:
    """Drops the columns and the tables."""
    op.drop_column("payments", "setup_future_usage")
    op.drop_column("payments", "payment_method_id")
    op.drop_column("payments", "customer_id")
    op.drop_table("payment_methods")
    op.drop_table("customers")
