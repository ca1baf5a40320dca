"""Tables of the payment service (schema `payment`) and of its processor simulator (`processor`)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, cast

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from services.common import tracing
from services.common.db import NAMING_CONVENTION, schema_metadata
from services.common.idempotency import KeyColumns, KeyStore

PAYMENT_STATUSES = (
    "requires_payment_method",
    "requires_action",
    "processing",
    "requires_capture",
    "succeeded",
    "failed",
    "canceled",
)
REFUND_STATUSES = ("pending", "succeeded", "failed")
DISPUTE_STATUSES = (
    "warning_needs_response",
    "warning_under_review",
    "warning_closed",
    "needs_response",
    "under_review",
    "won",
    "lost",
)
PAYOUT_STATUSES = ("pending", "in_transit", "paid", "failed", "canceled")
PAYOUT_SCHEDULES = ("automatic", "manual")
CAPTURE_METHODS = ("automatic", "manual")


class Base(DeclarativeBase):
    """Base of the payment service's tables."""

    metadata = schema_metadata("payment")


class Payment(Base):
    """A payment and where it is in its lifecycle."""

    __tablename__ = "payments"
    __table_args__ = (
        CheckConstraint("amount > 0", name="amount_positive"),
        Index("ix_payments_merchant_created", "merchant_id", "livemode", "create_time"),
        Index(
            "ix_payments_unreleased",
            "settle_time",
            postgresql_where=text("status = 'succeeded' AND funds_release_time IS NULL"),
        ),
    )
    # INSERT and UPDATE return the times the database sets (RETURNING), so a flushed payment
    # can be shown without another SELECT.
    __mapper_args__ = {"eager_defaults": True}

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    merchant_id: Mapped[str] = mapped_column(String(40))
    merchant_name: Mapped[str] = mapped_column(String(200), default="")
    livemode: Mapped[bool]
    amount: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    status: Mapped[str] = mapped_column(String(32))
    capture_method: Mapped[str] = mapped_column(String(16))
    amount_capturable: Mapped[int] = mapped_column(BigInteger, default=0)
    amount_to_capture: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    amount_received: Mapped[int] = mapped_column(BigInteger, default=0)
    amount_refunded: Mapped[int] = mapped_column(BigInteger, default=0)
    fee: Mapped[int] = mapped_column(BigInteger, default=0)
    fee_bps: Mapped[int] = mapped_column(Integer)
    fee_fixed: Mapped[int] = mapped_column(BigInteger)
    card_brand: Mapped[str | None] = mapped_column(String(32), nullable=True)
    card_last4: Mapped[str | None] = mapped_column(String(4), nullable=True)
    card_exp_month: Mapped[int | None] = mapped_column(Integer, nullable=True)
    card_exp_year: Mapped[int | None] = mapped_column(Integer, nullable=True)
    card_fingerprint: Mapped[str | None] = mapped_column(String(64), nullable=True)
    processor_token: Mapped[str | None] = mapped_column(String(64), nullable=True)
    processor_charge_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    failure_code: Mapped[str] = mapped_column(String(64), default="")
    failure_message: Mapped[str] = mapped_column(String(500), default="")
    description: Mapped[str] = mapped_column(String(1000), default="")
    metadata_: Mapped[dict[str, str]] = mapped_column("metadata", JSONB, default=dict)
    return_url: Mapped[str] = mapped_column(String(2048), default="")
    cancellation_reason: Mapped[str] = mapped_column(String(32), default="")
    client_secret: Mapped[str] = mapped_column(String(120))
    ledger_reference: Mapped[str] = mapped_column(String(120), default="")
    # How many times the worker was asked to drive this payment; part of the job id of
    # re-drives, so a job lost with a dead worker never blocks a new one.
    drive_count: Mapped[int] = mapped_column(Integer, default=0)
    drive_time: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    # The customer the payment is for, and the saved payment method that pays (or that its card
    # was saved as, under `setup_future_usage`).
    customer_id: Mapped[str | None] = mapped_column(String(40), nullable=True, default=None)
    payment_method_id: Mapped[str | None] = mapped_column(String(40), nullable=True, default=None)
    setup_future_usage: Mapped[str | None] = mapped_column(String(16), nullable=True, default=None)
    # The payment's dispute ("dp_..."), once the card's holder disputed the charge.
    dispute_id: Mapped[str | None] = mapped_column(String(40), nullable=True, default=None)
    authorize_time: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    settle_time: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    # When its captured funds moved from pending to available (the sweeper's release).
    funds_release_time: Mapped[datetime | None] = mapped_column(
        DateTime(timezone=True), nullable=True
    )
    create_time: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )
    update_time: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), onupdate=func.now()
    )


class Refund(Base):
    """Money given back from a captured payment."""

    __tablename__ = "refunds"
    # As for payments: INSERT and UPDATE return the times the database sets.
    __mapper_args__ = {"eager_defaults": True}

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    payment_id: Mapped[str] = mapped_column(String(40), ForeignKey("payments.id"))
    merchant_id: Mapped[str] = mapped_column(String(40))
    livemode: Mapped[bool]
    amount: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    status: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str] = mapped_column(String(32), default="")
    failure_code: Mapped[str] = mapped_column(String(64), default="")
    operator_id: Mapped[str] = mapped_column(String(40), default="")
    ledger_reference: Mapped[str] = mapped_column(String(120), default="")
    drive_count: Mapped[int] = mapped_column(Integer, default=0)
    drive_time: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    settle_time: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    create_time: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )
    update_time: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), onupdate=func.now()
    )


class Dispute(Base):
    """A cardholder's dispute of a captured payment: a chargeback, or an inquiry before one."""

    __tablename__ = "disputes"
    __table_args__ = (
        Index("ix_disputes_merchant_created", "merchant_id", "livemode", "create_time"),
        Index("ix_disputes_status_due", "status", "due_by"),
    )
    __mapper_args__ = {"eager_defaults": True}

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    payment_id: Mapped[str] = mapped_column(String(40), ForeignKey("payments.id"))
    # The processor's record of it (processor.disputes); unique, so a dispute opens once.
    processor_dispute_id: Mapped[str] = mapped_column(String(40), unique=True)
    merchant_id: Mapped[str] = mapped_column(String(40))
    livemode: Mapped[bool]
    amount: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    # The dispute fee withdrawn with the amount (0 for an inquiry, which moves no money).
    fee: Mapped[int] = mapped_column(BigInteger)
    status: Mapped[str] = mapped_column(String(32))
    reason: Mapped[str] = mapped_column(String(32))
    is_charge_refundable: Mapped[bool] = mapped_column(default=False)
    evidence: Mapped[dict[str, str]] = mapped_column(JSONB, default=dict)
    evidence_submitted: Mapped[bool] = mapped_column(default=False)
    due_by: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    # The ledger references of the withdrawal and of the reinstatement, once posted.
    ledger_reference: Mapped[str] = mapped_column(String(120), default="")
    reinstate_reference: Mapped[str] = mapped_column(String(120), default="")
    withdraw_time: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    reinstate_time: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    drive_count: Mapped[int] = mapped_column(Integer, default=0)
    drive_time: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    close_time: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    create_time: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )
    update_time: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), onupdate=func.now()
    )

    @property
    def is_inquiry(self) -> bool:
        """Whether this is an inquiry (statuses "warning_..."): no money moves."""
        return self.status.startswith("warning_")


class PayoutAccount(Base):
    """A merchant's payout settings in one mode: its bank account and payout schedule."""

    __tablename__ = "payout_accounts"
    __table_args__ = (
        CheckConstraint("schedule IN ('automatic', 'manual')", name="schedule_known"),
        CheckConstraint("settlement_delay_s >= 0", name="settlement_delay_not_negative"),
    )
    __mapper_args__ = {"eager_defaults": True}

    merchant_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    livemode: Mapped[bool] = mapped_column(primary_key=True)
    bank_account_number: Mapped[str] = mapped_column(String(34))
    schedule: Mapped[str] = mapped_column(String(16))
    # The merchant's own settlement delay; None takes the mode's default from the settings.
    settlement_delay_s: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    automatic_payout_time: Mapped[datetime | None] = mapped_column(
        DateTime(timezone=True), nullable=True
    )
    create_time: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )
    update_time: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), onupdate=func.now()
    )


class Payout(Base):
    """Money sent from a merchant's available balance to its bank account."""

    __tablename__ = "payouts"
    __table_args__ = (
        CheckConstraint("amount > 0", name="amount_positive"),
        Index("ix_payouts_merchant_created", "merchant_id", "livemode", "create_time"),
        Index("ix_payouts_unfinished", "drive_time", postgresql_where=text("NOT ledger_complete")),
        CheckConstraint(
            "status IN ('pending', 'in_transit', 'paid', 'failed', 'canceled')",
            name="status_known",
        ),
    )
    __mapper_args__ = {"eager_defaults": True}

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    merchant_id: Mapped[str] = mapped_column(String(40))
    livemode: Mapped[bool]
    amount: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    status: Mapped[str] = mapped_column(String(16))
    # "manual" (POST /v1/payouts) or "automatic" (the schedule).
    method: Mapped[str] = mapped_column(String(16))
    description: Mapped[str] = mapped_column(String(1000), default="")
    metadata_: Mapped[dict[str, str]] = mapped_column("metadata", JSONB, default=dict)
    bank_account_number: Mapped[str] = mapped_column(String(34))
    failure_code: Mapped[str] = mapped_column(String(64), default="")
    # True once every ledger transaction its status calls for is posted.
    ledger_complete: Mapped[bool] = mapped_column(default=False)
    drive_count: Mapped[int] = mapped_column(Integer, default=0)
    drive_time: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    # When its creation was posted to the ledger (it left the available balance).
    post_time: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    # When it reached paid, failed or canceled.
    finish_time: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    create_time: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )
    update_time: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), onupdate=func.now()
    )


class Customer(Base):
    """Someone who pays a merchant; deleted ones keep their row (payments name them)."""

    __tablename__ = "customers"
    __table_args__ = (
        Index("ix_customers_merchant_created", "merchant_id", "livemode", "create_time"),
        Index("ix_customers_merchant_email", "merchant_id", "livemode", "email"),
    )
    __mapper_args__ = {"eager_defaults": True}

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    merchant_id: Mapped[str] = mapped_column(String(40))
    livemode: Mapped[bool]
    email: Mapped[str] = mapped_column(String(512), default="")
    name: Mapped[str] = mapped_column(String(256), default="")
    description: Mapped[str] = mapped_column(String(1000), default="")
    metadata_: Mapped[dict[str, str]] = mapped_column("metadata", JSONB, default=dict)
    delete_time: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    create_time: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )
    update_time: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), onupdate=func.now()
    )


class SavedPaymentMethod(Base):
    """A card saved for later payments: the processor's token and what is shown of the card."""

    __tablename__ = "payment_methods"
    __table_args__ = (Index("ix_payment_methods_customer_created", "customer_id", "create_time"),)
    __mapper_args__ = {"eager_defaults": True}

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    merchant_id: Mapped[str] = mapped_column(String(40))
    livemode: Mapped[bool]
    customer_id: Mapped[str | None] = mapped_column(
        String(40), ForeignKey("customers.id"), nullable=True
    )
    card_brand: Mapped[str] = mapped_column(String(32))
    card_last4: Mapped[str] = mapped_column(String(4))
    card_exp_month: Mapped[int] = mapped_column(Integer)
    card_exp_year: Mapped[int] = mapped_column(Integer)
    card_fingerprint: Mapped[str] = mapped_column(String(64))
    processor_token: Mapped[str] = mapped_column(String(64))
    # A card saved while paying (setup_future_usage): the payment it waits on, unattached, until
    # that payment succeeds or is authorized (then attached to the payment's customer); a card
    # whose payment is declined, fails authentication or is abandoned is never attached.
    setup_payment_id: Mapped[str | None] = mapped_column(String(40), nullable=True, default=None)
    create_time: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )
    update_time: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), onupdate=func.now()
    )


class IdempotencyKey(KeyColumns, Base):
    """A merchant's idempotency key, its request's fingerprint, and the stored response."""

    __tablename__ = "idempotency_keys"

    merchant_id: Mapped[str] = mapped_column(String(40), primary_key=True)


# The statements of the payment service's keys (services/common/idempotency.py).
KEYS = KeyStore(cast(Table, IdempotencyKey.__table__), owner="merchant_id")


class OutboxMessage(Base):
    """Work to hand to RQ, or an event to publish, written with the change that caused it."""

    __tablename__ = "outbox"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    # "job" (an RQ job to enqueue) or "event" (published to the webhook service).
    kind: Mapped[str] = mapped_column(String(8))
    topic: Mapped[str] = mapped_column(String(120))
    payload: Mapped[dict[str, Any]] = mapped_column(JSONB)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str] = mapped_column(String(500), default="")
    next_attempt_time: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )
    relay_time: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    create_time: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )
    # The W3C traceparent of the request or job that wrote the row, when tracing is on; the
    # relay and the job it becomes continue that trace (services/common/tracing.py).
    traceparent: Mapped[str | None] = mapped_column(
        String(tracing.TRACEPARENT_LENGTH_MAX), nullable=True, default=tracing.current_traceparent
    )


class ProcessorBase(DeclarativeBase):
    """Base of the processor simulator's tables: the card network's side of the world."""

    metadata = MetaData(schema="processor", naming_convention=NAMING_CONVENTION)


class ProcessorToken(ProcessorBase):
    """A card as the simulator's vault knows it: the behaviour it triggers, never its number."""

    __tablename__ = "tokens"

    token: Mapped[str] = mapped_column(String(64), primary_key=True)
    scenario: Mapped[str] = mapped_column(String(32))
    brand: Mapped[str] = mapped_column(String(32))
    last4: Mapped[str] = mapped_column(String(4))
    create_time: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )


class ProcessorAttempt(ProcessorBase):
    """How many times each payment was presented for authorization."""

    __tablename__ = "attempts"

    payment_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    count: Mapped[int] = mapped_column(Integer, server_default=text("0"))


class ProcessorCharge(ProcessorBase):
    """An authorization, and its capture or void; one per payment."""

    __tablename__ = "charges"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    payment_id: Mapped[str] = mapped_column(String(40), unique=True)
    amount_authorized: Mapped[int] = mapped_column(BigInteger)
    amount_captured: Mapped[int] = mapped_column(BigInteger, default=0)
    currency: Mapped[str] = mapped_column(String(3))
    # "authorized", "captured" or "voided".
    status: Mapped[str] = mapped_column(String(16))
    # The card's scenario (processor.tokens): what the simulator does after the capture.
    scenario: Mapped[str | None] = mapped_column(String(32), nullable=True, default=None)
    create_time: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )
    capture_time: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class ProcessorRefund(ProcessorBase):
    """Money the simulator sent back to a card; one per refund."""

    __tablename__ = "refunds"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    refund_id: Mapped[str] = mapped_column(String(40), unique=True)
    payment_id: Mapped[str] = mapped_column(String(40))
    amount: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    create_time: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )


class ProcessorDispute(ProcessorBase):
    """A dispute the card network filed against a captured charge; one per charge.

    `outcome` is set when the network decides ("won": the amount is reinstated; "lost").
    """

    __tablename__ = "disputes"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    charge_id: Mapped[str] = mapped_column(String(40))
    payment_id: Mapped[str] = mapped_column(String(40), unique=True)
    # "chargeback" (the money is taken back) or "inquiry" (a question, no money moves).
    kind: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str] = mapped_column(String(32))
    amount: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    outcome: Mapped[str | None] = mapped_column(String(16), nullable=True, default=None)
    create_time: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )
    outcome_time: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    # When the payment service took it (as a real network's notification would reach it).
    notify_time: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class BankTransfer(ProcessorBase):
    """A transfer the simulated bank made (or refused) for a payout; one per payout."""

    __tablename__ = "bank_transfers"

    payout_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    bank_reference: Mapped[str] = mapped_column(String(40))
    account_number: Mapped[str] = mapped_column(String(34))
    amount: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    # "paid" or "failed".
    status: Mapped[str] = mapped_column(String(16))
    failure_code: Mapped[str] = mapped_column(String(64), default="")
    create_time: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )
