"""PaymentInternalService, called on the payment service's own port as admin and ledger do."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import httpx
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from paymesh.payment.v1 import payment_internal_pb2, payment_internal_pb2_grpc

from services.admin import merchants
from services.common.db import transaction
from services.runtime.platform import LocalPlatform
from tests.integration.conftest import MerchantKeys
from tests.integration.test_payments import card, created, paid, wait_for
from tests.integration.test_payments_refunds import wait_refund

Stub = payment_internal_pb2_grpc.PaymentInternalServiceStub


@pytest.fixture
def internal(platform: LocalPlatform) -> Iterator[Stub]:
    """A stub of the internal service on the payment service's own port."""
    with grpc.insecure_channel(platform.settings.target("payment")) as channel:
        yield payment_internal_pb2_grpc.PaymentInternalServiceStub(channel)


@pytest.fixture
def shop(sessions) -> MerchantKeys:  # type: ignore[no-untyped-def]
    """A merchant whose figures no other test touches."""
    with transaction(sessions) as session:
        made = merchants.create_merchant(session, name="Figures Ltd", fee_bps=100, fee_fixed=10)
        secret = merchants.create_api_key(session, merchant_id=made.id, mode="test", kind="secret")
        publishable = merchants.create_api_key(
            session, merchant_id=made.id, mode="test", kind="publishable"
        )
        return MerchantKeys(made.id, secret.key, publishable.key)


def stamp(moment: datetime) -> Timestamp:
    """A protobuf timestamp."""
    value = Timestamp()
    value.FromDatetime(moment)
    return value


def code_of(call) -> grpc.StatusCode:  # type: ignore[no-untyped-def]
    """The status code a failing call raises."""
    with pytest.raises(grpc.RpcError) as raised:
        call()
    return raised.value.code()  # type: ignore[attr-defined, no-any-return]


def test_internal_service_is_not_routed_by_the_edge(platform: LocalPlatform) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{platform.settings.http_port}") as channel:
        stub = payment_internal_pb2_grpc.PaymentInternalServiceStub(channel)
        assert (
            code_of(
                lambda: stub.SearchPayments(payment_internal_pb2.SearchPaymentsRequest(), timeout=5)
            )
            == grpc.StatusCode.UNIMPLEMENTED
        )


def test_search_payments_across_merchants_with_filters(
    api: httpx.Client, internal: Stub, shop: MerchantKeys, merchant: MerchantKeys
) -> None:
    mine = [created(api, shop.secret_key, amount=100 + i)["id"] for i in range(3)]
    created(api, merchant.secret_key)
    page = internal.SearchPayments(
        payment_internal_pb2.SearchPaymentsRequest(merchant_id=shop.id, page_size=2), timeout=10
    )
    assert [p.id for p in page.payments] == [mine[2], mine[1]]
    assert not page.payments[0].client_secret
    rest = internal.SearchPayments(
        payment_internal_pb2.SearchPaymentsRequest(
            merchant_id=shop.id, page_size=2, page_token=page.next_page_token
        ),
        timeout=10,
    )
    assert [p.id for p in rest.payments] == [mine[0]] and not rest.next_page_token
    direct = internal.SearchPayments(
        payment_internal_pb2.SearchPaymentsRequest(payment_id=mine[1]), timeout=10
    )
    assert [p.id for p in direct.payments] == [mine[1]]
    waiting = internal.SearchPayments(
        payment_internal_pb2.SearchPaymentsRequest(
            merchant_id=shop.id, status="requires_payment_method"
        ),
        timeout=10,
    )
    assert len(waiting.payments) == 3
    assert (
        code_of(
            lambda: internal.SearchPayments(
                payment_internal_pb2.SearchPaymentsRequest(status="nope"), timeout=10
            )
        )
        == grpc.StatusCode.INVALID_ARGUMENT
    )


def test_stats_timeline_and_refund_views(
    api: httpx.Client, internal: Stub, shop: MerchantKeys
) -> None:
    start = datetime.now(UTC) - timedelta(minutes=1)
    first = paid(api, shop.secret_key, amount=10_000)  # fee 1% + 10 = 110
    paid(api, shop.secret_key, amount=5_000)  # fee 60
    declined = created(api, shop.secret_key, payment_method={"card": card("4000000000000002")})
    wait_for(api, shop.secret_key, declined["id"])
    created(api, shop.secret_key, amount=77, currency="JPY")
    refund = api.post(
        "/v1/refunds",
        json={"payment_id": first["id"], "amount": 1_000},
        headers={"X-API-Key": shop.secret_key},
    ).json()
    wait_refund(api, shop.secret_key, refund["id"])
    end = datetime.now(UTC) + timedelta(minutes=1)

    stats = internal.GetPaymentStats(
        payment_internal_pb2.GetPaymentStatsRequest(
            merchant_id=shop.id, start_time=stamp(start), end_time=stamp(end)
        ),
        timeout=10,
    )
    by_currency = {entry.currency: entry for entry in stats.currencies}
    assert list(by_currency) == ["JPY", "USD"]
    usd = by_currency["USD"]
    assert (usd.succeeded_count, usd.failed_count) == (2, 1)
    assert (usd.gross_volume, usd.fees, usd.refunded) == (15_000, 170, 1_000)
    assert usd.net_volume == 15_000 - 170 - 1_000
    assert by_currency["JPY"].requires_payment_method_count == 1
    live = internal.GetPaymentStats(
        payment_internal_pb2.GetPaymentStatsRequest(merchant_id=shop.id, livemode=True),
        timeout=10,
    )
    assert list(live.currencies) == []

    timeline = internal.GetRevenueTimeline(
        payment_internal_pb2.GetRevenueTimelineRequest(
            granularity="HOUR",
            currency="USD",
            merchant_id=shop.id,
            start_time=stamp(start - timedelta(hours=2)),
            end_time=stamp(end),
        ),
        timeout=10,
    )
    assert len(timeline.buckets) >= 3
    assert sum(b.gross for b in timeline.buckets) == 15_000
    assert sum(b.fees for b in timeline.buckets) == 170
    assert sum(b.refunds for b in timeline.buckets) == 1_000
    assert sum(b.succeeded_count for b in timeline.buckets) == 2
    assert sum(b.failed_count for b in timeline.buckets) == 1
    assert timeline.buckets[0].gross == 0  # empty buckets are included
    for bad in [
        payment_internal_pb2.GetRevenueTimelineRequest(granularity="WEEK", currency="USD"),
        payment_internal_pb2.GetRevenueTimelineRequest(
            granularity="DAY", currency="USD", start_time=stamp(end), end_time=stamp(start)
        ),
        payment_internal_pb2.GetRevenueTimelineRequest(
            granularity="HOUR",
            currency="USD",
            start_time=stamp(start - timedelta(days=365)),
            end_time=stamp(end),
        ),
    ]:
        assert (
            code_of(lambda bad=bad: internal.GetRevenueTimeline(bad, timeout=10))
            == grpc.StatusCode.INVALID_ARGUMENT
        )

    refunds = internal.ListPaymentRefunds(
        payment_internal_pb2.ListPaymentRefundsRequest(payment_id=first["id"]), timeout=10
    )
    assert [r.id for r in refunds.refunds] == [refund["id"]]
    assert (
        code_of(
            lambda: internal.ListPaymentRefunds(
                payment_internal_pb2.ListPaymentRefundsRequest(payment_id="pay_nothing"), timeout=10
            )
        )
        == grpc.StatusCode.NOT_FOUND
    )


def test_operator_refund_is_idempotent_and_bounded(
    api: httpx.Client, internal: Stub, shop: MerchantKeys
) -> None:
    payment = paid(api, shop.secret_key, amount=2_000)
    request = payment_internal_pb2.CreateOperatorRefundRequest(
        payment_id=payment["id"],
        amount=500,
        reason="requested_by_customer",
        idempotency_key="op-1",
        operator_id="op_123",
    )
    first = internal.CreateOperatorRefund(request, timeout=10)
    again = internal.CreateOperatorRefund(request, timeout=10)
    assert first == again
    assert first.amount == 500 and first.merchant_id == shop.id
    assert wait_refund(api, shop.secret_key, first.id)["status"] == "succeeded"
    too_much = payment_internal_pb2.CreateOperatorRefundRequest(
        payment_id=payment["id"], amount=1_501, operator_id="op_123"
    )
    assert (
        code_of(lambda: internal.CreateOperatorRefund(too_much, timeout=10))
        == grpc.StatusCode.FAILED_PRECONDITION
    )
    nobody = payment_internal_pb2.CreateOperatorRefundRequest(payment_id=payment["id"])
    assert (
        code_of(lambda: internal.CreateOperatorRefund(nobody, timeout=10))
        == grpc.StatusCode.INVALID_ARGUMENT
    )
    assert (
        code_of(
            lambda: internal.CreateOperatorRefund(
                payment_internal_pb2.CreateOperatorRefundRequest(
                    payment_id="pay_nothing", operator_id="op_1"
                ),
                timeout=10,
            )
        )
        == grpc.StatusCode.NOT_FOUND
    )


def test_settled_movements_and_processor_records_agree(
    api: httpx.Client, internal: Stub, shop: MerchantKeys
) -> None:
    start = datetime.now(UTC)
    payment = paid(api, shop.secret_key, amount=3_000)
    refund = api.post(
        "/v1/refunds",
        json={"payment_id": payment["id"], "amount": 700},
        headers={"X-API-Key": shop.secret_key},
    ).json()
    wait_refund(api, shop.secret_key, refund["id"])
    end = datetime.now(UTC) + timedelta(seconds=1)

    def all_pages(call: Any, request_type: Any) -> list[Any]:
        items: list[Any] = []
        token = ""
        while True:
            reply = call(
                request_type(
                    start_time=stamp(start), end_time=stamp(end), page_size=1, page_token=token
                ),
                timeout=10,
            )
            items += list(
                getattr(reply, "movements", None) or getattr(reply, "records", None) or []
            )
            token = reply.next_page_token
            if not token:
                return items

    movements = [
        m
        for m in all_pages(
            internal.ListSettledMovements, payment_internal_pb2.ListSettledMovementsRequest
        )
        if m.payment_id == payment["id"]
    ]
    assert [(m.kind, m.id, m.amount) for m in movements] == [
        ("payment", payment["id"], 3_000),
        ("refund", refund["id"], 700),
    ]
    assert movements[0].fee == 40 and movements[0].merchant_id == shop.id
    assert movements[0].ledger_reference == f"payment:{payment['id']}:capture"
    assert movements[1].ledger_reference == f"refund:{refund['id']}"
    records = [
        r
        for r in all_pages(
            internal.ListProcessorRecords, payment_internal_pb2.ListProcessorRecordsRequest
        )
        if r.payment_id == payment["id"]
    ]
    assert [(r.kind, r.amount, r.refund_id) for r in records] == [
        ("capture", 3_000, ""),
        ("refund", 700, refund["id"]),
    ]
    assert (
        code_of(
            lambda: internal.ListSettledMovements(
                payment_internal_pb2.ListSettledMovementsRequest(page_size=1001), timeout=10
            )
        )
        == grpc.StatusCode.INVALID_ARGUMENT
    )
