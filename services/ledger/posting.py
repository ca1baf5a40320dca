"""Posting balanced transactions, idempotently by external reference.

Python checks a transaction before writing it, to answer clear errors; the database checks it
again (see migration `ledger_0001`) so that no other writer can break the invariants.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import select, tuple_
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from services.common.errors import FieldViolation
from services.common.ids import new_id
from services.common.money import AMOUNT_MAX, normalize_currency
from services.ledger.errors import InvalidPosting, ReferenceReused
from services.ledger.models import Account, Entry, LedgerTransaction

PLATFORM_OWNER = "platform"
# The side that increases each kind of account.
NORMAL_SIDES = {
    "processor_receivable": "debit",  # asset: the processor owes it to us
    "platform_fees": "credit",  # revenue
    "merchant_balance": "credit",  # liability: we owe it to the merchant, available to pay out
    "merchant_pending": "credit",  # liability: captured for the merchant, not available yet
    "payouts_in_transit": "credit",  # liability: paid out to the merchant's bank, not landed
    # asset: the platform's cash at its bank; payouts paid take from it (the processor's
    # settlements into it are not modelled yet, so it runs negative)
    "platform_cash": "debit",
}
PLATFORM_KINDS = frozenset({"processor_receivable", "platform_fees", "platform_cash"})
DIRECTIONS = frozenset({"debit", "credit"})
POSTINGS_MAX = 50
REFERENCE_LENGTH_MAX = 200
DESCRIPTION_LENGTH_MAX = 1000
METADATA_KEYS_MAX = 50
METADATA_KEY_LENGTH_MAX = 40
METADATA_VALUE_LENGTH_MAX = 500
OWNER_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,64}")
BALANCE_SHARDS_MAX = 64


@dataclass(frozen=True)
class Posting:
    """One leg to post: `amount` minor units of `currency` to an owner's account of `kind`."""

    owner: str
    kind: str
    direction: str
    amount: int
    currency: str


@dataclass(frozen=True)
class PostedTransaction:
    """A transaction as stored, with its entries in posting (account id) order."""

    transaction: LedgerTransaction
    entries: list[Entry]
    # False when an earlier posting of the same reference was returned.
    created: bool
    # The accounts posted to by (owner, kind, currency), when created.
    account_ids: dict[tuple[str, str, str], str] = field(default_factory=dict)


def _validate(
    *,
    external_reference: str,
    postings: list[Posting],
    description: str,
    metadata: dict[str, str],
) -> list[Posting]:
    """The postings with currencies normalized, or InvalidPosting listing every fault."""
    violations: list[FieldViolation] = []
    if not external_reference or len(external_reference) > REFERENCE_LENGTH_MAX:
        violations.append(
            FieldViolation("external_reference", f"must be 1 to {REFERENCE_LENGTH_MAX} characters")
        )
    if len(description) > DESCRIPTION_LENGTH_MAX:
        violations.append(
            FieldViolation("description", f"must be at most {DESCRIPTION_LENGTH_MAX} characters")
        )
    if len(metadata) > METADATA_KEYS_MAX:
        violations.append(FieldViolation("metadata", f"at most {METADATA_KEYS_MAX} keys"))
    for key, value in metadata.items():
        if not key or len(key) > METADATA_KEY_LENGTH_MAX or len(value) > METADATA_VALUE_LENGTH_MAX:
            violations.append(
                FieldViolation(
                    f"metadata[{key[:METADATA_KEY_LENGTH_MAX]}]",
                    f"keys 1 to {METADATA_KEY_LENGTH_MAX} characters, values at most "
                    f"{METADATA_VALUE_LENGTH_MAX}",
                )
            )
    if not 2 <= len(postings) <= POSTINGS_MAX:
        violations.append(FieldViolation("postings", f"must have 2 to {POSTINGS_MAX} postings"))
    normalized: list[Posting] = []
    for index, posting in enumerate(postings[:POSTINGS_MAX]):
        field = f"postings[{index}]"
        currency = normalize_currency(posting.currency)
        if currency is None:
            violations.append(
                FieldViolation(f"{field}.currency", "must be an ISO 4217 currency code")
            )
        if posting.kind not in NORMAL_SIDES:
            violations.append(
                FieldViolation(f"{field}.kind", f"must be one of {', '.join(sorted(NORMAL_SIDES))}")
            )
        elif (posting.owner == PLATFORM_OWNER) != (posting.kind in PLATFORM_KINDS):
            violations.append(
                FieldViolation(
                    f"{field}.owner",
                    f"{posting.kind} accounts belong to "
                    + ("the platform" if posting.kind in PLATFORM_KINDS else "a merchant"),
                )
            )
        if not OWNER_PATTERN.fullmatch(posting.owner):
            violations.append(
                FieldViolation(f"{field}.owner", "must be 1 to 64 letters, digits, '_' or '-'")
            )
        if posting.direction not in DIRECTIONS:
            violations.append(FieldViolation(f"{field}.direction", "must be debit or credit"))
        if not 0 < posting.amount <= AMOUNT_MAX:
            violations.append(
                FieldViolation(f"{field}.amount", f"must be between 1 and {AMOUNT_MAX}")
            )
        if currency is not None:
            normalized.append(
                Posting(posting.owner, posting.kind, posting.direction, posting.amount, currency)
            )
    if not violations:
        net: dict[str, int] = defaultdict(int)
        for leg in normalized:
            net[leg.currency] += leg.amount if leg.direction == "debit" else -leg.amount
        for currency, difference in sorted(net.items()):
            if difference:
                violations.append(
                    FieldViolation(
                        "postings",
                        f"debits and credits differ by {difference} in {currency}",
                    )
                )
    if violations:
        raise InvalidPosting("the ledger transaction is invalid", violations=violations)
    return normalized


def postings_hash(postings: list[Posting], *, livemode: bool) -> str:
    """A fingerprint of what a transaction moves, independent of the postings' order."""
    canonical = sorted((p.owner, p.kind, p.direction, p.amount, p.currency) for p in postings)
    payload = json.dumps({"livemode": livemode, "postings": canonical}, separators=(",", ":"))
    return hashlib.sha256(payload.encode()).hexdigest()


def source_id_of(metadata: dict[str, str]) -> str:
    """The payment, refund, dispute or payout a transaction records, from its metadata."""
    return (
        metadata.get("refund_id")
        or metadata.get("dispute_id")
        or metadata.get("payout_id")
        or metadata.get("payment_id")
        or ""
    )


def _existing(
    session: Session, *, external_reference: str, fingerprint: str
) -> PostedTransaction | None:
    """The transaction already posted under this reference, if any; refuses other postings."""
    transaction = session.scalars(
        select(LedgerTransaction).where(LedgerTransaction.external_reference == external_reference)
    ).one_or_none()
    if transaction is None:
        return None
    if transaction.postings_hash != fingerprint:
        raise ReferenceReused(
            f"external reference {external_reference!r} was posted with other postings",
            metadata={"transaction_id": transaction.id},
        )
    entries = list(
        session.scalars(
            select(Entry).where(Entry.transaction_id == transaction.id).order_by(Entry.seq)
        )
    )
    return PostedTransaction(transaction, entries, created=False)


def ensure_accounts(
    session: Session,
    *,
    keys: set[tuple[str, str, str]],
    livemode: bool,
    hot_account_shards: int,
) -> dict[tuple[str, str, str], Account]:
    """The accounts for (owner, kind, currency) keys in this mode, created on first use."""

    def load() -> dict[tuple[str, str, str], Account]:
        rows = session.scalars(
            select(Account).where(
                Account.livemode == livemode,
                tuple_(Account.owner, Account.kind, Account.currency).in_(sorted(keys)),
            )
        )
        return {(a.owner, a.kind, a.currency): a for a in rows}

    found = load()
    missing = sorted(keys - found.keys())
    if missing:
        # Sorted, so two posters creating the same new accounts lock them in the same order.
        session.execute(
            insert(Account)
            .values(
                [
                    {
                        "id": new_id("acct"),
                        "owner": owner,
                        "kind": kind,
                        "currency": currency,
                        "livemode": livemode,
                        "normal_side": NORMAL_SIDES[kind],
                        "balance_shards": hot_account_shards if owner == PLATFORM_OWNER else 1,
                    }
                    for owner, kind, currency in missing
                ]
            )
            .on_conflict_do_nothing(index_elements=["owner", "kind", "currency", "livemode"])
        )
        found = load()
    return found


@functools.cache
def _post_statement(legs: int) -> str:
    """One statement that inserts a transaction and its `legs` entries, or nothing on a repeat.

    One statement is one round trip, and outside an explicit transaction it commits at once, so
    the hot balance rows its entry trigger updates stay locked only while it runs. Entries go in
    the order given (account id order: every poster takes the balance row locks in the same
    order, so two postings touching the same accounts never deadlock). The placeholders are
    the driver's own (psycopg), so the service's event loop can send it without SQLAlchemy.
    """
    values = ", ".join(
        f"({n}, %(id_{n})s, %(account_{n})s, %(direction_{n})s, CAST(%(amount_{n})s AS bigint),"
        f" %(currency_{n})s)"
        for n in range(legs)
    )
    # Only numbered placeholders are formatted in; the values are bound.
    return f"""
        WITH t AS (
            INSERT INTO ledger.transactions
                (id, external_reference, postings_hash, description, metadata, livemode, source_id)
            VALUES (%(transaction_id)s, %(external_reference)s, %(postings_hash)s,
                    %(description)s, CAST(%(metadata)s AS jsonb), %(livemode)s, %(source_id)s)
            ON CONFLICT (external_reference) DO NOTHING
            RETURNING id, create_time
        )
        INSERT INTO ledger.entries
            (id, transaction_id, account_id, direction, amount, currency, source_id, create_time)
        SELECT legs.id, t.id, legs.account_id, legs.direction, legs.amount, legs.currency,
               %(source_id)s, t.create_time
        FROM t, (VALUES {values}) AS legs (n, id, account_id, direction, amount, currency)
        ORDER BY legs.n
        RETURNING create_time
        """  # noqa: S608


@dataclass(frozen=True)
class Draft:
    """A validated transaction with its accounts: the statement that posts it, and its result."""

    statement: str
    parameters: dict[str, object]
    transaction: LedgerTransaction
    entries: list[Entry]
    account_ids: dict[tuple[str, str, str], str]

    def posted(self, create_time: datetime) -> PostedTransaction:
        """The transaction as stored, once the statement returned its `create_time`."""
        self.transaction.create_time = create_time
        for entry in self.entries:
            entry.create_time = create_time
        return PostedTransaction(
            self.transaction, self.entries, created=True, account_ids=self.account_ids
        )


@dataclass(frozen=True)
class Checked:
    """A transaction that passed validation, before its accounts are known."""

    external_reference: str
    postings: list[Posting]
    livemode: bool
    description: str
    metadata: dict[str, str]
    fingerprint: str

    @property
    def account_keys(self) -> set[tuple[str, str, str]]:
        """(owner, kind, currency) of every account it posts to."""
        return {(p.owner, p.kind, p.currency) for p in self.postings}

    def draft(self, account_ids: Mapping[tuple[str, str, str], str]) -> Draft:
        """The insert, given the id of every account (see `account_keys`)."""
        source_id = source_id_of(self.metadata)
        transaction_id = new_id("ltx")
        entries = sorted(
            (
                Entry(
                    id=new_id("le"),
                    transaction_id=transaction_id,
                    account_id=account_ids[(p.owner, p.kind, p.currency)],
                    direction=p.direction,
                    amount=p.amount,
                    currency=p.currency,
                    source_id=source_id,
                )
                for p in self.postings
            ),
            key=lambda entry: (entry.account_id, entry.direction),
        )
        parameters: dict[str, object] = {
            "transaction_id": transaction_id,
            "external_reference": self.external_reference,
            "postings_hash": self.fingerprint,
            "description": self.description,
            "metadata": json.dumps(self.metadata),
            "livemode": self.livemode,
            "source_id": source_id,
        }
        for n, entry in enumerate(entries):
            parameters |= {
                f"id_{n}": entry.id,
                f"account_{n}": entry.account_id,
                f"direction_{n}": entry.direction,
                f"amount_{n}": entry.amount,
                f"currency_{n}": entry.currency,
            }
        transaction = LedgerTransaction(
            id=transaction_id,
            external_reference=self.external_reference,
            postings_hash=self.fingerprint,
            description=self.description,
            metadata_=self.metadata,
            livemode=self.livemode,
            source_id=source_id,
        )
        return Draft(
            _post_statement(len(entries)), parameters, transaction, entries, dict(account_ids)
        )


def check(
    *,
    external_reference: str,
    postings: list[Posting],
    livemode: bool,
    description: str = "",
    metadata: dict[str, str] | None = None,
) -> Checked:
    """The transaction validated (InvalidPosting lists every fault), before any database work."""
    metadata = dict(metadata or {})
    normalized = _validate(
        external_reference=external_reference,
        postings=postings,
        description=description,
        metadata=metadata,
    )
    return Checked(
        external_reference,
        normalized,
        livemode,
        description,
        metadata,
        postings_hash(normalized, livemode=livemode),
    )


def post_transaction(
    session: Session,
    *,
    external_reference: str,
    postings: list[Posting],
    livemode: bool,
    description: str = "",
    metadata: dict[str, str] | None = None,
    hot_account_shards: int = 1,
    account_ids: Mapping[tuple[str, str, str], str] | None = None,
) -> PostedTransaction:
    """Posts a balanced transaction once; the same reference returns the first posting.

    `account_ids` are committed accounts of this mode by (owner, kind, currency) (accounts are
    permanent, so a caller may keep them); accounts missing from it are looked up or created.
    """
    checked = check(
        external_reference=external_reference,
        postings=postings,
        livemode=livemode,
        description=description,
        metadata=metadata,
    )
    return post_checked(
        session, checked, hot_account_shards=hot_account_shards, account_ids=account_ids
    )


def post_checked(
    session: Session,
    checked: Checked,
    *,
    hot_account_shards: int = 1,
    account_ids: Mapping[tuple[str, str, str], str] | None = None,
) -> PostedTransaction:
    """`post_transaction` of a transaction that `check` has validated already."""
    assert 1 <= hot_account_shards <= BALANCE_SHARDS_MAX, hot_account_shards
    keys = checked.account_keys
    ids = dict(account_ids or {})
    if not keys <= ids.keys():
        found = ensure_accounts(
            session,
            keys=keys - ids.keys(),
            livemode=checked.livemode,
            hot_account_shards=hot_account_shards,
        )
        ids.update((key, account.id) for key, account in found.items())
    draft = checked.draft({key: ids[key] for key in keys})
    inserted = session.connection().exec_driver_sql(draft.statement, draft.parameters).first()
    if inserted is None:
        # Posted before under this reference (or by a concurrent poster that committed first):
        # the first posting, or ReferenceReused when it moved other amounts.
        earlier = _existing(
            session,
            external_reference=checked.external_reference,
            fingerprint=checked.fingerprint,
        )
        assert earlier is not None, checked.external_reference
        return earlier
    return draft.posted(inserted[0])
