"""Tables of the admin service (schema `admin`)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, CheckConstraint, DateTime, ForeignKey, Integer, String, func
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from services.common.db import schema_metadata


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
