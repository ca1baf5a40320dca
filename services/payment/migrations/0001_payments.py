"""Payments, refunds, idempotency keys, the outbox, and the processor simulator's schema.

Revision ID: payment_0001
Revises:
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "payment_0001"
down_revision = None
branch_labels = ("payment",)
depends_on = None

NOW = sa.text("now()")


def _times() -> list[sa.Column]:  # type: ignore[type-arg]
    return [
        sa.Column("create_time", sa.DateTime(timezone=True), nullable=False, server_default=NOW),
        sa.Column("update_time", sa.DateTime(timezone=True), nullable=False, server_default=NOW),
    ]


def upgrade() -> None:
    """Creates the tables."""
    op.create_table(
        "payments",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("merchant_id", sa.String(40), nullable=False),
        sa.Column("merchant_name", sa.String(200), nullable=False, server_default=""),
        sa.Column("livemode", sa.Boolean, nullable=False),
        sa.Column("amount", sa.BigInteger, nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("capture_method", sa.String(16), nullable=False),
        sa.Column("amount_capturable", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("amount_to_capture", sa.BigInteger),
        sa.Column("amount_received", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("amount_refunded", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("fee", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("fee_bps", sa.Integer, nullable=False),
        sa.Column("fee_fixed", sa.BigInteger, nullable=False),
        sa.Column("card_brand", sa.String(32)),
        sa.Column("card_last4", sa.String(4)),
        sa.Column("card_exp_month", sa.Integer),
        sa.Column("card_exp_year", sa.Integer),
        sa.Column("card_fingerprint", sa.String(64)),
        sa.Column("processor_token", sa.String(64)),
        sa.Column("processor_charge_id", sa.String(64)),
        sa.Column("failure_code", sa.String(64), nullable=False, server_default=""),
        sa.Column("failure_message", sa.String(500), nullable=False, server_default=""),
        sa.Column("description", sa.String(1000), nullable=False, server_default=""),
        sa.Column("metadata", JSONB, nullable=False, server_default="{}"),
        sa.Column("return_url", sa.String(2048), nullable=False, server_default=""),
        sa.Column("cancellation_reason", sa.String(32), nullable=False, server_default=""),
        sa.Column("client_secret", sa.String(120), nullable=False),
        sa.Column("ledger_reference", sa.String(120), nullable=False, server_default=""),
        sa.Column("drive_count", sa.Integer, nullable=False, server_default="0"),
        sa.Column("drive_time", sa.DateTime(timezone=True)),
        sa.Column("authorize_time", sa.DateTime(timezone=True)),
        sa.Column("settle_time", sa.DateTime(timezone=True)),
        *_times(),
        sa.CheckConstraint("amount > 0", name="ck_payments_amount_positive"),
        sa.CheckConstraint(
            "status IN ('requires_payment_method', 'processing', 'requires_capture',"
            " 'succeeded', 'failed', 'canceled')",
            name="ck_payments_status_known",
        ),
        sa.CheckConstraint(
            "capture_method IN ('automatic', 'manual')", name="ck_payments_capture_method_known"
        ),
        # The money columns can never describe more than was authorized, captured or refunded.
        sa.CheckConstraint(
            "amount_capturable BETWEEN 0 AND amount", name="ck_payments_capturable_bounded"
        ),
        sa.CheckConstraint(
            "amount_received BETWEEN 0 AND amount", name="ck_payments_received_bounded"
        ),
        sa.CheckConstraint(
            "amount_refunded BETWEEN 0 AND amount_received", name="ck_payments_refunded_bounded"
        ),
        sa.CheckConstraint("fee BETWEEN 0 AND amount_received", name="ck_payments_fee_bounded"),
        sa.CheckConstraint(
            "amount_to_capture IS NULL OR amount_to_capture BETWEEN 1 AND amount",
            name="ck_payments_to_capture_bounded",
        ),
    )
    op.create_index(
        "ix_payments_merchant_created",
        "payments",
        ["merchant_id", "livemode", sa.text("create_time DESC"), sa.text("id DESC")],
    )
    op.create_index("ix_payments_created", "payments", [sa.text("create_time DESC")])
    op.create_index("ix_payments_settled", "payments", ["settle_time"])
    # The sweeper's questions: what is stuck, what waits for capture too long.
    op.create_index(
        "ix_payments_status_open",
        "payments",
        ["status", "drive_time"],
        postgresql_where=sa.text("status IN ('processing', 'requires_capture')"),
    )

    op.create_table(
        "refunds",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("payment_id", sa.String(40), sa.ForeignKey("payments.id"), nullable=False),
        sa.Column("merchant_id", sa.String(40), nullable=False),
        sa.Column("livemode", sa.Boolean, nullable=False),
        sa.Column("amount", sa.BigInteger, nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("reason", sa.String(32), nullable=False, server_default=""),
        sa.Column("failure_code", sa.String(64), nullable=False, server_default=""),
        sa.Column("operator_id", sa.String(40), nullable=False, server_default=""),
        sa.Column("ledger_reference", sa.String(120), nullable=False, server_default=""),
        sa.Column("drive_count", sa.Integer, nullable=False, server_default="0"),
        sa.Column("drive_time", sa.DateTime(timezone=True)),
        sa.Column("settle_time", sa.DateTime(timezone=True)),
        *_times(),
        sa.CheckConstraint("amount > 0", name="ck_refunds_amount_positive"),
        sa.CheckConstraint(
            "status IN ('pending', 'succeeded', 'failed')", name="ck_refunds_status_known"
        ),
    )
    op.create_index(
        "ix_refunds_merchant_created",
        "refunds",
        ["merchant_id", "livemode", sa.text("create_time DESC"), sa.text("id DESC")],
    )
    op.create_index("ix_refunds_payment", "refunds", ["payment_id"])
    op.create_index("ix_refunds_settled", "refunds", ["settle_time"])

    op.create_table(
        "idempotency_keys",
        sa.Column("merchant_id", sa.String(40), primary_key=True),
        sa.Column("livemode", sa.Boolean, primary_key=True),
        sa.Column("operation", sa.String(40), primary_key=True),
        sa.Column("key", sa.String(255), primary_key=True),
        sa.Column("request_hash", sa.String(64), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("response", sa.LargeBinary),
        sa.Column("lock_time", sa.DateTime(timezone=True), nullable=False, server_default=NOW),
        sa.Column("create_time", sa.DateTime(timezone=True), nullable=False, server_default=NOW),
        sa.Column("expire_time", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "state IN ('in_progress', 'completed')", name="ck_idempotency_keys_state_known"
        ),
        sa.CheckConstraint(
            "(state = 'completed') = (response IS NOT NULL)",
            name="ck_idempotency_keys_response_when_completed",
        ),
    )
    op.create_index("ix_idempotency_keys_expire", "idempotency_keys", ["expire_time"])

    op.create_table(
        "outbox",
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("topic", sa.String(120), nullable=False),
        sa.Column("payload", JSONB, nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("last_error", sa.String(500), nullable=False, server_default=""),
        sa.Column(
            "next_attempt_time", sa.DateTime(timezone=True), nullable=False, server_default=NOW
        ),
        sa.Column("relay_time", sa.DateTime(timezone=True)),
        sa.Column("create_time", sa.DateTime(timezone=True), nullable=False, server_default=NOW),
        sa.CheckConstraint("kind IN ('job', 'event')", name="ck_outbox_kind_known"),
    )
    # The relay only ever scans rows still to be relayed.
    op.create_index(
        "ix_outbox_pending",
        "outbox",
        ["next_attempt_time", "id"],
        postgresql_where=sa.text("relay_time IS NULL"),
    )

    # The processor simulator: the card network's records, kept apart from the payment
    # service's own so reconciliation can compare two independent sides.
    op.execute("CREATE SCHEMA IF NOT EXISTS processor")
    op.create_table(
        "tokens",
        sa.Column("token", sa.String(64), primary_key=True),
        sa.Column("scenario", sa.String(32), nullable=False),
        sa.Column("brand", sa.String(32), nullable=False),
        sa.Column("last4", sa.String(4), nullable=False),
        sa.Column("create_time", sa.DateTime(timezone=True), nullable=False, server_default=NOW),
        schema="processor",
    )
    op.create_table(
        "attempts",
        sa.Column("payment_id", sa.String(40), primary_key=True),
        sa.Column("count", sa.Integer, nullable=False, server_default="0"),
        schema="processor",
    )
    op.create_table(
        "charges",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("payment_id", sa.String(40), nullable=False, unique=True),
        sa.Column("amount_authorized", sa.BigInteger, nullable=False),
        sa.Column("amount_captured", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("create_time", sa.DateTime(timezone=True), nullable=False, server_default=NOW),
        sa.Column("capture_time", sa.DateTime(timezone=True)),
        sa.CheckConstraint(
            "amount_captured BETWEEN 0 AND amount_authorized", name="ck_charges_captured_bounded"
        ),
        schema="processor",
    )
    op.create_index("ix_charges_captured", "charges", ["capture_time"], schema="processor")
    op.create_table(
        "refunds",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("refund_id", sa.String(40), nullable=False, unique=True),
        sa.Column("payment_id", sa.String(40), nullable=False),
        sa.Column("amount", sa.BigInteger, nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("create_time", sa.DateTime(timezone=True), nullable=False, server_default=NOW),
        sa.CheckConstraint("amount > 0", name="ck_refunds_amount_positive"),
        schema="processor",
    )
    op.create_index("ix_refunds_created", "refunds", ["create_time"], schema="processor")


def downgrade() -> None:
    """Drops the tables."""
    op.execute("DROP SCHEMA IF EXISTS processor CASCADE")
    op.drop_table("outbox")
    op.drop_table("idempotency_keys")
    op.drop_table("refunds")
    op.drop_table("payments")
