"""The ledger service over gRPC (internal) and through the edge (merchants' balance)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import grpc
import httpx
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from paymesh.ledger.v1 import ledger_internal_pb2, ledger_internal_pb2_grpc
from sqlalchemy import select

from services.admin import merchants
from services.common.db import transaction
from services.common.ids import new_id
from services.common.money import AMOUNT_MAX
from services.ledger.models import LedgerTransaction
from services.runtime.platform import LocalPlatform
from tests.integration.conftest import MerchantKeys
from tests.rest_errors import error_code

Stub = ledger_internal_pb2_grpc.LedgerInternalServiceStub


@pytest.fixture(scope="module")
def ledger(platform: LocalPlatform) -> Iterator[Stub]:
    """A client of the ledger's internal service, as the payment service has."""
    with grpc.insecure_channel(platform.settings.target("ledger")) as channel:
        yield ledger_internal_pb2_grpc.LedgerInternalServiceStub(channel)


def leg(
    owner: str, kind: str, direction: str, amount: int, currency: str = "USD"
) -> ledger_internal_pb2.Posting:
    """One posting."""
    return ledger_internal_pb2.Posting(
        owner=owner, kind=kind, direction=direction, amount=amount, currency=currency
    )


def capture_request(
    merchant_id: str,
    amount: int,
    fee: int,
    *,
    currency: str = "USD",
    livemode: bool = False,
    payment_id: str | None = None,
) -> ledger_internal_pb2.PostTransactionRequest:
    """A payment capture as the payment service posts it."""
    payment_id = payment_id or new_id("pay")
    return ledger_internal_pb2.PostTransactionRequest(
        external_reference=f"payment:{payment_id}:capture",
        description=f"capture of {payment_id}",
        postings=[
            leg("platform", "processor_receivable", "debit", amount, currency),
            leg(merchant_id, "merchant_balance", "credit", amount - fee, currency),
            leg("platform", "platform_fees", "credit", fee, currency),
        ],
        metadata={"payment_id": payment_id, "merchant_id": merchant_id},
        livemode=livemode,
    )


def refund_request(
    merchant_id: str, amount: int, *, payment_id: str, currency: str = "USD"
) -> ledger_internal_pb2.PostTransactionRequest:
    """A refund as the payment service posts it."""
    refund_id = new_id("re")
    return ledger_internal_pb2.PostTransactionRequest(
        external_reference=f"refund:{refund_id}",
        postings=[
            leg(merchant_id, "merchant_balance", "debit", amount, currency),
            leg("platform", "processor_receivable", "credit", amount, currency),
        ],
        metadata={"payment_id": payment_id, "refund_id": refund_id, "merchant_id": merchant_id},
    )


def reason_of(error: grpc.RpcError) -> str:
    """The ErrorInfo reason of a failed call."""
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None
    info = error_details_pb2.ErrorInfo()
    assert status.details[0].Unpack(info)
    return str(info.reason)


def test_capture_posts_three_entries_and_moves_each_balance(ledger: Stub) -> None:
    merchant_id = new_id("mer")
    posted = ledger.PostTransaction(capture_request(merchant_id, 1000, 59))
    assert posted.id.startswith("ltx_")
    legs = sorted((e.direction, e.amount, e.currency) for e in posted.entries)
    assert legs == [("credit", 59, "USD"), ("credit", 941, "USD"), ("debit", 1000, "USD")]
    assert {e.source_id for e in posted.entries} == {posted.metadata["payment_id"]}
    merchant_accounts = ledger.ListAccounts(
        ledger_internal_pb2.ListAccountsRequest(owner=merchant_id)
    )
    assert [(a.kind, a.currency, a.normal_side, a.balance) for a in merchant_accounts.accounts] == [
        ("merchant_balance", "USD", "credit", 941)
    ]


def test_same_reference_and_postings_returns_the_first_transaction(ledger: Stub) -> None:
    request = capture_request(new_id("mer"), 500, 10)
    first = ledger.PostTransaction(request)
    # Same legs in another order are the same postings.
    reordered = ledger_internal_pb2.PostTransactionRequest()
    reordered.CopyFrom(request)
    del reordered.postings[:]
    reordered.postings.extend(reversed(request.postings))
    again = ledger.PostTransaction(reordered)
    assert again.id == first.id
    assert sorted(e.id for e in again.entries) == sorted(e.id for e in first.entries)


def test_same_reference_with_other_postings_is_refused(ledger: Stub) -> None:
    merchant_id = new_id("mer")
    request = capture_request(merchant_id, 500, 10)
    first = ledger.PostTransaction(request)
    changed = capture_request(merchant_id, 500, 11, payment_id=request.metadata["payment_id"])
    with pytest.raises(grpc.RpcError) as raised:
        ledger.PostTransaction(changed)
    assert raised.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert reason_of(raised.value) == "LEDGER_REFERENCE_REUSED"
    account = ledger.ListAccounts(ledger_internal_pb2.ListAccountsRequest(owner=merchant_id))
    assert account.accounts[0].balance == 490
    assert first.id


def _balance(ledger: Stub, merchant_id: str) -> int:
    accounts = ledger.ListAccounts(ledger_internal_pb2.ListAccountsRequest(owner=merchant_id))
    return sum(account.balance for account in accounts.accounts)


def test_post_transactions__a_batch_posts_each_once_and_answers_each_in_order(
    ledger: Stub,
) -> None:
    known, fresh = new_id("mer"), new_id("mer")
    ledger.PostTransaction(capture_request(known, 100, 1))  # its accounts exist now
    earlier = capture_request(known, 300, 3)
    earlier_id = ledger.PostTransaction(earlier).id
    together = [capture_request(known, 1000 + n, 10) for n in range(3)]
    new_account = capture_request(fresh, 700, 7)
    unbalanced = capture_request(known, 500, 5)
    unbalanced.postings[0].amount = 499
    reused = capture_request(known, 300, 4, payment_id=earlier.metadata["payment_id"])
    batch = [*together, earlier, new_account, unbalanced, together[0], reused]

    reply = ledger.PostTransactions(ledger_internal_pb2.PostTransactionsRequest(transactions=batch))

    results = list(reply.results)
    assert len(results) == len(batch)
    ids = [result.transaction.id for result in results]
    assert all(identifier.startswith("ltx_") for identifier in ids[:5])
    assert len(set(ids[:5])) == 5
    assert ids[3] == earlier_id, "a reference posted before answers its first transaction"
    assert ids[6] == ids[0], "a reference repeated in the batch is posted once"
    assert [result.HasField("error") for result in results] == [False] * 5 + [True, False, True]
    assert results[5].error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert results[6].transaction.external_reference == together[0].external_reference
    assert results[7].error.code == grpc.StatusCode.ALREADY_EXISTS.value[0]
    assert "reference" in results[7].error.message
    # Each posted once, less its fee (100, 300, then 1,000 to 1,002), nothing of the refused.
    assert _balance(ledger, known) == 99 + 297 + 990 + 991 + 992
    assert _balance(ledger, fresh) == 693
    trial = ledger.GetTrialBalance(ledger_internal_pb2.GetTrialBalanceRequest())
    assert trial.balanced


@pytest.mark.parametrize("count", [0, 501])
def test_post_transactions__an_empty_or_oversized_batch_is_refused(
    ledger: Stub, count: int
) -> None:
    merchant_id = new_id("mer")
    batch = [capture_request(merchant_id, 100, 1) for _ in range(count)]
    with pytest.raises(grpc.RpcError) as raised:
        ledger.PostTransactions(ledger_internal_pb2.PostTransactionsRequest(transactions=batch))
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert _balance(ledger, merchant_id) == 0


def _bad_requests() -> list[tuple[str, ledger_internal_pb2.PostTransactionRequest]]:
    merchant_id = new_id("mer")
    cases: list[tuple[str, ledger_internal_pb2.PostTransactionRequest]] = []

    def case(name: str, **changes: object) -> None:
        request = capture_request(merchant_id, 1000, 30)
        for field, value in changes.items():
            if field == "postings":
                del request.postings[:]
                request.postings.extend(value)  # type: ignore[arg-type]
            else:
                setattr(request, field, value)
        cases.append((name, request))

    case(
        "unbalanced",
        postings=[
            leg("platform", "processor_receivable", "debit", 1000),
            leg(merchant_id, "merchant_balance", "credit", 999),
        ],
    )
    case("one posting", postings=[leg("platform", "processor_receivable", "debit", 1000)])
    case("no postings", postings=[])
    case(
        "zero amount",
        postings=[
            leg("platform", "processor_receivable", "debit", 0),
            leg(merchant_id, "merchant_balance", "credit", 0),
        ],
    )
    case(
        "negative amount",
        postings=[
            leg("platform", "processor_receivable", "debit", -5),
            leg(merchant_id, "merchant_balance", "credit", -5),
        ],
    )
    case(
        "huge amount",
        postings=[
            leg("platform", "processor_receivable", "debit", AMOUNT_MAX + 1),
            leg(merchant_id, "merchant_balance", "credit", AMOUNT_MAX + 1),
        ],
    )
    case(
        "unknown currency",
        postings=[
            leg("platform", "processor_receivable", "debit", 5, "ZZZ"),
            leg(merchant_id, "merchant_balance", "credit", 5, "ZZZ"),
        ],
    )
    case(
        "balanced only across currencies",
        postings=[
            leg("platform", "processor_receivable", "debit", 5, "USD"),
            leg(merchant_id, "merchant_balance", "credit", 5, "EUR"),
        ],
    )
    case(
        "unknown kind",
        postings=[
            leg("platform", "processor_receivable", "debit", 5),
            leg(merchant_id, "cash", "credit", 5),
        ],
    )
    case(
        "merchant owning a platform account",
        postings=[
            leg(merchant_id, "processor_receivable", "debit", 5),
            leg(merchant_id, "merchant_balance", "credit", 5),
        ],
    )
    case(
        "platform owning a merchant balance",
        postings=[
            leg("platform", "processor_receivable", "debit", 5),
            leg("platform", "merchant_balance", "credit", 5),
        ],
    )
    case(
        "bad direction",
        postings=[
            leg("platform", "processor_receivable", "up", 5),
            leg(merchant_id, "merchant_balance", "credit", 5),
        ],
    )
    case(
        "bad owner",
        postings=[
            leg("platform", "processor_receivable", "debit", 5),
            leg("a b'; --", "merchant_balance", "credit", 5),
        ],
    )
    case("empty reference", external_reference="")
    case("long reference", external_reference="r" * 201)
    case("long description", description="d" * 1001)
    return cases


@pytest.mark.parametrize(("name", "request_"), _bad_requests(), ids=lambda v: str(v)[:40])
def test_bad_transactions_are_refused_and_store_nothing(
    ledger: Stub,
    sessions,
    name: str,
    request_: ledger_internal_pb2.PostTransactionRequest,  # type: ignore[no-untyped-def]
) -> None:
    with pytest.raises(grpc.RpcError) as raised:
        ledger.PostTransaction(request_)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT, name
    assert reason_of(raised.value) == "INVALID_LEDGER_TRANSACTION"
    with transaction(sessions) as session:
        stored = session.scalars(
            select(LedgerTransaction.id).where(
                LedgerTransaction.external_reference == request_.external_reference
            )
        ).all()
    assert stored == []


def test_trial_balance_is_balanced_in_every_currency(ledger: Stub) -> None:
    ledger.PostTransaction(capture_request(new_id("mer"), 300, 3, currency="JPY"))
    trial = ledger.GetTrialBalance(ledger_internal_pb2.GetTrialBalanceRequest())
    assert trial.balanced
    assert "JPY" in {line.currency for line in trial.currencies}
    for line in trial.currencies:
        assert line.debits == line.credits


def test_account_balance_as_of_a_time(ledger: Stub) -> None:
    merchant_id = new_id("mer")
    first = ledger.PostTransaction(capture_request(merchant_id, 1000, 0 + 100))
    between = first.entries[0].create_time.ToDatetime(tzinfo=UTC) + timedelta(microseconds=1)
    ledger.PostTransaction(capture_request(merchant_id, 2000, 200))
    account_id = (
        ledger.ListAccounts(ledger_internal_pb2.ListAccountsRequest(owner=merchant_id))
        .accounts[0]
        .id
    )
    now = ledger.GetAccount(ledger_internal_pb2.GetAccountRequest(id=account_id))
    assert now.balance == 900 + 1800
    request = ledger_internal_pb2.GetAccountRequest(id=account_id)
    request.as_of.FromDatetime(between)
    assert ledger.GetAccount(request).balance == 900
    request.as_of.FromDatetime(datetime(2000, 1, 1, tzinfo=UTC))
    assert ledger.GetAccount(request).balance == 0


@pytest.mark.parametrize("account_id", ["acct_doesnotexist", "nope", "", "acct_" + "x" * 100])
def test_unknown_account_is_not_found(ledger: Stub, account_id: str) -> None:
    with pytest.raises(grpc.RpcError) as raised:
        ledger.GetAccount(ledger_internal_pb2.GetAccountRequest(id=account_id))
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND


def test_entries_by_source_and_by_account_page_newest_first(ledger: Stub) -> None:
    merchant_id = new_id("mer")
    capture = capture_request(merchant_id, 1000, 30)
    payment_id = capture.metadata["payment_id"]
    ledger.PostTransaction(capture)
    ledger.PostTransaction(refund_request(merchant_id, 400, payment_id=payment_id))
    ledger.PostTransaction(refund_request(merchant_id, 700, payment_id=payment_id))
    by_payment = ledger.ListEntries(ledger_internal_pb2.ListEntriesRequest(source_id=payment_id))
    assert len(by_payment.entries) == 3
    account_id = ledger.ListAccounts(
        ledger_internal_pb2.ListAccountsRequest(owner=merchant_id)
    ).accounts[0]
    assert account_id.balance == 970 - 400 - 700  # a refund may take it below zero
    page = ledger.ListEntries(
        ledger_internal_pb2.ListEntriesRequest(account_id=account_id.id, page_size=2)
    )
    assert [(e.direction, e.amount) for e in page.entries] == [("debit", 700), ("debit", 400)]
    rest = ledger.ListEntries(
        ledger_internal_pb2.ListEntriesRequest(
            account_id=account_id.id, page_size=2, page_token=page.next_page_token
        )
    )
    assert [(e.direction, e.amount) for e in rest.entries] == [("credit", 970)]
    assert rest.next_page_token == ""


@pytest.mark.parametrize(
    "request_",
    [
        ledger_internal_pb2.ListEntriesRequest(),
        ledger_internal_pb2.ListEntriesRequest(account_id="acct_x", source_id="pay_x"),
        ledger_internal_pb2.ListEntriesRequest(source_id="pay_x", page_size=101),
        ledger_internal_pb2.ListEntriesRequest(source_id="pay_x", page_size=-1),
        ledger_internal_pb2.ListEntriesRequest(source_id="pay_x", page_token="garbage!"),
        ledger_internal_pb2.ListEntriesRequest(source_id="x" * 65),
    ],
)
def test_bad_entry_queries_are_invalid(
    ledger: Stub, request_: ledger_internal_pb2.ListEntriesRequest
) -> None:
    with pytest.raises(grpc.RpcError) as raised:
        ledger.ListEntries(request_)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_a_token_of_another_list_is_refused(ledger: Stub) -> None:
    merchant_id = new_id("mer")
    for _ in range(2):
        ledger.PostTransaction(capture_request(merchant_id, 10, 1))
    accounts_page = ledger.ListAccounts(ledger_internal_pb2.ListAccountsRequest(page_size=1))
    assert accounts_page.next_page_token
    with pytest.raises(grpc.RpcError) as raised:
        ledger.ListEntries(
            ledger_internal_pb2.ListEntriesRequest(
                source_id="pay_x", page_token=accounts_page.next_page_token
            )
        )
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "page_token" in (raised.value.details() or "")


def test_entries_of_an_unknown_account_are_not_found(ledger: Stub) -> None:
    with pytest.raises(grpc.RpcError) as raised:
        ledger.ListEntries(ledger_internal_pb2.ListEntriesRequest(account_id="acct_unknown"))
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND


# --- merchants, through the edge -------------------------------------------------------------


def test_balance_shows_available_per_currency_and_negative_after_refunds(
    api: httpx.Client, ledger: Stub, merchant: MerchantKeys
) -> None:
    headers = {"X-API-Key": merchant.secret_key}
    empty = api.get("/v1/balance", headers=headers)
    assert empty.status_code == 200, empty.text
    assert empty.json().get("available", []) == []
    capture = capture_request(merchant.id, 1000, 30)
    ledger.PostTransaction(capture)
    ledger.PostTransaction(capture_request(merchant.id, 500, 5, currency="EUR"))
    ledger.PostTransaction(
        refund_request(merchant.id, 1000, payment_id=capture.metadata["payment_id"])
    )
    body = api.get("/v1/balance", headers=headers).json()
    assert body["available"] == [
        {"currency": "EUR", "available": 495, "pending": 0},
        {"currency": "USD", "available": -30, "pending": 0},
    ]
    assert body.get("livemode", False) is False


def test_balance_entries_are_the_merchants_own_linked_to_their_source(
    api: httpx.Client, ledger: Stub, merchant: MerchantKeys, other_merchant: MerchantKeys
) -> None:
    captures = [capture_request(merchant.id, 100 * (i + 1), 1) for i in range(3)]
    for request in captures:
        ledger.PostTransaction(request)
    ledger.PostTransaction(capture_request(other_merchant.id, 777, 7))
    headers = {"X-API-Key": merchant.secret_key}
    first = api.get("/v1/balance/entries", params={"page_size": 2}, headers=headers)
    assert first.status_code == 200, first.text
    page = first.json()
    assert [e["amount"] for e in page["entries"]] == [299, 199]
    assert [e["source_id"] for e in page["entries"]] == [
        captures[2].metadata["payment_id"],
        captures[1].metadata["payment_id"],
    ]
    rest = api.get(
        "/v1/balance/entries",
        params={"page_size": 2, "page_token": page["next_page_token"]},
        headers=headers,
    ).json()
    assert [e["amount"] for e in rest["entries"]] == [99]
    assert rest.get("next_page_token", "") == ""
    assert (page["has_more"], rest["has_more"]) == (True, False)
    other = api.get("/v1/balance/entries", headers={"X-API-Key": other_merchant.secret_key})
    assert [e["amount"] for e in other.json()["entries"]] == [770]


def test_test_mode_keys_see_test_mode_balances_only(
    api: httpx.Client, ledger: Stub, merchant: MerchantKeys, sessions
) -> None:  # type: ignore[no-untyped-def]
    ledger.PostTransaction(capture_request(merchant.id, 5000, 50, livemode=True))
    ledger.PostTransaction(capture_request(merchant.id, 100, 1, livemode=False))
    with transaction(sessions) as session:
        live_key = merchants.create_api_key(
            session, merchant_id=merchant.id, mode="live", kind="secret"
        ).key
    test_balance = api.get("/v1/balance", headers={"X-API-Key": merchant.secret_key}).json()
    assert test_balance["available"] == [{"currency": "USD", "available": 99, "pending": 0}]
    live_balance = api.get("/v1/balance", headers={"X-API-Key": live_key}).json()
    assert live_balance["available"] == [{"currency": "USD", "available": 4950, "pending": 0}]
    assert live_balance["livemode"] is True
    live_entries = api.get("/v1/balance/entries", headers={"X-API-Key": live_key}).json()
    assert [e["amount"] for e in live_entries["entries"]] == [4950]


@pytest.mark.parametrize(
    ("params", "status"),
    [
        ({"page_size": "101"}, 400),
        ({"page_size": "-3"}, 400),
        ({"page_size": "many"}, 400),
        ({"page_token": "not-a-token"}, 400),
    ],
)
def test_bad_balance_entry_queries_are_400(
    api: httpx.Client, merchant: MerchantKeys, params: dict[str, str], status: int
) -> None:
    response = api.get(
        "/v1/balance/entries", params=params, headers={"X-API-Key": merchant.secret_key}
    )
    assert response.status_code == status, response.text
    assert response.json()["error"]["message"]  # JSON from the service or from Envoy's transcoder


def test_balance_needs_a_secret_key(api: httpx.Client, merchant: MerchantKeys) -> None:
    assert api.get("/v1/balance").status_code == 401
    publishable = api.get("/v1/balance", headers={"X-API-Key": merchant.publishable_key})
    assert publishable.status_code == 403
    assert error_code(publishable) == "secret_key_required"


def test_internal_ledger_is_not_reachable_through_the_edge(
    platform: LocalPlatform, api: httpx.Client, merchant: MerchantKeys
) -> None:
    response = api.post(
        "/paymesh.ledger.v1.LedgerInternalService/PostTransaction",
        json={},
        headers={"X-API-Key": merchant.secret_key},
    )
    assert response.status_code == 404
