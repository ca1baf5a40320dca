"""Tables of the admin service (schema `admin`)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, cast

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Identity,
    Integer,
    String,
    Table,
    func,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from services.common.db import schema_metadata
from services.common.idempotency import KeyColumns, KeyStore
from services.common.versions import LATEST


class Base(DeclarativeBase):
    """Base of the admin service's tables."""

    metadata = schema_metadata("admin")


class Merchant(Base):
    """A business that takes payments."""

    __tablename__ = "merchants"
    __table_args__ = (
        CheckConstraint("fee_bps BETWEEN 0 AND 10000", name="fee_bps_range"),
        CheckConstraint("fee_fixed >= 0", name="fee_fixed_nonnegative"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    fee_bps: Mapped[int] = mapped_column(Integer)
    fee_fixed: Mapped[int] = mapped_column(BigInteger)
    # Pinned at creation (services/common/versions.py); requests may ask for another.
    api_version: Mapped[str] = mapped_column(String(10), default=LATEST)
    # False for a merchant that signed itself up: test mode only (no live keys or sessions).
    live_enabled: Mapped[bool] = mapped_column(Boolean, server_default="true")
    create_time: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )


class ApiKey(Base):
    """A merchant's key, stored as a hash; only its prefix is shown after creation."""

    __tablename__ = "api_keys"
    __table_args__ = (
        CheckConstraint("mode IN ('test', 'live')", name="mode_known"),
        CheckConstraint("kind IN ('secret', 'publishable')", name="kind_known"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    merchant_id: Mapped[str] = mapped_column(ForeignKey("merchants.id"), index=True)
    mode: Mapped[str] = mapped_column(String(8))
    kind: Mapped[str] = mapped_column(String(16))
    prefix: Mapped[str] = mapped_column(String(32), index=True)
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    create_time: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )
    revoke_time: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Set when the key is rolled: it works until then, beside its replacement.
    expire_time: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class Operator(Base):
    """A person who runs paymesh; the password is an argon2 hash."""

    __tablename__ = "operators"
    __table_args__ = (CheckConstraint("role IN ('viewer', 'operator')", name="role_known"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    email: Mapped[str] = mapped_column(String(320), unique=True)
    password_hash: Mapped[str] = mapped_column(String(200))
    role: Mapped[str] = mapped_column(String(16))
    create_time: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )


class OperatorSession(Base):
    """A login session, or a stream token issued under one; only the token's hash is kept."""

    __tablename__ = "operator_sessions"
    __table_args__ = (
        CheckConstraint("purpose IN ('session', 'stream')", name="purpose_known"),
        CheckConstraint("(purpose = 'stream') = (parent_id IS NOT NULL)", name="stream_has_parent"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    operator_id: Mapped[str] = mapped_column(ForeignKey("operators.id"), index=True)
    purpose: Mapped[str] = mapped_column(String(16))
    parent_id: Mapped[str | None] = mapped_column(ForeignKey("operator_sessions.id"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    client_ip: Mapped[str] = mapped_column(String(64), server_default="")
    create_time: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )
    expire_time: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    revoke_time: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class MerchantUser(Base):
    """A person who signs in to one merchant's dashboard; the password is an argon2 hash."""

    __tablename__ = "merchant_users"
    __table_args__ = (
        CheckConstraint("role IN ('admin', 'developer', 'viewer')", name="role_known"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    merchant_id: Mapped[str] = mapped_column(ForeignKey("merchants.id"), index=True)
    # One account per email across paymesh: signing in names no merchant.
    email: Mapped[str] = mapped_column(String(320), unique=True)
    password_hash: Mapped[str] = mapped_column(String(200))
    role: Mapped[str] = mapped_column(String(16))
    create_time: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )


class MerchantUserSession(Base):
    """A merchant user's login session; only the token's hash is kept."""

    __tablename__ = "merchant_user_sessions"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    user_id: Mapped[str] = mapped_column(
        ForeignKey("merchant_users.id", ondelete="CASCADE"), index=True
    )
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    client_ip: Mapped[str] = mapped_column(String(64), server_default="")
    create_time: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )
    expire_time: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    revoke_time: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class MerchantInvite(Base):
    """An invitation to join a merchant's dashboard; only the token's hash is kept."""

    __tablename__ = "merchant_invites"
    __table_args__ = (
        CheckConstraint("role IN ('admin', 'developer', 'viewer')", name="role_known"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    merchant_id: Mapped[str] = mapped_column(ForeignKey("merchants.id"), index=True)
    email: Mapped[str] = mapped_column(String(320))
    role: Mapped[str] = mapped_column(String(16))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    # Who invited: "op_..." for an operator, "usr_..." for one of the merchant's admins.
    invited_by: Mapped[str] = mapped_column(String(40))
    create_time: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )
    expire_time: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    accept_time: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class AuditEntry(Base):
    """One operator action; the database refuses UPDATE, DELETE and TRUNCATE on this table."""

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(BigInteger, Identity(always=True), primary_key=True)
    create_time: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )
    operator_id: Mapped[str] = mapped_column(String(40), server_default="", index=True)
    operator_email: Mapped[str] = mapped_column(String(320))
    action: Mapped[str] = mapped_column(String(64))
    target_id: Mapped[str] = mapped_column(String(200), server_default="", index=True)
    client_ip: Mapped[str] = mapped_column(String(64), server_default="")
    user_agent: Mapped[str] = mapped_column(String(512), server_default="")
    details: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default="{}")


class ReconciliationRun(Base):
    """A kept reconciliation report from the ledger service."""

    __tablename__ = "reconciliation_runs"
    __table_args__ = (CheckConstraint("start_time < end_time", name="range_ordered"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    operator_id: Mapped[str] = mapped_column(ForeignKey("operators.id"))
    start_time: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    end_time: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    checked_count: Mapped[int] = mapped_column(BigInteger)
    mismatch_count: Mapped[int] = mapped_column(Integer)
    report: Mapped[dict[str, Any]] = mapped_column(JSONB)
    create_time: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )


class IdempotencyKey(KeyColumns, Base):
    """An operator's idempotency key (livemode always false): request fingerprint, response."""

    __tablename__ = "idempotency_keys"

    operator_id: Mapped[str] = mapped_column(String(40), primary_key=True)


# The statements of the admin service's keys (services/common/idempotency.py).
KEYS = KeyStore(cast(Table, IdempotencyKey.__table__), owner="operator_id")
