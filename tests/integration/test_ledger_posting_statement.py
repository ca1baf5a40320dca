"""A posting to known accounts is one statement that commits on its own (issue 13, point 4).

The service keeps committed account ids, so a payment's capture is one round trip: the
transaction and its entries in one INSERT, outside any BEGIN/COMMIT, so the hot platform balance
rows stay locked only while that statement runs. Idempotency and the balances hold as before.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any, cast

import pytest
from paymesh.ledger.v1 import ledger_internal_pb2
from sqlalchemy import Engine, event, select
from sqlalchemy.orm import Session, sessionmaker

from services.common.db import LoopPool, make_engine, make_sessionmaker, transaction
from services.common.ids import new_id
from services.ledger import accounts, posting
from services.ledger.errors import ReferenceReused
from services.ledger.models import LedgerTransaction
from services.ledger.posting import Posting
from services.ledger.server import LedgerInternalServicer, run_unit_of_work
from services.runtime.platform import LocalPlatform


@pytest.fixture(scope="module")
def engine(platform: LocalPlatform) -> Iterator[Engine]:
    """One connection, so every statement of a posting is seen on it."""
    engine = make_engine(platform.settings.require_database_url(), pool_size=1)
    yield engine
    engine.dispose()


def capture(merchant_id: str, amount: int) -> list[Posting]:
    return [
        Posting("platform", "processor_receivable", "debit", amount, "NOK"),
        Posting(merchant_id, "merchant_balance", "credit", amount - 30, "NOK"),
        Posting("platform", "platform_fees", "credit", 30, "NOK"),
    ]


def post(
    sessions: sessionmaker[Session],
    reference: str,
    legs: list[Posting],
    account_ids: dict[tuple[str, str, str], str] | None = None,
) -> posting.PostedTransaction:
    """Posts as the service does: autocommit, with the account ids it already knows."""
    return run_unit_of_work(
        sessions,
        lambda session: posting.post_transaction(
            session,
            external_reference=reference,
            postings=legs,
            livemode=False,
            metadata={"payment_id": reference},
            hot_account_shards=16,
            account_ids=account_ids,
        ),
        autocommit=True,
    )


def test_a_posting_to_known_accounts_is_one_autocommitted_statement(engine: Engine) -> None:
    sessions = make_sessionmaker(engine)
    merchant_id = new_id("mer")
    first = post(sessions, new_id("pay"), capture(merchant_id, 1000))
    merchant_account = (merchant_id, "merchant_balance", "NOK")
    assert set(first.account_ids) == {
        ("platform", "processor_receivable", "NOK"),
        ("platform", "platform_fees", "NOK"),
        merchant_account,
    }

    statements: list[str] = []
    in_transaction: list[bool] = []

    def seen(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement)
        in_transaction.append(not conn.connection.driver_connection.autocommit)

    event.listen(engine, "before_cursor_execute", seen)
    try:
        reference = new_id("pay")
        second = post(sessions, reference, capture(merchant_id, 2000), first.account_ids)
    finally:
        event.remove(engine, "before_cursor_execute", seen)
    assert len(statements) == 1, statements
    assert statements[0].lstrip().startswith("WITH t AS")
    assert in_transaction == [False]
    assert second.created and len(second.entries) == 3

    # A repeat returns the first posting; other amounts under the reference are refused.
    again = post(sessions, reference, capture(merchant_id, 2000), first.account_ids)
    assert (again.created, again.transaction.id) == (False, second.transaction.id)
    with pytest.raises(ReferenceReused):
        post(sessions, reference, capture(merchant_id, 2001), first.account_ids)

    with transaction(sessions) as session:
        ids = list(first.account_ids.values())
        assert accounts.stored_balances(session, ids) == accounts.entries_balances(session, ids)
        merchant_account_id = first.account_ids[merchant_account]
        assert accounts.stored_balances(session, [merchant_account_id]) == {
            merchant_account_id: 970 + 1970
        }
        stored = session.scalars(
            select(LedgerTransaction).where(LedgerTransaction.external_reference == reference)
        ).one()
        assert stored.source_id == reference and stored.metadata_ == {"payment_id": reference}


def test_post_transaction__known_accounts_are_found_by_their_normalized_currency(
    engine: Engine, platform: LocalPlatform, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Not the payment service's spelling ("NOK"), but one the ledger accepts and normalizes.
    db = LoopPool(
        platform.settings.require_database_url(), max_size=1, application_name="paymesh-test"
    )
    servicer = LedgerInternalServicer(
        make_sessionmaker(engine), db, platform.settings, cast(Any, None)
    )
    threaded: list[object] = []
    full_path = servicer._post

    def counted(*args: Any) -> ledger_internal_pb2.Transaction:
        threaded.append(args)
        return full_path(*args)

    monkeypatch.setattr(servicer, "_post", counted)
    merchant_id = new_id("mer")

    def request(amount: int) -> ledger_internal_pb2.PostTransactionRequest:
        return ledger_internal_pb2.PostTransactionRequest(
            external_reference=new_id("pay"),
            postings=[
                ledger_internal_pb2.Posting(
                    owner=p.owner,
                    kind=p.kind,
                    direction=p.direction,
                    amount=p.amount,
                    currency="nok",
                )
                for p in capture(merchant_id, amount)
            ],
        )

    async def post_twice() -> tuple[ledger_internal_pb2.Transaction, ...]:
        try:
            first = await servicer.PostTransaction(request(1000), cast(Any, None))
            second = await servicer.PostTransaction(request(2000), cast(Any, None))
        finally:
            await db.close()
        return first, second

    first, second = asyncio.run(post_twice())

    # The first creates the merchant's account on a worker thread; the second finds every
    # account among the ids kept, so it is one statement on the event loop.
    assert len(threaded) == 1
    assert {e.currency for e in second.entries} == {"NOK"}
    assert {e.account_id for e in second.entries} == {e.account_id for e in first.entries}
