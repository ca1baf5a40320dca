"""The ledger's invariants hold in the database itself: raw SQL cannot break them."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest
from sqlalchemy.orm import Session

from services.common.db import transaction
from services.common.ids import new_id
from services.common.pages import PageTokens
from services.ledger import accounts, posting
from services.ledger.posting import Posting
from services.runtime.platform import LocalPlatform


def capture(merchant_id: str, amount: int, fee: int, currency: str = "USD") -> list[Posting]:
    """The legs of a payment capture."""
    return [
        Posting("platform", "processor_receivable", "debit", amount, currency),
        Posting(merchant_id, "merchant_balance", "credit", amount - fee, currency),
        Posting("platform", "platform_fees", "credit", fee, currency),
    ]


@pytest.fixture
def raw(platform: LocalPlatform) -> Iterator[psycopg.Connection[tuple[object, ...]]]:
    """A plain psycopg connection, as a script or a console session would have."""
    url = platform.settings.require_database_url().replace("+psycopg", "")
    with psycopg.connect(url) as connection:
        yield connection


@pytest.fixture
def posted(sessions) -> posting.PostedTransaction:  # type: ignore[no-untyped-def]
    """A capture posted through the domain layer for a fresh merchant."""
    with transaction(sessions) as session:
        return posting.post_transaction(
            session,
            external_reference=new_id("ref"),
            postings=capture(new_id("mer"), 1000, 30),
            livemode=False,
            metadata={"payment_id": new_id("pay")},
        )


def _account(posted: posting.PostedTransaction, kind_side: str) -> str:
    """The id of the posted entry's account on `kind_side` ("debit" or "credit")."""
    return next(e.account_id for e in posted.entries if e.direction == kind_side)


def _insert_transaction(cursor: psycopg.Cursor[tuple[object, ...]], transaction_id: str) -> None:
    cursor.execute(
        "INSERT INTO ledger.transactions (id, external_reference, postings_hash, livemode)"
        " VALUES (%s, %s, 'x', false)",
        (transaction_id, new_id("ref")),
    )


def _insert_entry(
    cursor: psycopg.Cursor[tuple[object, ...]],
    transaction_id: str,
    account_id: str,
    direction: str,
    amount: int,
    *,
    currency: str = "USD",
) -> None:
    cursor.execute(
        "INSERT INTO ledger.entries (id, transaction_id, account_id, direction, amount, currency)"
        " VALUES (%s, %s, %s, %s, %s, %s)",
        (new_id("le"), transaction_id, account_id, direction, amount, currency),
    )


def _count_transactions(raw: psycopg.Connection[tuple[object, ...]], transaction_id: str) -> int:
    row = raw.execute(
        "SELECT count(*) FROM ledger.transactions WHERE id = %s", (transaction_id,)
    ).fetchone()
    assert row is not None
    return int(str(row[0]))


def test_unbalanced_raw_insert_cannot_commit(raw, posted) -> None:
    debit_account = _account(posted, "debit")
    credit_account = _account(posted, "credit")
    transaction_id = new_id("ltx")
    with raw.cursor() as cursor:
        _insert_transaction(cursor, transaction_id)
        _insert_entry(cursor, transaction_id, debit_account, "debit", 100)
        _insert_entry(cursor, transaction_id, credit_account, "credit", 99)
    with pytest.raises(psycopg.errors.CheckViolation, match="unbalanced in USD"):
        raw.commit()
    raw.rollback()
    assert _count_transactions(raw, transaction_id) == 0


def test_balanced_raw_insert_commits_and_moves_the_stored_balance(raw, posted, sessions) -> None:
    debit_account = _account(posted, "debit")
    credit_account = _account(posted, "credit")
    with transaction(sessions) as session:
        before = accounts.stored_balances(session, [debit_account, credit_account])
    transaction_id = new_id("ltx")
    with raw.cursor() as cursor:
        _insert_transaction(cursor, transaction_id)
        _insert_entry(cursor, transaction_id, debit_account, "debit", 7)
        _insert_entry(cursor, transaction_id, credit_account, "credit", 7)
    raw.commit()
    with transaction(sessions) as session:
        after = accounts.stored_balances(session, [debit_account, credit_account])
        for account_id in (debit_account, credit_account):
            assert after[account_id] == accounts.entries_balance(session, account_id)
    assert after[debit_account] == before[debit_account] + 7
    assert after[credit_account] == before[credit_account] + 7


def test_transaction_without_entries_cannot_commit(raw) -> None:
    transaction_id = new_id("ltx")
    with raw.cursor() as cursor:
        _insert_transaction(cursor, transaction_id)
    with pytest.raises(psycopg.errors.CheckViolation, match="needs two or more"):
        raw.commit()
    raw.rollback()


def test_single_entry_cannot_commit_even_if_zero_sum_is_impossible(raw, posted) -> None:
    transaction_id = new_id("ltx")
    with raw.cursor() as cursor:
        _insert_transaction(cursor, transaction_id)
        _insert_entry(cursor, transaction_id, _account(posted, "debit"), "debit", 5)
    with pytest.raises(psycopg.errors.CheckViolation):
        raw.commit()
    raw.rollback()


def test_balanced_entries_cannot_be_added_to_an_old_transaction(raw, posted) -> None:
    with (
        raw.cursor() as cursor,
        pytest.raises(
            psycopg.errors.IntegrityConstraintViolation,
            match="only be added with their transaction",
        ),
    ):
        _insert_entry(cursor, posted.transaction.id, _account(posted, "debit"), "debit", 5)
    raw.rollback()


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE ledger.entries SET amount = amount + 1 WHERE transaction_id = %s",
        "DELETE FROM ledger.entries WHERE transaction_id = %s",
        "UPDATE ledger.transactions SET description = 'edited' WHERE id = %s",
        "DELETE FROM ledger.transactions WHERE id = %s",
    ],
)
def test_entries_and_transactions_are_append_only(raw, posted, statement: str) -> None:
    with pytest.raises(psycopg.errors.IntegrityConstraintViolation, match="append-only"):
        raw.execute(statement, (posted.transaction.id,))
    raw.rollback()


@pytest.mark.parametrize("table", ["entries", "transactions", "account_balances", "accounts"])
def test_ledger_tables_cannot_be_truncated(raw, table: str) -> None:
    with pytest.raises(psycopg.errors.IntegrityConstraintViolation):
        raw.execute(f"TRUNCATE ledger.{table} CASCADE")
    raw.rollback()


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE ledger.account_balances SET balance = balance + 1 WHERE account_id = %s",
        "DELETE FROM ledger.account_balances WHERE account_id = %s",
        "INSERT INTO ledger.account_balances (account_id, shard, balance) VALUES (%s, 99, 5)",
    ],
)
def test_stored_balances_change_only_through_entries(raw, posted, statement: str) -> None:
    with pytest.raises(psycopg.errors.IntegrityConstraintViolation, match="only through entries"):
        raw.execute(statement, (_account(posted, "debit"),))
    raw.rollback()


def test_accounts_cannot_change_identity_or_disappear(raw, posted) -> None:
    account_id = _account(posted, "debit")
    with pytest.raises(psycopg.errors.IntegrityConstraintViolation, match="permanent"):
        raw.execute("UPDATE ledger.accounts SET currency = 'EUR' WHERE id = %s", (account_id,))
    raw.rollback()
    with pytest.raises(psycopg.errors.IntegrityConstraintViolation, match="permanent"):
        raw.execute("DELETE FROM ledger.accounts WHERE id = %s", (account_id,))
    raw.rollback()


@pytest.mark.parametrize("amount", [0, -5])
def test_amounts_must_be_positive(raw, posted, amount: int) -> None:
    transaction_id = new_id("ltx")
    with raw.cursor() as cursor:
        _insert_transaction(cursor, transaction_id)
        with pytest.raises(psycopg.errors.CheckViolation, match="amount_positive"):
            _insert_entry(cursor, transaction_id, _account(posted, "debit"), "debit", amount)
    raw.rollback()


def test_entry_currency_must_be_its_accounts(raw, posted) -> None:
    transaction_id = new_id("ltx")
    with raw.cursor() as cursor:
        _insert_transaction(cursor, transaction_id)
        with pytest.raises(psycopg.errors.ForeignKeyViolation, match="account_currency"):
            account_id = _account(posted, "debit")
            _insert_entry(cursor, transaction_id, account_id, "debit", 5, currency="EUR")
    raw.rollback()


def test_unknown_direction_is_refused(raw, posted) -> None:
    transaction_id = new_id("ltx")
    with raw.cursor() as cursor:
        _insert_transaction(cursor, transaction_id)
        with pytest.raises(psycopg.errors.CheckViolation, match="direction_known"):
            _insert_entry(cursor, transaction_id, _account(posted, "debit"), "both", 5)
    raw.rollback()


def test_every_stored_balance_equals_the_sum_of_its_entries(sessions, posted) -> None:
    with transaction(sessions) as session:
        every = [a.account.id for a in _all_accounts(session)]
        stored = accounts.stored_balances(session, every)
        for account_id in every:
            assert stored[account_id] == accounts.entries_balance(session, account_id)


def _all_accounts(session: Session) -> list[accounts.AccountWithBalance]:
    found: list[accounts.AccountWithBalance] = []
    # Tokens are sealed and opened here, in this process: any key will do.
    tokens = PageTokens("ledger-invariants")
    token = ""
    while True:
        page = accounts.list_accounts(
            session, tokens=tokens, owner="", page_size=100, page_token=token
        )
        found.extend(page.items)
        token = page.next_page_token
        if not token:
            return found
