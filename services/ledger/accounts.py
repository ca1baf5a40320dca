"""Reading the ledger: balances, accounts, entries and the trial balance."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Generic, TypeVar

from sqlalchemy import ColumnElement, Select, case, func, select
from sqlalchemy.orm import Session

from services.common import pages
from services.common.errors import InvalidArgument
from services.common.ids import has_prefix
from services.ledger.errors import AccountNotFound
from services.ledger.models import Account, AccountBalance, Entry

SOURCE_ID_LENGTH_MAX = 64
OWNER_LENGTH_MAX = 64
T = TypeVar("T")


@dataclass(frozen=True)
class AccountWithBalance:
    """An account and its balance on its normal side (negative when it went the other way)."""

    account: Account
    balance: int


@dataclass(frozen=True)
class CurrencyTotals:
    """One currency's sums of debit and credit entries."""

    currency: str
    debits: int
    credits: int


@dataclass(frozen=True)
class Page(Generic[T]):
    """One page of a list and the token of the next one ("" on the last page)."""

    items: list[T]
    next_page_token: str


def _entries_page(
    query: Select[Entry],
    session: Session,
    *,
    tokens: pages.PageTokens,
    list_name: str,
    scope: pages.Scope,
    page_size: int,
    page_token: str,
) -> Page[Entry]:
    """Newest-first entries of `query`, one page after the token's position (an entry's seq)."""
    size = pages.page_size(page_size)
    after = tokens.open(page_token, list_name=list_name, scope=scope)
    if after is not None:
        query = query.where(Entry.seq < after[0])
    rows = list(session.scalars(query.order_by(Entry.seq.desc()).limit(size + 1)))
    more = len(rows) > size
    rows = rows[:size]
    next_token = tokens.seal([rows[-1].seq], list_name=list_name, scope=scope) if more else ""
    return Page(rows, next_token)


def stored_balances(session: Session, account_ids: list[str]) -> dict[str, int]:
    """Each account's stored balance (the sum of its shards); 0 for accounts never posted to."""
    if not account_ids:
        return {}
    rows = session.execute(
        select(AccountBalance.account_id, func.sum(AccountBalance.balance))
        .where(AccountBalance.account_id.in_(account_ids))
        .group_by(AccountBalance.account_id)
    ).all()
    found = {account_id: int(total) for account_id, total in rows}
    return {account_id: found.get(account_id, 0) for account_id in account_ids}


def _signed_amount() -> ColumnElement[int]:
    """An entry's amount as it moves its account's balance on the account's normal side."""
    return case((Entry.direction == Account.normal_side, Entry.amount), else_=-Entry.amount)


def entries_balance(session: Session, account_id: str, *, as_of: datetime | None = None) -> int:
    """An account's balance on its normal side summed from its entries (before `as_of`)."""
    query: Select[int] = (
        select(func.coalesce(func.sum(_signed_amount()), 0))
        .select_from(Entry)
        .join(Account, Account.id == Entry.account_id)
        .where(Entry.account_id == account_id)
    )
    if as_of is not None:
        query = query.where(Entry.create_time < as_of)
    return int(session.execute(query).scalar_one())


def entries_balances(session: Session, account_ids: list[str]) -> dict[str, int]:
    """Each account's balance on its normal side summed from its entries (0 without any)."""
    if not account_ids:
        return {}
    rows = session.execute(
        select(Entry.account_id, func.sum(_signed_amount()))
        .join(Account, Account.id == Entry.account_id)
        .where(Entry.account_id.in_(account_ids))
        .group_by(Entry.account_id)
    ).all()
    found = {account_id: int(total) for account_id, total in rows}
    return {account_id: found.get(account_id, 0) for account_id in account_ids}


def merchant_balances(
    session: Session, *, merchant_id: str, livemode: bool
) -> dict[str, tuple[int, int]]:
    """The merchant's (available, pending) per currency; available is negative when it owes."""
    accounts = list(
        session.scalars(
            select(Account).where(
                Account.owner == merchant_id,
                Account.kind.in_(("merchant_balance", "merchant_pending")),
                Account.livemode == livemode,
            )
        )
    )
    balances = stored_balances(session, [a.id for a in accounts])
    found: dict[str, tuple[int, int]] = {}
    for account in accounts:
        available, pending = found.get(account.currency, (0, 0))
        if account.kind == "merchant_balance":
            available = balances[account.id]
        else:
            pending = balances[account.id]
        found[account.currency] = (available, pending)
    return dict(sorted(found.items()))


def list_merchant_entries(
    session: Session,
    *,
    tokens: pages.PageTokens,
    merchant_id: str,
    livemode: bool,
    page_size: int,
    page_token: str,
    created: pages.CreatedRange = pages.ANY_TIME,
) -> Page[Entry]:
    """The merchant's available and pending balance entries, newest first."""
    accounts = select(Account.id).where(
        Account.owner == merchant_id,
        Account.kind.in_(("merchant_balance", "merchant_pending")),
        Account.livemode == livemode,
    )
    query = select(Entry).where(
        Entry.account_id.in_(accounts.scalar_subquery()), *created.where(Entry.create_time)
    )
    return _entries_page(
        query,
        session,
        tokens=tokens,
        list_name="balance_entries",
        scope={"merchant_id": merchant_id, "livemode": livemode, **created.scope()},
        page_size=page_size,
        page_token=page_token,
    )


def trial_balance(session: Session, *, as_of: datetime | None = None) -> list[CurrencyTotals]:
    """Sums of debit and credit entries per currency (before `as_of`), sorted by currency."""
    query = select(
        Entry.currency,
        func.coalesce(func.sum(Entry.amount).filter(Entry.direction == "debit"), 0),
        func.coalesce(func.sum(Entry.amount).filter(Entry.direction == "credit"), 0),
    ).group_by(Entry.currency)
    if as_of is not None:
        query = query.where(Entry.create_time < as_of)
    rows = session.execute(query.order_by(Entry.currency)).all()
    return [CurrencyTotals(currency, int(debit), int(credit)) for currency, debit, credit in rows]


def list_accounts(
    session: Session, *, tokens: pages.PageTokens, owner: str, page_size: int, page_token: str
) -> Page[AccountWithBalance]:
    """Accounts (of one owner, or all) in id order, with their stored balances."""
    size = pages.page_size(page_size)
    if len(owner) > OWNER_LENGTH_MAX:
        raise InvalidArgument.field("owner", f"must be at most {OWNER_LENGTH_MAX} characters")
    after = tokens.open(page_token, list_name="accounts", scope={"owner": owner})
    query = select(Account)
    if owner:
        query = query.where(Account.owner == owner)
    if after is not None:
        query = query.where(Account.id > after[0])
    accounts = list(session.scalars(query.order_by(Account.id).limit(size + 1)))
    more = len(accounts) > size
    accounts = accounts[:size]
    balances = stored_balances(session, [a.id for a in accounts])
    return Page(
        [AccountWithBalance(a, balances[a.id]) for a in accounts],
        tokens.seal([accounts[-1].id], list_name="accounts", scope={"owner": owner})
        if more
        else "",
    )


def get_account_or_raise(session: Session, *, account_id: str) -> Account:
    """The account, or AccountNotFound."""
    account = session.get(Account, account_id) if has_prefix(account_id, "acct") else None
    if account is None:
        raise AccountNotFound(f"no such ledger account: {account_id!r}")
    return account


def get_account(
    session: Session, *, account_id: str, as_of: datetime | None = None
) -> AccountWithBalance:
    """One account with its balance now (stored) or as of a time (summed from entries)."""
    account = get_account_or_raise(session, account_id=account_id)
    if as_of is None:
        balance = stored_balances(session, [account.id])[account.id]
    else:
        balance = entries_balance(session, account.id, as_of=as_of)
    return AccountWithBalance(account, balance)


def list_entries(
    session: Session,
    *,
    tokens: pages.PageTokens,
    account_id: str,
    source_id: str,
    page_size: int,
    page_token: str,
) -> Page[Entry]:
    """Entries of one account or of one source (payment or refund id), newest first."""
    if bool(account_id) == bool(source_id):
        raise InvalidArgument.field("account_id", "set exactly one of account_id and source_id")
    if account_id:
        get_account_or_raise(session, account_id=account_id)
        query = select(Entry).where(Entry.account_id == account_id)
        list_name, scope = "account_entries", {"account_id": account_id}
    else:
        if len(source_id) > SOURCE_ID_LENGTH_MAX:
            raise InvalidArgument.field(
                "source_id", f"must be at most {SOURCE_ID_LENGTH_MAX} characters"
            )
        query = select(Entry).where(Entry.source_id == source_id)
        list_name, scope = "source_entries", {"source_id": source_id}
    return _entries_page(
        query,
        session,
        tokens=tokens,
        list_name=list_name,
        scope=scope,
        page_size=page_size,
        page_token=page_token,
    )
