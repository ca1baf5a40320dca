"""The ledger service's gRPC servicers: proto <-> domain, nothing more."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import grpc
import psycopg
from google.protobuf import timestamp_pb2
from google.protobuf.message import Message
from paymesh.ledger.v1 import (
    ledger_internal_pb2,
    ledger_internal_pb2_grpc,
    ledger_pb2,
    ledger_pb2_grpc,
)
from paymesh.payment.v1 import payment_internal_pb2_grpc
from prometheus_client import Counter, Gauge
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from services.common import pages
from services.common.auth import AuthPolicy, Principal, current_principal
from services.common.clients import sync_channel
from services.common.db import LoopPool, make_engine, make_sessionmaker, transaction
from services.common.errors import DomainError, InvalidArgument
from services.common.server import ServiceSpec
from services.common.service_main import run_service
from services.common.settings import Settings
from services.ledger import accounts, posting, reconciliation
from services.ledger.models import Entry

logger = logging.getLogger(__name__)

# Reconciliation runs (an operator's, `paymesh reconcile`) and what they found.
RECONCILIATIONS = Counter("paymesh_reconciliations_total", "Reconciliation runs of the ledger")
MISMATCHES = Counter(
    "paymesh_reconciliation_mismatches_total", "Mismatches the reconciliation runs found"
)
LAST_MISMATCHES = Gauge(
    "paymesh_reconciliation_last_mismatches", "Mismatches the latest reconciliation run found"
)
Context = grpc.aio.ServicerContext[Any, Any]
T = TypeVar("T")

# Deadlocks and serialization failures are retried this many times in all; the unit of work is
# safe to repeat (posting is idempotent by reference).
ATTEMPTS_MAX = 3
RETRYABLE_SQLSTATES = frozenset({"40P01", "40001"})
# PostTransactions carries at most this many transactions.
POSTINGS_PER_CALL_MAX = 500
# Account ids kept in memory, at most (about 200 bytes each); the map starts over past it.
ACCOUNT_IDS_MAX = 100_000


def run_unit_of_work(
    sessions: sessionmaker[Session], work: Callable[[Session], T], *, autocommit: bool = False
) -> T:
    """Runs `work` in one transaction, again on a deadlock or serialization failure.

    With `autocommit`, each statement of `work` commits on its own (no BEGIN or COMMIT round
    trips): for work whose writes are one statement.
    """
    for attempt in range(1, ATTEMPTS_MAX + 1):
        try:
            with transaction(sessions) as session:
                if autocommit:
                    session.connection(execution_options={"isolation_level": "AUTOCOMMIT"})
                return work(session)
        except OperationalError as error:
            sqlstate = getattr(error.orig, "sqlstate", None)
            if sqlstate not in RETRYABLE_SQLSTATES or attempt == ATTEMPTS_MAX:
                raise
            logger.warning("retrying a ledger unit of work", extra={"sqlstate": sqlstate})
    raise AssertionError("unreachable")


def entry_to_proto(entry: Entry) -> ledger_pb2.Entry:
    """An entry as the API shows it."""
    message = ledger_pb2.Entry(
        id=entry.id,
        transaction_id=entry.transaction_id,
        account_id=entry.account_id,
        direction=entry.direction,
        amount=entry.amount,
        currency=entry.currency,
        source_id=entry.source_id,
    )
    message.create_time.FromDatetime(entry.create_time)
    return message


def account_to_proto(item: accounts.AccountWithBalance) -> ledger_internal_pb2.Account:
    """An account and its balance as the API shows them."""
    return ledger_internal_pb2.Account(
        id=item.account.id,
        owner=item.account.owner,
        kind=item.account.kind,
        currency=item.account.currency,
        normal_side=item.account.normal_side,
        balance=item.balance,
        livemode=item.account.livemode,
    )


def _time_or_none(request: Message, field: str) -> datetime | None:
    """A Timestamp field as an aware datetime, or None when unset."""
    if not request.HasField(field):
        return None
    value: timestamp_pb2.Timestamp = getattr(request, field)
    return value.ToDatetime(tzinfo=UTC)


def report_to_proto(report: reconciliation.Report) -> ledger_internal_pb2.ReconciliationReport:
    """A reconciliation report as the API shows it."""
    message = ledger_internal_pb2.ReconciliationReport(
        totals=[
            ledger_internal_pb2.ReconciliationTotals(**dataclasses.asdict(line))
            for line in report.totals
        ],
        mismatches=[
            ledger_internal_pb2.Mismatch(**dataclasses.asdict(mismatch))
            for mismatch in report.mismatches
        ],
        checked_count=report.checked_count,
    )
    message.start_time.FromDatetime(report.start)
    message.end_time.FromDatetime(report.end)
    message.create_time.FromDatetime(report.create_time)
    return message


def posted_to_proto(posted: posting.PostedTransaction) -> ledger_internal_pb2.Transaction:
    """A posted transaction as the API shows it."""
    return ledger_internal_pb2.Transaction(
        id=posted.transaction.id,
        external_reference=posted.transaction.external_reference,
        description=posted.transaction.description,
        entries=[entry_to_proto(entry) for entry in posted.entries],
        metadata=posted.transaction.metadata_,
    )


def _checked(request: ledger_internal_pb2.PostTransactionRequest) -> posting.Checked:
    """A PostTransaction request, validated (InvalidArgument otherwise)."""
    return posting.check(
        external_reference=request.external_reference,
        postings=[
            posting.Posting(p.owner, p.kind, p.direction, p.amount, p.currency)
            for p in request.postings
        ],
        livemode=request.livemode,
        description=request.description,
        metadata=dict(request.metadata),
    )


# The balance rows (account, shard) that entries of these (account, transaction) pairs move, as
# `apply_entry` picks the shard, locked in the order a single posting's entries take them.
_LOCK_BALANCES = """
    SELECT b.account_id
    FROM ledger.account_balances AS b
    JOIN ledger.accounts AS a ON a.id = b.account_id
    JOIN unnest(%(account_ids)s::text[], %(transaction_ids)s::text[])
        AS k (account_id, transaction_id)
        ON k.account_id = b.account_id
       AND b.shard = mod(hashtext(k.transaction_id)::bigint + 2147483648, a.balance_shards)
    ORDER BY b.account_id, b.shard
    FOR UPDATE OF b
"""


class LedgerInternalServicer(ledger_internal_pb2_grpc.LedgerInternalServiceServicer):
    """Posting and operators' views; called by other paymesh services only."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        db: LoopPool,
        settings: Settings,
        payment_records: reconciliation.PaymentRecords,
    ) -> None:
        self._sessions = sessions
        self._settings = settings
        self._payment_records = payment_records
        self._tokens = pages.PageTokens(settings.require_secret("page_token_key"))
        # (livemode, owner, kind, currency) -> id of a committed account.
        self._account_ids: dict[tuple[bool, str, str, str], str] = {}
        self._db = db

    def _known(self, checked: posting.Checked) -> dict[tuple[str, str, str], str]:
        """The ids of the transaction's accounts already known, by (owner, kind, currency).

        Looked up by the checked (normalized) keys, the ones the accounts were stored under.
        Accounts are permanent and their ids never change, so committed ones are kept.
        """
        return {
            key: account_id
            for key in checked.account_keys
            if (account_id := self._account_ids.get((checked.livemode, *key)))
        }

    def _post(
        self, checked: posting.Checked, known: dict[tuple[str, str, str], str]
    ) -> ledger_internal_pb2.Transaction:
        """Posts through SQLAlchemy on a worker thread: new accounts, repeats, races."""

        def work(session: Session) -> posting.PostedTransaction:
            return posting.post_checked(
                session,
                checked,
                hot_account_shards=self._settings.ledger_hot_account_shards,
                account_ids=known,
            )

        # Each statement commits on its own: new accounts first (one without entries changes
        # nothing), then the transaction with its entries in one statement.
        posted = run_unit_of_work(self._sessions, work, autocommit=True)
        if len(self._account_ids) > ACCOUNT_IDS_MAX:
            self._account_ids.clear()
        for key, account_id in posted.account_ids.items():
            self._account_ids[(checked.livemode, *key)] = account_id
        return posted_to_proto(posted)

    async def _post_known(self, draft: posting.Draft) -> ledger_internal_pb2.Transaction | None:
        """Posts a draft to known accounts on the event loop; None when it was posted before.

        The common case (a new capture or refund to existing accounts) is one statement, so it
        needs no transaction, no ORM and no worker thread: psycopg's async connection sends it.
        """
        for attempt in range(1, ATTEMPTS_MAX + 1):
            try:
                async with self._db.connection() as connection:
                    cursor = await connection.execute(draft.statement, draft.parameters)
                    inserted = await cursor.fetchone()
                break
            except psycopg.OperationalError as error:
                # Deadlocks and serialization failures are retried, as `run_unit_of_work` does;
                # the rest (and the last failure) the kit maps, as it maps SQLAlchemy's errors.
                sqlstate = error.sqlstate
                if sqlstate not in RETRYABLE_SQLSTATES or attempt == ATTEMPTS_MAX:
                    raise
                logger.warning("retrying a ledger posting", extra={"sqlstate": sqlstate})
        return None if inserted is None else posted_to_proto(draft.posted(inserted[0]))

    def _read(self, work: Callable[[Session], T]) -> T:
        with transaction(self._sessions) as session:
            return work(session)

    async def PostTransaction(
        self, request: ledger_internal_pb2.PostTransactionRequest, context: Context
    ) -> ledger_internal_pb2.Transaction:
        """Posts a balanced transaction, once per external reference."""
        checked = _checked(request)
        known = self._known(checked)
        if checked.account_keys <= known.keys():
            posted = await self._post_known(checked.draft(known))
            if posted is not None:
                return posted
        # A new account, or a reference posted before: the full path (it returns the first).
        return await asyncio.to_thread(self._post, checked, known)

    async def PostTransactions(
        self, request: ledger_internal_pb2.PostTransactionsRequest, context: Context
    ) -> ledger_internal_pb2.PostTransactionsResponse:
        """Posts a batch: the new ones to known accounts in one transaction, the rest each alone.

        The common case (a payment worker's captures to existing accounts) is one transaction
        of pipelined statements on the event loop: one round trip and one commit for the batch.
        A transaction refused on its own merits answers its error and the others still go; a
        batch transaction that fails as a whole goes again one posting at a time.
        """
        count = len(request.transactions)
        if not 1 <= count <= POSTINGS_PER_CALL_MAX:
            raise InvalidArgument.field(
                "transactions", f"must hold 1 to {POSTINGS_PER_CALL_MAX} transactions"
            )
        results: list[ledger_internal_pb2.Transaction | DomainError | None] = [None] * count
        valid: list[int] = []
        together: dict[int, posting.Draft] = {}
        references: set[str] = set()
        for index, item in enumerate(request.transactions):
            try:
                checked = _checked(item)
            except DomainError as error:
                results[index] = error
                continue
            known = self._known(checked)
            valid.append(index)
            # A reference repeated in the batch goes alone, after the first (it returns it).
            if checked.account_keys <= known.keys() and item.external_reference not in references:
                together[index] = checked.draft(known)
            references.add(item.external_reference)
        if together:
            try:
                posted = await self._post_known_together(list(together.values()))
            except psycopg.Error as error:
                logger.warning(
                    "a batch of %d postings failed (%r); one at a time", len(together), error
                )
            else:
                for index, transaction_ in zip(together, posted, strict=True):
                    results[index] = transaction_
        # The rest (new accounts, references posted before, a failed batch): each alone.
        for index in valid:
            if results[index] is not None:
                continue
            try:
                results[index] = await self.PostTransaction(request.transactions[index], context)
            except DomainError as error:
                results[index] = error
        return ledger_internal_pb2.PostTransactionsResponse(
            results=[
                ledger_internal_pb2.PostTransactionResult(error=result.to_status())
                if isinstance(result, DomainError)
                else ledger_internal_pb2.PostTransactionResult(transaction=result)
                for result in results
            ]
        )

    async def _post_known_together(
        self, drafts: list[posting.Draft]
    ) -> list[ledger_internal_pb2.Transaction | None]:
        """Posts drafts to known accounts in one transaction, pipelined; None where posted before.

        The transaction first locks every balance row its entries will move, in (account,
        shard) order, the order in which a single posting's statement takes them: a batch's
        statements would otherwise take them in the batch's order and deadlock with another
        batch. Deadlocks (a balance row created meanwhile) and serialization failures are
        retried; any other failure rolls the whole batch back and propagates.
        """
        entries = [
            (entry.account_id, draft.transaction.id) for draft in drafts for entry in draft.entries
        ]
        locks = {
            "account_ids": [account_id for account_id, _ in entries],
            "transaction_ids": [transaction_id for _, transaction_id in entries],
        }
        for attempt in range(1, ATTEMPTS_MAX + 1):
            try:
                async with self._db.transaction() as connection:
                    async with connection.pipeline():
                        await connection.execute(_LOCK_BALANCES, locks)
                        cursors = [
                            await connection.execute(draft.statement, draft.parameters)
                            for draft in drafts
                        ]
                    rows = [await cursor.fetchone() for cursor in cursors]
                break
            except psycopg.OperationalError as error:
                if error.sqlstate not in RETRYABLE_SQLSTATES or attempt == ATTEMPTS_MAX:
                    raise
                logger.warning(
                    "retrying a batch of ledger postings", extra={"sqlstate": error.sqlstate}
                )
        return [
            None if row is None else posted_to_proto(draft.posted(row[0]))
            for draft, row in zip(drafts, rows, strict=True)
        ]

    async def GetTrialBalance(
        self, request: ledger_internal_pb2.GetTrialBalanceRequest, context: Context
    ) -> ledger_internal_pb2.GetTrialBalanceResponse:
        """Debits and credits per currency over every account."""
        as_of = _time_or_none(request, "as_of")

        def work(session: Session) -> ledger_internal_pb2.GetTrialBalanceResponse:
            totals = accounts.trial_balance(session, as_of=as_of)
            return ledger_internal_pb2.GetTrialBalanceResponse(
                currencies=[
                    ledger_internal_pb2.CurrencyTotals(
                        currency=t.currency, debits=t.debits, credits=t.credits
                    )
                    for t in totals
                ],
                balanced=all(t.debits == t.credits for t in totals),
            )

        return await asyncio.to_thread(self._read, work)

    async def Reconcile(
        self, request: ledger_internal_pb2.ReconcileRequest, context: Context
    ) -> ledger_internal_pb2.ReconciliationReport:
        """Checks the ledger against the payment service's and the processor's records."""
        start = _time_or_none(request, "start_time")
        end = _time_or_none(request, "end_time")
        if start is None:
            raise InvalidArgument.field("start_time", "is required")
        if end is None:
            raise InvalidArgument.field("end_time", "is required")

        def work(session: Session) -> ledger_internal_pb2.ReconciliationReport:
            return report_to_proto(
                reconciliation.reconcile(
                    session,
                    self._payment_records,
                    start=start,
                    end=end,
                    grace=timedelta(seconds=self._settings.ledger_reconcile_grace_s),
                    timeout_s=self._settings.grpc_timeout_s,
                )
            )

        report = await asyncio.to_thread(self._read, work)
        RECONCILIATIONS.inc()
        MISMATCHES.inc(len(report.mismatches))
        LAST_MISMATCHES.set(len(report.mismatches))
        return report

    async def ListAccounts(
        self, request: ledger_internal_pb2.ListAccountsRequest, context: Context
    ) -> ledger_internal_pb2.ListAccountsResponse:
        """One page of accounts with their balances."""

        def work(session: Session) -> ledger_internal_pb2.ListAccountsResponse:
            page = accounts.list_accounts(
                session,
                tokens=self._tokens,
                owner=request.owner,
                page_size=request.page_size,
                page_token=request.page_token,
            )
            return ledger_internal_pb2.ListAccountsResponse(
                accounts=[account_to_proto(item) for item in page.items],
                **pages.next_page(page.next_page_token),
            )

        return await asyncio.to_thread(self._read, work)

    async def GetAccount(
        self, request: ledger_internal_pb2.GetAccountRequest, context: Context
    ) -> ledger_internal_pb2.Account:
        """One account with its balance, now or as of a time."""
        as_of = _time_or_none(request, "as_of")

        def work(session: Session) -> ledger_internal_pb2.Account:
            return account_to_proto(
                accounts.get_account(session, account_id=request.id, as_of=as_of)
            )

        return await asyncio.to_thread(self._read, work)

    async def ListEntries(
        self, request: ledger_internal_pb2.ListEntriesRequest, context: Context
    ) -> ledger_internal_pb2.ListEntriesResponse:
        """Entries of an account or of a payment or refund, newest first."""

        def work(session: Session) -> ledger_internal_pb2.ListEntriesResponse:
            page = accounts.list_entries(
                session,
                tokens=self._tokens,
                account_id=request.account_id,
                source_id=request.source_id,
                page_size=request.page_size,
                page_token=request.page_token,
            )
            return ledger_internal_pb2.ListEntriesResponse(
                entries=[entry_to_proto(entry) for entry in page.items],
                **pages.next_page(page.next_page_token),
            )

        return await asyncio.to_thread(self._read, work)


class LedgerServicer(ledger_pb2_grpc.LedgerServiceServicer):
    """The merchant's own balance and entries."""

    def __init__(self, sessions: sessionmaker[Session], settings: Settings) -> None:
        self._sessions = sessions
        self._tokens = pages.PageTokens(settings.require_secret("page_token_key"))

    def _balance(self, principal: Principal) -> ledger_pb2.Balance:
        with transaction(self._sessions) as session:
            balances = accounts.merchant_balances(
                session, merchant_id=principal.merchant_id, livemode=principal.livemode
            )
        return ledger_pb2.Balance(
            available=[
                ledger_pb2.BalanceAmount(currency=currency, available=available, pending=pending)
                for currency, (available, pending) in balances.items()
            ],
            livemode=principal.livemode,
        )

    def _entries(
        self, principal: Principal, request: ledger_pb2.ListBalanceEntriesRequest
    ) -> ledger_pb2.ListBalanceEntriesResponse:
        with transaction(self._sessions) as session:
            page = accounts.list_merchant_entries(
                session,
                tokens=self._tokens,
                merchant_id=principal.merchant_id,
                livemode=principal.livemode,
                page_size=request.page_size,
                page_token=request.page_token,
                created=pages.CreatedRange.of(request),
            )
            return ledger_pb2.ListBalanceEntriesResponse(
                entries=[entry_to_proto(entry) for entry in page.items],
                **pages.next_page(page.next_page_token),
            )

    async def GetBalance(
        self, request: ledger_pb2.GetBalanceRequest, context: Context
    ) -> ledger_pb2.Balance:
        """The caller's balance per currency, in the key's mode."""
        return await asyncio.to_thread(self._balance, current_principal())

    async def ListBalanceEntries(
        self, request: ledger_pb2.ListBalanceEntriesRequest, context: Context
    ) -> ledger_pb2.ListBalanceEntriesResponse:
        """The caller's balance entries, newest first."""
        return await asyncio.to_thread(self._entries, current_principal(), request)


def build_spec(settings: Settings) -> ServiceSpec:
    """The ledger service's servicers and their auth policies."""
    sessions = make_sessionmaker(
        make_engine(
            settings.require_database_url(),
            pool_size=settings.db_pool_size,
            application_name="paymesh-ledger",
        )
    )
    db = LoopPool(
        settings.require_database_url(),
        max_size=settings.db_pool_size,
        application_name="paymesh-ledger-posting",
    )

    def register(server: grpc.aio.Server) -> None:
        ledger_pb2_grpc.add_LedgerServiceServicer_to_server(
            LedgerServicer(sessions, settings), server
        )
        ledger_internal_pb2_grpc.add_LedgerInternalServiceServicer_to_server(
            LedgerInternalServicer(
                sessions,
                db,
                settings,
                payment_internal_pb2_grpc.PaymentInternalServiceStub(
                    sync_channel(settings.target("payment"))
                ),
            ),
            server,
        )

    return ServiceSpec(
        name="ledger",
        register=register,
        service_names=[
            "paymesh.ledger.v1.LedgerService",
            "paymesh.ledger.v1.LedgerInternalService",
        ],
        policies={"paymesh.ledger.v1.LedgerService": AuthPolicy.SECRET_KEY},
        on_stop=[db.close],
    )


def main() -> None:
    """Runs the ledger service until SIGTERM."""
    run_service("ledger", build_spec, needs_api_keys=True)


if __name__ == "__main__":
    main()
