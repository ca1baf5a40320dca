"""Disputes: the payment service's disputes, the processor's dispute records, charges' scenarios.

Revision ID: payment_0005
Revises: payment_0004
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "payment_0005"
down_revision = "payment_0004"
branch_labels = None
depends_on = None

DISPUTE_STATUSES = (
    "'warning_needs_response', 'warning_under_review', 'warning_closed', "
    "'needs_response', 'under_review', 'won', 'lost'"
)


def upgrade() -> None:
    """Adds the two dispute tables and two nullable columns (no table rewrite)."""
    op.add_column(
        "charges", sa.Column("scenario", sa.String(32), nullable=True), schema="processor"
    )
    op.create_table(
        "disputes",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("charge_id", sa.String(40), nullable=False),
        sa.Column("payment_id", sa.String(40), nullable=False, unique=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("reason", sa.String(32), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("outcome", sa.String(16), nullable=True),
        sa.Column(
            "create_time", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.Column("outcome_time", sa.DateTime(timezone=True), nullable=True),
        sa.Column("notify_time", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("kind IN ('chargeback', 'inquiry')", name="ck_disputes_kind"),
        sa.CheckConstraint("amount > 0", name="ck_disputes_amount_positive"),
        schema="processor",
    )
    # The simulator files disputes against captured charges of the two dispute cards only.
    op.create_index(
        "ix_charges_disputable",
        "charges",
        ["payment_id"],
        schema="processor",
        postgresql_where=sa.text("scenario IN ('dispute_fraudulent', 'dispute_inquiry')"),
    )
    # Filing a dispute reads the charge's refunds (what it still holds).
    op.create_index("ix_refunds_payment", "refunds", ["payment_id"], schema="processor")
    op.add_column("payments", sa.Column("dispute_id", sa.String(40), nullable=True))
    op.create_table(
        "disputes",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column(
            "payment_id",
            sa.String(40),
            sa.ForeignKey("payments.id", name="fk_disputes_payment_id_payments"),
            nullable=False,
        ),
        sa.Column("processor_dispute_id", sa.String(40), nullable=False, unique=True),
        sa.Column("merchant_id", sa.String(40), nullable=False),
        sa.Column("livemode", sa.Boolean(), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("fee", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("reason", sa.String(32), nullable=False),
        sa.Column("is_charge_refundable", sa.Boolean(), nullable=False),
        sa.Column("evidence", JSONB(), nullable=False),
        sa.Column("evidence_submitted", sa.Boolean(), nullable=False),
        sa.Column("due_by", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ledger_reference", sa.String(120), nullable=False),
        sa.Column("reinstate_reference", sa.String(120), nullable=False),
        sa.Column("withdraw_time", sa.DateTime(timezone=True), nullable=True),
        sa.Column("reinstate_time", sa.DateTime(timezone=True), nullable=True),
        sa.Column("drive_count", sa.Integer(), nullable=False),
        sa.Column("drive_time", sa.DateTime(timezone=True), nullable=True),
        sa.Column("close_time", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "create_time", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.Column(
            "update_time", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.CheckConstraint(f"status IN ({DISPUTE_STATUSES})", name="ck_disputes_status"),
        sa.CheckConstraint("amount > 0 AND fee >= 0", name="ck_disputes_amounts"),
    )
    op.create_index(
        "ix_disputes_merchant_created", "disputes", ["merchant_id", "livemode", "create_time"]
    )
    op.create_index("ix_disputes_status_due", "disputes", ["status", "due_by"])


def downgrade() -> None:
    """Drops what upgrade added."""
    op.drop_index("ix_disputes_status_due", table_name="disputes")
    op.drop_index("ix_disputes_merchant_created", table_name="disputes")
    op.drop_table("disputes")
    op.drop_column("payments", "dispute_id")
    op.drop_index("ix_refunds_payment", table_name="refunds", schema="processor")
    op.drop_index("ix_charges_disputable", table_name="charges", schema="processor")
    op.drop_table("disputes", schema="processor")
    op.drop_column("charges", "scenario", schema="processor")
