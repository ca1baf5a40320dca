"""Reconciliation finds what was written behind the ledger's back, and nothing on a clean run.

The ledger runs in-process on its own fresh database (on the test platform's PostgreSQL), so no
other test's postings fall into the ranges reconciled here; the payment service's side is a small
fake PaymentInternalService whose movements and processor records each test sets.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import grpc
import httpx
import psycopg
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from paymesh.ledger.v1 import ledger_internal_pb2, ledger_internal_pb2_grpc
from paymesh.payment.v1 import payment_internal_pb2, payment_internal_pb2_grpc
from sqlalchemy.orm import Session, sessionmaker

from services.common.clients import sync_channel
from services.common.db import LoopPool, make_engine, make_sessionmaker, transaction
from services.common.ids import new_id
from services.common.migrations import upgrade
from services.common.server import ServiceSpec, create_server
from services.ledger import posting
from services.ledger.posting import Posting
from services.ledger.server import LedgerInternalServicer
from services.runtime import cli
from services.runtime.platform import LocalPlatform, settings_from
from tests.integration.conftest import MerchantKeys, _fresh_database

T = TypeVar("T")
Context = grpc.aio.ServicerContext[Any, Any]


@dataclass
class FakePayments(payment_internal_pb2_grpc.PaymentInternalServiceServicer):
    """The two reconciliation RPCs of the payment service, over lists a test fills."""

    movements: list[payment_internal_pb2.SettledMovement] = field(default_factory=list)
    records: list[payment_internal_pb2.ProcessorRecord] = field(default_factory=list)

    @staticmethod
    def _page(items: list[Any], token: str, size: int) -> tuple[list[Any], str]:
        start = int(token or 0)
        end = start + (size or 500)
        return items[start:end], str(end) if end < len(items) else ""

    async def ListSettledMovements(
        self, request: payment_internal_pb2.ListSettledMovementsRequest, context: Context
    ) -> payment_internal_pb2.ListSettledMovementsResponse:
        """Movements settled in the range, oldest first."""
        chosen = [
            m
            for m in self.movements
            if request.start_time.ToDatetime()
            <= m.settle_time.ToDatetime()
            < request.end_time.ToDatetime()
        ]
        page, token = self._page(chosen, request.page_token, request.page_size)
        return payment_internal_pb2.ListSettledMovementsResponse(
            movements=page, next_page_token=token
        )

    async def ListProcessorRecords(
        self, request: payment_internal_pb2.ListProcessorRecordsRequest, context: Context
    ) -> payment_internal_pb2.ListProcessorRecordsResponse:
        """Processor records created in the range, oldest first."""
        chosen = [
            r
            for r in self.records
            if request.start_time.ToDatetime()
            <= r.create_time.ToDatetime()
            < request.end_time.ToDatetime()
        ]
        page, token = self._page(chosen, request.page_token, request.page_size)
        return payment_internal_pb2.ListProcessorRecordsResponse(
            records=page, next_page_token=token
        )


@dataclass
class Harness:
    """The in-process ledger, its database, and the fake payment service it reconciles with."""

    ledger: ledger_internal_pb2_grpc.LedgerInternalServiceStub
    ledger_target: str
    sessions: sessionmaker[Session]
    database_url: str
    payments: FakePayments

    def capture(self, merchant_id: str, amount: int, fee: int, *, currency: str = "USD") -> str:
        """A payment captured as the real flow does it: processor, ledger, then settled."""
        payment_id = new_id("pay")
        now = datetime.now(UTC)
        self.payments.records.append(
            payment_internal_pb2.ProcessorRecord(
                kind="capture",
                processor_id=new_id("ch"),
                payment_id=payment_id,
                amount=amount,
                currency=currency,
                create_time=_stamp(now),
            )
        )
        reference = f"payment:{payment_id}:capture"
        legs = [
            Posting("platform", "processor_receivable", "debit", amount, currency),
            Posting(merchant_id, "merchant_pending", "credit", amount - fee, currency),
            Posting("platform", "platform_fees", "credit", fee, currency),
        ]
        self._post(reference, [leg for leg in legs if leg.amount], {"payment_id": payment_id})
        self.payments.movements.append(
            payment_internal_pb2.SettledMovement(
                kind="payment",
                id=payment_id,
                payment_id=payment_id,
                merchant_id=merchant_id,
                amount=amount,
                fee=fee,
                currency=currency,
                livemode=False,
                settle_time=_stamp(datetime.now(UTC)),
                ledger_reference=reference,
            )
        )
        return payment_id

    def refund(self, merchant_id: str, payment_id: str, amount: int) -> str:
        """A refund through processor, ledger and payment records."""
        refund_id = new_id("re")
        self.payments.records.append(
            payment_internal_pb2.ProcessorRecord(
                kind="refund",
                processor_id=new_id("rf"),
                payment_id=payment_id,
                refund_id=refund_id,
                amount=amount,
                currency="USD",
                create_time=_stamp(datetime.now(UTC)),
            )
        )
        reference = f"refund:{refund_id}"
        self._post(
            reference,
            [
                Posting(merchant_id, "merchant_balance", "debit", amount, "USD"),
                Posting("platform", "processor_receivable", "credit", amount, "USD"),
            ],
            {"payment_id": payment_id, "refund_id": refund_id},
        )
        self.payments.movements.append(
            payment_internal_pb2.SettledMovement(
                kind="refund",
                id=refund_id,
                payment_id=payment_id,
                merchant_id=merchant_id,
                amount=amount,
                currency="USD",
                settle_time=_stamp(datetime.now(UTC)),
                ledger_reference=reference,
            )
        )
        return refund_id

    def _post(self, reference: str, legs: list[Posting], metadata: dict[str, str]) -> None:
        with transaction(self.sessions) as session:
            posting.post_transaction(
                session,
                external_reference=reference,
                postings=legs,
                livemode=False,
                metadata=metadata,
            )

    def reconcile(self, start: datetime, end: datetime) -> ledger_internal_pb2.ReconciliationReport:
        """Runs the Reconcile RPC for [start, end)."""
        request = ledger_internal_pb2.ReconcileRequest(
            start_time=_stamp(start), end_time=_stamp(end)
        )
        report: ledger_internal_pb2.ReconciliationReport = self.ledger.Reconcile(
            request, timeout=60
        )
        return report


def _stamp(moment: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(moment)
    return stamp


class _Loop:
    """An asyncio loop in a thread, for the in-process grpc.aio servers."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout=30)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)


@pytest.fixture(scope="module")
def harness(platform: LocalPlatform) -> Iterator[Harness]:
    """A ledger on a fresh database, wired to a fake payment service, both on free ports."""
    url = _fresh_database(platform.settings.require_database_url())
    upgrade(url, ("ledger",))
    engine = make_engine(url, pool_size=4)
    sessions = make_sessionmaker(engine)
    loop = _Loop()
    payments = FakePayments()  # type: ignore[abstract]  # only reconciliation's RPCs

    def register_payments(server: grpc.aio.Server) -> None:
        payment_internal_pb2_grpc.add_PaymentInternalServiceServicer_to_server(payments, server)

    async def start_payments() -> tuple[grpc.aio.Server, int]:
        server, port, _ = create_server(
            ServiceSpec(
                "payment", register_payments, ["paymesh.payment.v1.PaymentInternalService"]
            ),
            port=0,
        )
        await server.start()
        return server, port

    payment_server, payment_port = loop.run(start_payments())
    settings = settings_from(
        {"PAYMESH_DATABASE_URL": url, "PAYMESH_PAGE_TOKEN_KEY": "reconciliation-test-key"}
    )
    payment_channel = sync_channel(f"127.0.0.1:{payment_port}")

    def register_ledger(server: grpc.aio.Server) -> None:
        ledger_internal_pb2_grpc.add_LedgerInternalServiceServicer_to_server(
            LedgerInternalServicer(
                sessions,
                LoopPool(url, max_size=1, application_name="paymesh-test"),
                settings,
                payment_internal_pb2_grpc.PaymentInternalServiceStub(payment_channel),
            ),
            server,
        )

    async def start_ledger() -> tuple[grpc.aio.Server, int]:
        server, port, _ = create_server(
            ServiceSpec("ledger", register_ledger, ["paymesh.ledger.v1.LedgerInternalService"]),
            port=0,
        )
        await server.start()
        return server, port

    ledger_server, ledger_port = loop.run(start_ledger())
    target = f"127.0.0.1:{ledger_port}"
    with grpc.insecure_channel(target) as channel:
        yield Harness(
            ledger_internal_pb2_grpc.LedgerInternalServiceStub(channel),
            target,
            sessions,
            url,
            payments,
        )
    loop.run(ledger_server.stop(None))
    loop.run(payment_server.stop(None))
    loop.close()
    payment_channel.close()
    engine.dispose()


def _window() -> datetime:
    """A start time just before now, after everything earlier tests wrote."""
    return datetime.now(UTC) - timedelta(microseconds=1)


def test_clean_run_reports_zero_mismatches_with_totals(harness: Harness) -> None:
    start = _window()
    shop, other = new_id("mer"), new_id("mer")
    paid = harness.capture(shop, 10_000, 320)
    harness.capture(other, 5_000, 175)
    harness.capture(shop, 700, 700)  # the fee takes it all: no merchant leg
    harness.refund(shop, paid, 2_500)
    harness.capture(other, 90, 3, currency="JPY")
    report = harness.reconcile(start, datetime.now(UTC))
    assert list(report.mismatches) == []
    assert report.checked_count == 5 + 5
    totals = {line.currency: line for line in report.totals}
    usd = totals["USD"]
    assert (usd.payments_captured, usd.payments_fees, usd.payments_refunded) == (
        15_700,
        1_195,
        2_500,
    )
    assert (usd.processor_captured, usd.processor_refunded) == (15_700, 2_500)
    assert usd.ledger_receivable_net == 15_700 - 2_500
    assert usd.ledger_fees == 1_195
    assert usd.ledger_merchant_net == 15_700 - 1_195 - 2_500
    assert totals["JPY"].ledger_merchant_net == 87


def test_injected_unexpected_transaction_is_reported_with_ids(harness: Harness) -> None:
    start = _window()
    shop = new_id("mer")
    harness.capture(shop, 4_000, 100)
    # Behind the service's back: a balanced transaction no payment accounts for, moving money
    # from the platform's fees to the merchant.
    transaction_id = new_id("ltx")
    with psycopg.connect(harness.database_url.replace("+psycopg", "")) as raw:
        accounts_by_kind: dict[Any, Any] = dict(
            raw.execute(
                "SELECT kind, id FROM ledger.accounts WHERE owner IN (%s, 'platform')"
                " AND currency = 'USD' AND NOT livemode",
                (shop,),
            ).fetchall()
        )
        raw.execute(
            "INSERT INTO ledger.transactions (id, external_reference, postings_hash, livemode)"
            " VALUES (%s, %s, 'forged', false)",
            (transaction_id, f"manual:{transaction_id}"),
        )
        for account_kind, direction in (("platform_fees", "debit"), ("merchant_pending", "credit")):
            raw.execute(
                "INSERT INTO ledger.entries"
                " (id, transaction_id, account_id, direction, amount, currency)"
                " VALUES (%s, %s, %s, %s, 250, 'USD')",
                (new_id("le"), transaction_id, accounts_by_kind[account_kind], direction),
            )
    report = harness.reconcile(start, datetime.now(UTC))
    kinds = {m.kind: m for m in report.mismatches}
    assert set(kinds) == {"UNEXPECTED_LEDGER_TRANSACTION", "MERCHANT_BALANCE_MISMATCH"}
    assert transaction_id in kinds["UNEXPECTED_LEDGER_TRANSACTION"].ids
    merchant = kinds["MERCHANT_BALANCE_MISMATCH"]
    assert merchant.ids == [shop]
    assert (merchant.currency, merchant.expected, merchant.actual) == ("USD", 3_900, 4_150)


def test_settled_payment_without_ledger_transaction_is_reported(harness: Harness) -> None:
    start = _window()
    shop = new_id("mer")
    harness.capture(shop, 1_000, 30)
    lost = new_id("pay")
    now = datetime.now(UTC)
    harness.payments.records.append(
        payment_internal_pb2.ProcessorRecord(
            kind="capture",
            processor_id=new_id("ch"),
            payment_id=lost,
            amount=800,
            currency="USD",
            create_time=_stamp(now),
        )
    )
    harness.payments.movements.append(
        payment_internal_pb2.SettledMovement(
            kind="payment",
            id=lost,
            payment_id=lost,
            merchant_id=shop,
            amount=800,
            fee=24,
            currency="USD",
            settle_time=_stamp(now),
            ledger_reference=f"payment:{lost}:capture",
        )
    )
    report = harness.reconcile(start, datetime.now(UTC))
    kinds = sorted(m.kind for m in report.mismatches)
    assert kinds == [
        "MERCHANT_BALANCE_MISMATCH",
        "MISSING_LEDGER_TRANSACTION",
        "PROCESSOR_MISMATCH",
    ]
    missing = next(m for m in report.mismatches if m.kind == "MISSING_LEDGER_TRANSACTION")
    assert lost in missing.ids
    assert shop in missing.ids
    processor = next(m for m in report.mismatches if m.kind == "PROCESSOR_MISMATCH")
    assert lost in processor.ids
    assert (processor.expected, processor.actual) == (800, 0)


def test_amount_and_processor_disagreements_are_reported(harness: Harness) -> None:
    start = _window()
    shop = new_id("mer")
    payment_id = harness.capture(shop, 2_000, 60)
    # The payment service says it captured more than the ledger posted, and the processor
    # has no record of a refund the payment service settled.
    harness.payments.movements[-1].amount = 2_100
    refund_id = harness.refund(shop, payment_id, 500)
    harness.payments.records.pop()
    report = harness.reconcile(start, datetime.now(UTC))
    by_kind: dict[str, list[ledger_internal_pb2.Mismatch]] = {}
    for mismatch in report.mismatches:
        by_kind.setdefault(mismatch.kind, []).append(mismatch)
    assert set(by_kind) == {"AMOUNT_MISMATCH", "MERCHANT_BALANCE_MISMATCH", "PROCESSOR_MISMATCH"}
    amount = by_kind["AMOUNT_MISMATCH"][0]
    assert payment_id in amount.ids
    assert (amount.expected, amount.actual) == (2_100, 2_000)
    processor_ids = {i for m in by_kind["PROCESSOR_MISMATCH"] for i in m.ids}
    assert refund_id in processor_ids


def test_bad_ranges_are_invalid(harness: Harness) -> None:
    now = datetime.now(UTC)
    for request in (
        ledger_internal_pb2.ReconcileRequest(),
        ledger_internal_pb2.ReconcileRequest(start_time=_stamp(now)),
        ledger_internal_pb2.ReconcileRequest(start_time=_stamp(now), end_time=_stamp(now)),
        ledger_internal_pb2.ReconcileRequest(
            start_time=_stamp(now), end_time=_stamp(now - timedelta(days=1))
        ),
    ):
        with pytest.raises(grpc.RpcError) as raised:
            harness.ledger.Reconcile(request)
        assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_cli_prints_the_report_and_exits_nonzero_on_mismatches(
    harness: Harness, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PAYMESH_LEDGER_TARGET", harness.ledger_target)
    start = _window()
    shop = new_id("mer")
    harness.capture(shop, 1_234, 34)
    end = datetime.now(UTC) + timedelta(milliseconds=1)
    code = cli.main(["reconcile", "--start", start.isoformat(), "--end", end.isoformat(), "--json"])
    assert code == 0, capsys.readouterr().out
    clean = json.loads(capsys.readouterr().out)
    assert clean.get("mismatches", []) == []
    assert clean["totals"][0]["payments_captured"] == 1234

    ghost = new_id("pay")
    harness.payments.movements.append(
        payment_internal_pb2.SettledMovement(
            kind="payment",
            id=ghost,
            payment_id=ghost,
            merchant_id=shop,
            amount=50,
            currency="USD",
            settle_time=_stamp(datetime.now(UTC)),
            ledger_reference=f"payment:{ghost}:capture",
        )
    )
    end = datetime.now(UTC) + timedelta(milliseconds=1)
    code = cli.main(["reconcile", "--start", start.isoformat(), "--end", end.isoformat()])
    text = capsys.readouterr().out
    assert code == 1
    assert "MISSING_LEDGER_TRANSACTION" in text
    assert ghost in text


def test_real_payments_and_refunds_reconcile_with_the_real_ledger(
    platform: LocalPlatform, api: httpx.Client, merchant: MerchantKeys
) -> None:
    """The payment service's own RPCs and postings, end to end through the platform."""
    from tests.integration.test_payments import paid
    from tests.integration.test_payments_refunds import refund, wait_refund

    start = datetime.now(UTC) - timedelta(seconds=1)
    payment = paid(api, merchant.secret_key, amount=5_000, currency="USD")
    assert payment["status"] == "succeeded", payment
    made = refund(api, merchant.secret_key, payment_id=payment["id"], amount=1_200)
    assert made.status_code == 200, made.text
    settled = wait_refund(api, merchant.secret_key, made.json()["id"])
    assert settled["status"] == "succeeded", settled
    end = datetime.now(UTC) + timedelta(seconds=1)
    with grpc.insecure_channel(platform.settings.target("ledger")) as channel:
        stub = ledger_internal_pb2_grpc.LedgerInternalServiceStub(channel)
        report = stub.Reconcile(
            ledger_internal_pb2.ReconcileRequest(start_time=_stamp(start), end_time=_stamp(end)),
            timeout=60,
        )
        entries = stub.ListEntries(
            ledger_internal_pb2.ListEntriesRequest(source_id=payment["id"]), timeout=10
        )
        accounts = {
            account.kind: account
            for account in stub.ListAccounts(
                ledger_internal_pb2.ListAccountsRequest(owner=merchant.id), timeout=10
            ).accounts
        }
    # Other tests share this platform's ledger; only this merchant's figures are asserted.
    ours = {payment["id"], settled["id"], merchant.id}
    assert [m for m in report.mismatches if ours & set(m.ids)] == []
    assert report.checked_count >= 4  # the capture and refund, and the processor's records
    assert sum(e.amount for e in entries.entries if e.direction == "debit") == 5_000
    # The capture credits pending; the refund debits available (the sweeper may have moved the
    # capture's funds to available meanwhile, which changes neither total).
    (credited,) = [
        e.amount for e in entries.entries if e.account_id == accounts["merchant_pending"].id
    ]
    available = accounts["merchant_balance"].balance
    pending = accounts["merchant_pending"].balance
    assert available + pending == credited - 1_200
    balance = api.get("/v1/balance", headers={"X-API-Key": merchant.secret_key}).json()
    (shown,) = balance["available"]
    assert shown["available"] + shown["pending"] == credited - 1_200
