"""Tables of the webhook service (schema `webhook`)."""

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
    LargeBinary,
    String,
    Table,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from services.common import tracing
from services.common.db import schema_metadata
from services.common.idempotency import KeyColumns, KeyStore

ENDPOINT_STATUSES = ("enabled", "disabled")
DELIVERY_STATUSES = ("pending", "delivered", "failing", "dead")
# The current top-level transaction's id, 64 bits (it never wraps around), as a bigint.
CURRENT_TXID = "(pg_current_xact_id()::text::bigint)"


class Base(DeclarativeBase):
    """Base of the webhook service's tables."""

    metadata = schema_metadata("webhook")


class Event(Base):
    """One state change of a merchant's object, as published by the service that owns it."""

    __tablename__ = "events"
    __table_args__ = (
        Index("ix_events_merchant_created", "merchant_id", "livemode", "create_time", "id"),
        Index("ix_events_object", "object_id", "create_time"),
        Index("ix_events_created", "create_time"),
        Index("ix_events_merchant_txid", "merchant_id", "livemode", "txid", "id"),
    )

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    merchant_id: Mapped[str] = mapped_column(String(40))
    livemode: Mapped[bool]
    type: Mapped[str] = mapped_column(String(100))
    object_id: Mapped[str] = mapped_column(String(64))
    data: Mapped[dict[str, Any]] = mapped_column(JSONB)
    create_time: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    store_time: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    # The storing transaction's id: the event stream's order (events.read_stream).
    txid: Mapped[int] = mapped_column(BigInteger, server_default=text(CURRENT_TXID))
    # The W3C traceparent its deliveries continue (services/common/tracing.py): every attempt,
    # retries and replays included, is a span of the trace that caused the event.
    traceparent: Mapped[str | None] = mapped_column(
        String(tracing.TRACEPARENT_LENGTH_MAX), nullable=True
    )


class Endpoint(Base):
    """A merchant's URL that receives the events it subscribed to."""

    __tablename__ = "endpoints"
    __table_args__ = (
        CheckConstraint("status IN ('enabled', 'disabled')", name="status_known"),
        Index("ix_endpoints_merchant", "merchant_id", "livemode", "create_time", "id"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    merchant_id: Mapped[str] = mapped_column(String(40))
    livemode: Mapped[bool]
    url: Mapped[str] = mapped_column(String(2048))
    enabled_events: Mapped[list[str]] = mapped_column(JSONB)
    description: Mapped[str] = mapped_column(String(1000), default="")
    status: Mapped[str] = mapped_column(String(16), default="enabled")
    disabled_reason: Mapped[str] = mapped_column(String(200), default="")
    # Start of the current run of failed attempts; cleared by any success.
    failing_since: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    create_time: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )
    update_time: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), onupdate=func.now()
    )
    # Deleted endpoints stay for their deliveries' history but are invisible to the API.
    delete_time: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class EndpointSecret(Base):
    """A signing secret, encrypted; several are active while a rotation overlaps."""

    __tablename__ = "endpoint_secrets"
    __table_args__ = (Index("ix_endpoint_secrets_endpoint", "endpoint_id", "create_time"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    endpoint_id: Mapped[str] = mapped_column(
        String(40), ForeignKey("webhook.endpoints.id", ondelete="CASCADE")
    )
    ciphertext: Mapped[bytes] = mapped_column(LargeBinary)
    create_time: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    # None while it is the current secret; set when a rotation starts its overlap.
    expire_time: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class Delivery(Base):
    """One event on its way to one endpoint; PostgreSQL, not Redis, says what is due."""

    __tablename__ = "deliveries"
    __table_args__ = (
        CheckConstraint(
            "status IN ('pending', 'delivered', 'failing', 'dead')", name="status_known"
        ),
        CheckConstraint("attempt_count >= 0 AND round_attempts >= 0", name="counts_nonnegative"),
        UniqueConstraint("event_id", "endpoint_id", name="uq_deliveries_event_endpoint"),
        Index(
            "ix_deliveries_due",
            "next_attempt_time",
            postgresql_where="status IN ('pending', 'failing')",
        ),
        Index("ix_deliveries_endpoint", "endpoint_id", "create_time", "id"),
        Index("ix_deliveries_status", "status", "update_time", "id"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    event_id: Mapped[str] = mapped_column(
        String(64), ForeignKey("webhook.events.id", ondelete="CASCADE")
    )
    endpoint_id: Mapped[str] = mapped_column(
        String(40), ForeignKey("webhook.endpoints.id", ondelete="CASCADE")
    )
    merchant_id: Mapped[str] = mapped_column(String(40))
    livemode: Mapped[bool]
    status: Mapped[str] = mapped_column(String(16), default="pending")
    # Every attempt ever made (job ids count on from it, so each attempt has its own job).
    attempt_count: Mapped[int] = mapped_column(Integer, default=0)
    # Attempts since the delivery was created or last replayed: the retry schedule's index.
    round_attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_time: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Set while a worker holds the attempt; once past, the attempt is presumed lost.
    lease_expire_time: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_status_code: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str] = mapped_column(String(500), default="")
    create_time: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )
    update_time: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), onupdate=func.now()
    )


class DeliveryAttempt(Base):
    """One HTTP attempt of a delivery; `duration_ms` is None while it is in flight."""

    __tablename__ = "delivery_attempts"
    __table_args__ = (
        UniqueConstraint("delivery_id", "attempt_number", name="uq_delivery_attempts_number"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    delivery_id: Mapped[str] = mapped_column(
        String(40), ForeignKey("webhook.deliveries.id", ondelete="CASCADE")
    )
    attempt_number: Mapped[int] = mapped_column(Integer)
    start_time: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    duration_ms: Mapped[int | None] = mapped_column(Integer)
    status_code: Mapped[int] = mapped_column(Integer, default=0)
    response_body: Mapped[str] = mapped_column(Text, default="")
    error: Mapped[str] = mapped_column(String(500), default="")


class IdempotencyKey(KeyColumns, Base):
    """A merchant's key for a webhook write: its request's fingerprint, its stored response."""

    __tablename__ = "idempotency_keys"

    merchant_id: Mapped[str] = mapped_column(String(40), primary_key=True)


# The statements of the webhook service's keys (services/common/idempotency.py).
KEYS = KeyStore(cast(Table, IdempotencyKey.__table__), owner="merchant_id")
