"""Concurrent posters and a stateful model: balances stay exact, nothing is lost or doubled."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import grpc
import pytest
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)
from paymesh.ledger.v1 import ledger_internal_pb2, ledger_internal_pb2_grpc
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from services.common.db import make_engine, make_sessionmaker, transaction
from services.common.ids import new_id
from services.ledger import accounts, posting
from services.ledger.errors import InvalidPosting, ReferenceReused
from services.ledger.models import Account
from services.ledger.posting import Posting
from services.ledger.server import run_unit_of_work
from services.runtime.platform import LocalPlatform

POSTERS = 16
POSTINGS_PER_POSTER = 8

AccountKey = tuple[str, str, str]  # owner, kind, currency


@pytest.fixture(scope="module")
def pool(platform: LocalPlatform) -> Iterator[sessionmaker[Session]]:
    """Sessions on an engine with a connection per concurrent poster."""
    engine = make_engine(platform.settings.require_database_url(), pool_size=POSTERS)
    yield make_sessionmaker(engine)
    engine.dispose()


def capture(merchant_id: str, amount: int, fee: int, currency: str) -> list[Posting]:
    """The legs of a payment capture (a zero fee leg is left out)."""
    legs = [
        Posting("platform", "processor_receivable", "debit", amount, currency),
        Posting(merchant_id, "merchant_balance", "credit", amount - fee, currency),
        Posting("platform", "platform_fees", "credit", fee, currency),
    ]
    return [leg for leg in legs if leg.amount]


def refund(merchant_id: str, amount: int, currency: str) -> list[Posting]:
    """The legs of a refund."""
    return [
        Posting(merchant_id, "merchant_balance", "debit", amount, currency),
        Posting("platform", "processor_receivable", "credit", amount, currency),
    ]


def post(
    sessions: sessionmaker[Session],
    reference: str,
    postings: list[Posting],
    *,
    shards: int = 16,
) -> posting.PostedTransaction:
    """Posts in its own unit of work, retried on deadlock like the service does."""
    return run_unit_of_work(
        sessions,
        lambda session: posting.post_transaction(
            session,
            external_reference=reference,
            postings=postings,
            livemode=False,
            hot_account_shards=shards,
        ),
    )


def balances(sessions: sessionmaker[Session], keys: list[AccountKey]) -> dict[AccountKey, int]:
    """Stored balances of accounts, checked against the sum of their entries; 0 if absent."""
    with transaction(sessions) as session:
        found = {
            (a.owner, a.kind, a.currency): a.id
            for a in session.scalars(
                select(Account).where(
                    Account.owner.in_({owner for owner, _, _ in keys}),
                    Account.currency.in_({currency for _, _, currency in keys}),
                    Account.livemode.is_(False),
                )
            )
        }
        ids = [found[key] for key in keys if key in found]
        stored = accounts.stored_balances(session, ids)
        assert stored == accounts.entries_balances(session, ids)
    return {key: stored[found[key]] if key in found else 0 for key in keys}


@pytest.mark.parametrize(("currency", "shards"), [("CHF", 1), ("SEK", 16)])
def test_concurrent_posters_on_the_hot_accounts_end_exact(
    pool: sessionmaker[Session], currency: str, shards: int
) -> None:
    merchants = [new_id("mer") for _ in range(4)]
    hot = [("platform", "platform_fees", currency), ("platform", "processor_receivable", currency)]
    keys = hot + [(m, "merchant_balance", currency) for m in merchants]
    before = balances(pool, keys)
    jobs = [
        (f"conc:{new_id('pay')}", merchants[(poster + i) % 4], 1000 + poster, 10 + i)
        for poster in range(POSTERS)
        for i in range(POSTINGS_PER_POSTER)
    ]

    def work(job: tuple[str, str, int, int]) -> str:
        reference, merchant_id, amount, fee = job
        return post(
            pool, reference, capture(merchant_id, amount, fee, currency), shards=shards
        ).transaction.id

    with ThreadPoolExecutor(POSTERS) as executor:
        ids = list(executor.map(work, jobs))
    assert len(set(ids)) == len(jobs)
    after = balances(pool, keys)
    assert after[hot[0]] - before[hot[0]] == sum(fee for *_, fee in jobs)
    assert after[hot[1]] - before[hot[1]] == sum(amount for _, _, amount, _ in jobs)
    for merchant_id in merchants:
        key = (merchant_id, "merchant_balance", currency)
        assert after[key] - before[key] == sum(
            amount - fee for _, m, amount, fee in jobs if m == merchant_id
        )


def test_the_same_reference_posted_concurrently_posts_once(pool: sessionmaker[Session]) -> None:
    merchant_id = new_id("mer")
    reference = f"dup:{new_id('pay')}"
    legs = capture(merchant_id, 5000, 50, "SEK")
    with ThreadPoolExecutor(POSTERS) as executor:
        results = list(executor.map(lambda _: post(pool, reference, legs), range(POSTERS)))
    assert len({r.transaction.id for r in results}) == 1
    assert sum(r.created for r in results) == 1
    assert balances(pool, [(merchant_id, "merchant_balance", "SEK")]) == {
        (merchant_id, "merchant_balance", "SEK"): 4950
    }


def test_concurrent_posts_through_the_service_end_exact(platform: LocalPlatform) -> None:
    """Many threads through the gRPC service, as payment workers post, on one hot account."""
    currency = "PLN"
    merchant_id = new_id("mer")
    jobs = [(new_id("pay"), 2000 + i, 60 + i % 7) for i in range(POSTERS * 4)]
    with grpc.insecure_channel(platform.settings.target("ledger")) as channel:
        stub = ledger_internal_pb2_grpc.LedgerInternalServiceStub(channel)
        fees_before = _platform_fees(stub, currency)

        def send(job: tuple[str, int, int]) -> str:
            payment_id, amount, fee = job
            request = ledger_internal_pb2.PostTransactionRequest(
                external_reference=f"payment:{payment_id}:capture",
                postings=[
                    ledger_internal_pb2.Posting(
                        owner=p.owner,
                        kind=p.kind,
                        direction=p.direction,
                        amount=p.amount,
                        currency=p.currency,
                    )
                    for p in capture(merchant_id, amount, fee, currency)
                ],
                metadata={"payment_id": payment_id},
            )
            reply: ledger_internal_pb2.Transaction = stub.PostTransaction(request, timeout=60)
            return reply.id

        with ThreadPoolExecutor(POSTERS) as executor:
            ids = list(executor.map(send, jobs + jobs[:POSTERS]))  # some sent twice
        assert len(set(ids)) == len(jobs)
        assert _platform_fees(stub, currency) - fees_before == sum(fee for *_, fee in jobs)


def _platform_fees(stub: ledger_internal_pb2_grpc.LedgerInternalServiceStub, currency: str) -> int:
    """The platform's fee balance in `currency` (0 before its first posting)."""
    token = ""
    while True:
        page = stub.ListAccounts(
            ledger_internal_pb2.ListAccountsRequest(
                owner="platform", page_size=100, page_token=token
            )
        )
        for account in page.accounts:
            if (account.kind, account.currency, account.livemode) == (
                "platform_fees",
                currency,
                False,
            ):
                return int(account.balance)
        token = page.next_page_token
        if not token:
            return 0


# --- the stateful model ----------------------------------------------------------------------

CURRENCIES = ("NOK", "DKK")


@dataclass(frozen=True)
class Posted:
    """A reference the model posted, and what it moved."""

    reference: str
    postings: tuple[Posting, ...]
    transaction_id: str


def deltas(postings: tuple[Posting, ...] | list[Posting]) -> dict[AccountKey, int]:
    """How postings move each account's balance on its normal side."""
    moved: dict[AccountKey, int] = {}
    for p in postings:
        normal = posting.NORMAL_SIDES[p.kind]
        key = (p.owner, p.kind, p.currency)
        moved[key] = moved.get(key, 0) + (p.amount if p.direction == normal else -p.amount)
    return moved


class LedgerMachine(RuleBasedStateMachine):
    """Random postings, repeats, conflicting repeats, bad postings and concurrent bursts."""

    sessions: sessionmaker[Session]
    posted = Bundle("posted")

    def __init__(self) -> None:
        super().__init__()
        self.merchants = [new_id("mer") for _ in range(3)]
        self.keys: list[AccountKey] = [
            ("platform", kind, currency)
            for kind in ("platform_fees", "processor_receivable")
            for currency in CURRENCIES
        ] + [(m, "merchant_balance", c) for m in self.merchants for c in CURRENCIES]
        self.model: dict[AccountKey, int] = {}
        self.transactions: dict[str, str] = {}

    @initialize()
    def baseline(self) -> None:
        """The platform accounts are shared with earlier examples: start from what they hold."""
        self.model = balances(self.sessions, self.keys)

    def _apply(self, reference: str, postings: list[Posting]) -> Posted:
        result = post(self.sessions, reference, postings)
        assert result.created
        for key, amount in deltas(postings).items():
            self.model[key] += amount
        self.transactions[reference] = result.transaction.id
        return Posted(reference, tuple(postings), result.transaction.id)

    @rule(
        target=posted,
        merchant=st.integers(0, 2),
        currency=st.sampled_from(CURRENCIES),
        amount=st.integers(1, 10**9),
        fee_ratio=st.floats(0, 1),
    )
    def post_capture(self, merchant: int, currency: str, amount: int, fee_ratio: float) -> Posted:
        """A payment capture."""
        fee = int(amount * fee_ratio)
        return self._apply(
            f"sm:{new_id('pay')}", capture(self.merchants[merchant], amount, fee, currency)
        )

    @rule(
        target=posted,
        merchant=st.integers(0, 2),
        currency=st.sampled_from(CURRENCIES),
        amount=st.integers(1, 10**9),
    )
    def post_refund(self, merchant: int, currency: str, amount: int) -> Posted:
        """A refund, which may take a merchant below zero."""
        return self._apply(f"sm:{new_id('re')}", refund(self.merchants[merchant], amount, currency))

    @rule(earlier=posted)
    def repeat(self, earlier: Posted) -> None:
        """Posting a reference again returns the first transaction and moves nothing."""
        result = post(self.sessions, earlier.reference, list(reversed(earlier.postings)))
        assert not result.created
        assert result.transaction.id == earlier.transaction_id

    @rule(earlier=posted, factor=st.integers(2, 5))
    def repeat_with_other_postings(self, earlier: Posted, factor: int) -> None:
        """The same reference with other (still balanced) amounts is refused."""
        changed = [
            Posting(p.owner, p.kind, p.direction, p.amount * factor, p.currency)
            for p in earlier.postings
        ]
        with pytest.raises(ReferenceReused):
            post(self.sessions, earlier.reference, changed)

    @rule(merchant=st.integers(0, 2), amount=st.integers(2, 10**6))
    def unbalanced(self, merchant: int, amount: int) -> None:
        """An unbalanced transaction is refused and stores nothing."""
        legs = [
            Posting("platform", "processor_receivable", "debit", amount, "NOK"),
            Posting(self.merchants[merchant], "merchant_balance", "credit", amount - 1, "NOK"),
        ]
        with pytest.raises(InvalidPosting):
            post(self.sessions, f"sm:{new_id('bad')}", legs)

    @rule(
        amounts=st.lists(st.integers(1, 10**6), min_size=2, max_size=8),
        duplicates=st.integers(1, 3),
    )
    def concurrent_burst(self, amounts: list[int], duplicates: int) -> None:
        """Several posters at once, each reference sent `duplicates` times."""
        jobs = [
            (f"sm:{new_id('pay')}", capture(self.merchants[i % 3], a, a // 10, CURRENCIES[i % 2]))
            for i, a in enumerate(amounts)
        ]
        sent = [job for job in jobs for _ in range(duplicates)]
        with ThreadPoolExecutor(8) as executor:
            results = list(executor.map(lambda job: post(self.sessions, *job), sent))
        for reference, legs in jobs:
            ids = {
                r.transaction.id
                for r, (ref, _) in zip(results, sent, strict=True)
                if ref == reference
            }
            assert len(ids) == 1
            for key, amount in deltas(legs).items():
                self.model[key] += amount

    @invariant()
    def database_matches_model(self) -> None:
        """Every balance equals its entries (checked in `balances`) and the model."""
        if not self.model:
            return
        assert balances(self.sessions, self.keys) == self.model

    @invariant()
    def trial_balance_is_zero(self) -> None:
        """Debits equal credits in every currency."""
        with transaction(self.sessions) as session:
            for line in accounts.trial_balance(session):
                assert line.debits == line.credits, line


def test_ledger_state_machine(pool: sessionmaker[Session]) -> None:
    LedgerMachine.sessions = pool
    run_state_machine_as_test(
        LedgerMachine,
        settings=settings(
            max_examples=15,
            stateful_step_count=20,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
            # Shrinking replays against the database for minutes; the failing steps are printed.
            phases=[Phase.explicit, Phase.reuse, Phase.generate],
        ),
    )
