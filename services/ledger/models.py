"""Tables of the ledger service (schema `ledger`).

The invariants live in the database (see migration `ledger_0001`): balanced transactions,
append-only entries and transactions, positive amounts, entry currency = account currency, and
balances that only the entry-insert trigger may change.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    DateTime,
    ForeignKey,
    ForeignKeyConstraint,
    Identity,
    Index,
    Integer,
    SmallInteger,
    String,
    Text,
    UniqueConstraint,
    func,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from services.common.db import schema_metadata


class Base(DeclarativeBase):
    """Base of the ledger service's tables."""

    metadata = schema_metadata("ledger")


class Account(Base):
    """One account: an owner's money of one kind in one currency and mode."""

    __tablename__ = "accounts"
    __table_args__ = (
        UniqueConstraint("owner", "kind", "currency", "livemode", name="uq_accounts_identity"),
        UniqueConstraint("id", "currency", name="uq_accounts_id_currency"),
        CheckConstraint("normal_side IN ('debit', 'credit')", name="normal_side_known"),
        CheckConstraint("balance_shards BETWEEN 1 AND 64", name="balance_shards_range"),
        CheckConstraint(
            "kind IN ('processor_receivable', 'platform_fees', 'merchant_balance',"
            " 'merchant_pending', 'payouts_in_transit', 'platform_cash')",
            name="kind_known",
        ),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    owner: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(32))
    currency: Mapped[str] = mapped_column(String(3))
    livemode: Mapped[bool]
    normal_side: Mapped[str] = mapped_column(String(6))
    # How many balance rows the entry trigger spreads this account's balance over (hot rows).
    balance_shards: Mapped[int] = mapped_column(SmallInteger)
    create_time: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )


class AccountBalance(Base):
    """One shard of an account's balance on its normal side; written only by the entry trigger."""

    __tablename__ = "account_balances"

    account_id: Mapped[str] = mapped_column(String(40), ForeignKey("accounts.id"), primary_key=True)
    shard: Mapped[int] = mapped_column(Integer, primary_key=True)
    balance: Mapped[int] = mapped_column(BigInteger)


class LedgerTransaction(Base):
    """A balanced set of entries, posted once per external reference."""

    __tablename__ = "transactions"
    __table_args__ = (
        Index("ix_transactions_create_time", "create_time"),
        Index("ix_transactions_source_id", "source_id"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    external_reference: Mapped[str] = mapped_column(String(200), unique=True)
    # SHA-256 of the canonical postings: a repeated reference must carry the same ones.
    postings_hash: Mapped[str] = mapped_column(String(64))
    description: Mapped[str] = mapped_column(String(1000))
    metadata_: Mapped[dict[str, str]] = mapped_column("metadata", JSONB)
    livemode: Mapped[bool]
    source_id: Mapped[str] = mapped_column(String(64))
    create_time: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )
    # Set by a trigger to the creating database transaction: only it may add entries.
    create_xid: Mapped[str] = mapped_column(Text, server_default="")


class Entry(Base):
    """One leg of a transaction: a positive amount debited or credited to one account."""

    __tablename__ = "entries"
    __table_args__ = (
        ForeignKeyConstraint(
            ["account_id", "currency"],
            ["accounts.id", "accounts.currency"],
            name="fk_entries_account_currency",
        ),
        CheckConstraint("amount > 0", name="amount_positive"),
        CheckConstraint("direction IN ('debit', 'credit')", name="direction_known"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    # Insertion order, for stable newest-first pages.
    seq: Mapped[int] = mapped_column(BigInteger, Identity(always=True), unique=True)
    transaction_id: Mapped[str] = mapped_column(String(40), ForeignKey("transactions.id"))
    account_id: Mapped[str] = mapped_column(String(40))
    direction: Mapped[str] = mapped_column(String(6))
    amount: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    source_id: Mapped[str] = mapped_column(String(64))
    create_time: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )
