"""Payouts, the merchants' payout settings, the simulated bank's records, funds' release.

Revision ID: payment_0006
Revises: payment_0005
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "payment_0006"
down_revision = "payment_0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Adds three tables and the payments' release time (nullable: no table rewrite)."""
    op.add_column(
        "payments", sa.Column("funds_release_time", sa.DateTime(timezone=True), nullable=True)
    )
    # Captures posted before this revision credited merchant_balance (available) directly:
    # their funds count as released when they settled, so the sweeper never moves them again
    # (and reconciliation, which expects a release only after the settle time, none).
    op.execute("UPDATE payments SET funds_release_time = settle_time WHERE status = 'succeeded'")
    # What the sweeper scans for funds to make available: succeeded and not released yet.
    op.create_index(
        "ix_payments_unreleased",
        "payments",
        ["settle_time"],
        postgresql_where=sa.text("status = 'succeeded' AND funds_release_time IS NULL"),
    )
    op.create_table(
        "payout_accounts",
        sa.Column("merchant_id", sa.String(40), primary_key=True),
        sa.Column("livemode", sa.Boolean(), primary_key=True),
        sa.Column("bank_account_number", sa.String(34), nullable=False),
        sa.Column("schedule", sa.String(16), nullable=False),
        sa.Column("settlement_delay_s", sa.BigInteger(), nullable=True),
        sa.Column("automatic_payout_time", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "create_time", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.Column(
            "update_time", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.CheckConstraint("schedule IN ('automatic', 'manual')", name="schedule_known"),
        sa.CheckConstraint("settlement_delay_s >= 0", name="settlement_delay_not_negative"),
    )
    op.create_table(
        "payouts",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("merchant_id", sa.String(40), nullable=False),
        sa.Column("livemode", sa.Boolean(), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("method", sa.String(16), nullable=False),
        sa.Column("description", sa.String(1000), nullable=False),
        sa.Column("metadata", JSONB(), nullable=False),
        sa.Column("bank_account_number", sa.String(34), nullable=False),
        sa.Column("failure_code", sa.String(64), nullable=False),
        sa.Column("ledger_complete", sa.Boolean(), nullable=False),
        sa.Column("drive_count", sa.Integer(), nullable=False),
        sa.Column("drive_time", sa.DateTime(timezone=True), nullable=True),
        sa.Column("post_time", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finish_time", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "create_time", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.Column(
            "update_time", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.CheckConstraint("amount > 0", name="amount_positive"),
        sa.CheckConstraint(
            "status IN ('pending', 'in_transit', 'paid', 'failed', 'canceled')",
            name="status_known",
        ),
    )
    op.create_index(
        "ix_payouts_merchant_created", "payouts", ["merchant_id", "livemode", "create_time"]
    )
    op.create_index(
        "ix_payouts_unfinished",
        "payouts",
        ["drive_time"],
        postgresql_where=sa.text("NOT ledger_complete"),
    )
    # The simulated bank's own records (the outside world, beside the card processor's).
    op.create_table(
        "bank_transfers",
        sa.Column("payout_id", sa.String(40), primary_key=True),
        sa.Column("bank_reference", sa.String(40), nullable=False),
        sa.Column("account_number", sa.String(34), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("failure_code", sa.String(64), nullable=False),
        sa.Column(
            "create_time", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        schema="processor",
    )


def downgrade() -> None:
    """Drops what upgrade added."""
    op.drop_table("bank_transfers", schema="processor")
    op.drop_table("payouts")
    op.drop_table("payout_accounts")
    op.drop_index("ix_payments_unreleased", table_name="payments")
    op.drop_column("payments", "funds_release_time")
