"""Refunds through Envoy, and what the worker posts to the ledger for captures and refunds."""

from __future__ import annotations

import time
from typing import Any

import grpc
import httpx
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from paymesh.ledger.v1 import ledger_internal_pb2, ledger_internal_pb2_grpc, ledger_pb2
from paymesh.payment.v1 import payment_internal_pb2, payment_internal_pb2_grpc, payment_pb2
from sqlalchemy import func, select

from services.common.db import transaction
from services.payment.models import ProcessorCharge, ProcessorRefund
from services.runtime.platform import LocalPlatform
from tests.integration.conftest import MerchantKeys
from tests.integration.test_payments import (
    card,
    created,
    event_types,
    paid,
    violations,
    wait_for,
)
from tests.rest_errors import error_code

SETTLE_TIMEOUT_S = 60.0


def refund(
    api: httpx.Client, key: str, *, idempotency_key: str | None = None, **body: Any
) -> httpx.Response:
    """POST /v1/refunds."""
    headers = {"X-API-Key": key}
    if idempotency_key is not None:
        headers["Idempotency-Key"] = idempotency_key
    return api.post("/v1/refunds", json=body, headers=headers)


def wait_refund(api: httpx.Client, key: str, refund_id: str) -> dict[str, Any]:
    """Polls a refund until it is no longer pending."""
    deadline = time.monotonic() + SETTLE_TIMEOUT_S
    while True:
        response = api.get(f"/v1/refunds/{refund_id}", headers={"X-API-Key": key})
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        if body["status"] != "pending":
            return body
        assert time.monotonic() < deadline, f"{refund_id} still pending"
        time.sleep(0.1)


def refunds_of(api: httpx.Client, key: str, payment_id: str) -> list[dict[str, Any]]:
    """The first page of a payment's refunds, newest first."""
    response = api.get("/v1/refunds", params={"payment_id": payment_id}, headers={"X-API-Key": key})
    assert response.status_code == 200, response.text
    refunds: list[dict[str, Any]] = response.json().get("refunds", [])
    return refunds


def ledger_entries(platform: LocalPlatform, source_id: str) -> list[ledger_pb2.Entry]:
    """The ledger's entries caused by a payment or refund, through its internal service."""
    with grpc.insecure_channel(platform.settings.target("ledger")) as channel:
        stub = ledger_internal_pb2_grpc.LedgerInternalServiceStub(channel)
        reply = stub.ListEntries(
            ledger_internal_pb2.ListEntriesRequest(source_id=source_id, page_size=100), timeout=10
        )
        return list(reply.entries)


def test_capture_posts_one_balanced_ledger_transaction(
    api: httpx.Client, merchant: MerchantKeys, platform: LocalPlatform
) -> None:
    payment = paid(api, merchant.secret_key, amount=10_000, currency="EUR")
    assert payment["status"] == "succeeded"
    entries = ledger_entries(platform, payment["id"])
    assert len({entry.transaction_id for entry in entries}) == 1
    debits = sorted(e.amount for e in entries if e.direction == "debit")
    credits = sorted(e.amount for e in entries if e.direction == "credit")
    assert debits == [10_000]
    assert credits == [320, 10_000 - 320]
    assert {e.currency for e in entries} == {"EUR"}


def test_partial_and_repeated_refunds_until_used_up_then_rejected(
    api: httpx.Client, merchant: MerchantKeys, platform: LocalPlatform, sessions
) -> None:  # type: ignore[no-untyped-def]
    payment = paid(api, merchant.secret_key, amount=1000)
    first = refund(
        api, merchant.secret_key, payment_id=payment["id"], amount=300, reason="duplicate"
    )
    assert first.status_code == 200, first.text
    assert first.json()["status"] == "pending"
    assert first.json()["id"].startswith("re_")
    assert first.json()["reason"] == "duplicate"
    assert wait_refund(api, merchant.secret_key, first.json()["id"])["status"] == "succeeded"
    second = refund(api, merchant.secret_key, payment_id=payment["id"], amount=500)
    assert second.status_code == 200, second.text
    over = refund(api, merchant.secret_key, payment_id=payment["id"], amount=201)
    assert over.status_code == 400
    assert error_code(over) == "amount_too_large"
    assert "amount" in violations(over)
    rest = refund(api, merchant.secret_key, payment_id=payment["id"])
    assert rest.status_code == 200, rest.text
    assert rest.json()["amount"] == 200
    for body in (second.json(), rest.json()):
        assert wait_refund(api, merchant.secret_key, body["id"])["status"] == "succeeded"
    nothing_left = refund(api, merchant.secret_key, payment_id=payment["id"], amount=1)
    assert nothing_left.status_code == 400 and error_code(nothing_left) == "amount_too_large"
    final = wait_for(api, merchant.secret_key, payment["id"])
    assert final["amount_refunded"] == 1000
    assert final["status"] == "succeeded"
    with transaction(sessions) as session:
        processor_total = session.scalar(
            select(func.sum(ProcessorRefund.amount)).where(
                ProcessorRefund.payment_id == payment["id"]
            )
        )
    assert processor_total == 1000
    refund_entries = ledger_entries(platform, first.json()["id"])
    assert sorted((e.direction, e.amount) for e in refund_entries) == [
        ("credit", 300),
        ("debit", 300),
    ]
    assert event_types(sessions, first.json()["id"]) == ["refund.succeeded"]


def test_refund__get_and_list_by_payment(
    api: httpx.Client, merchant: MerchantKeys, other_merchant: MerchantKeys
) -> None:
    payment = paid(api, merchant.secret_key, amount=900)
    other_payment = paid(api, merchant.secret_key, amount=900)
    ids = [
        refund(api, merchant.secret_key, payment_id=payment["id"], amount=100).json()["id"]
        for _ in range(3)
    ]
    refund(api, merchant.secret_key, payment_id=other_payment["id"], amount=100)
    listed = api.get(
        "/v1/refunds",
        params={"payment_id": payment["id"], "page_size": 2},
        headers={"X-API-Key": merchant.secret_key},
    ).json()
    assert [r["id"] for r in listed["refunds"]] == list(reversed(ids))[:2]
    rest = api.get(
        "/v1/refunds",
        params={"payment_id": payment["id"], "page_token": listed["next_page_token"]},
        headers={"X-API-Key": merchant.secret_key},
    ).json()
    assert [r["id"] for r in rest["refunds"]] == [ids[0]]
    assert rest["next_page_token"] == ""
    fetched = api.get(f"/v1/refunds/{ids[0]}", headers={"X-API-Key": merchant.secret_key})
    assert fetched.status_code == 200 and fetched.json()["payment_id"] == payment["id"]
    stranger = api.get(f"/v1/refunds/{ids[0]}", headers={"X-API-Key": other_merchant.secret_key})
    assert stranger.status_code == 404 and error_code(stranger) == "refund_not_found"
    foreign_list = api.get(
        "/v1/refunds",
        params={"payment_id": payment["id"]},
        headers={"X-API-Key": other_merchant.secret_key},
    )
    assert foreign_list.status_code == 404
    assert (
        api.get("/v1/refunds/re_nothing", headers={"X-API-Key": merchant.secret_key}).status_code
        == 404
    )


def test_refund__uncaptured_or_failed_payment_is_failed_precondition(
    api: httpx.Client, merchant: MerchantKeys
) -> None:
    manual = paid(api, merchant.secret_key, capture_method="manual")
    declined = created(api, merchant.secret_key, payment_method={"card": card("4000000000000002")})
    wait_for(api, merchant.secret_key, declined["id"])
    waiting = created(api, merchant.secret_key)
    for payment in (manual, declined, waiting):
        response = refund(api, merchant.secret_key, payment_id=payment["id"])
        assert response.status_code == 400, payment["id"]
        assert error_code(response) == "payment_state_invalid"


def test_refund__bad_input_is_400_with_field(api: httpx.Client, merchant: MerchantKeys) -> None:
    payment = paid(api, merchant.secret_key, amount=500)
    cases = [
        ({"amount": 100}, "payment_id"),
        ({"payment_id": payment["id"], "amount": -5}, "amount"),
        ({"payment_id": payment["id"], "amount": 10**12}, "amount"),
        ({"payment_id": payment["id"], "reason": "because"}, "reason"),
    ]
    for body, field in cases:
        response = refund(api, merchant.secret_key, **body)
        assert response.status_code == 400, body
        assert field in violations(response), body
    unknown = refund(api, merchant.secret_key, payment_id="pay_nothing")
    assert unknown.status_code == 404
    assert refunds_of(api, merchant.secret_key, payment["id"]) == []


def test_refund__zero_amount_is_400_and_refunds_nothing(
    api: httpx.Client, merchant: MerchantKeys
) -> None:
    """0 is not "everything": it answers 400 naming `amount`; leaving it out refunds the rest."""
    payment = paid(api, merchant.secret_key, amount=800)
    for body in ({"amount": 0}, {"amount": "0"}):
        zero = refund(
            api,
            merchant.secret_key,
            idempotency_key=f"zero-{body['amount']!r}",
            payment_id=payment["id"],
            **body,
        )
        assert zero.status_code == 400, zero.text
        assert "amount" in violations(zero)
    assert refunds_of(api, merchant.secret_key, payment["id"]) == []
    again = api.get(
        f"/v1/payments/{payment['id']}", headers={"X-API-Key": merchant.secret_key}
    ).json()
    assert again["amount_refunded"] == 0
    rest = refund(api, merchant.secret_key, payment_id=payment["id"])
    assert rest.status_code == 200, rest.text
    assert rest.json()["amount"] == 800


def test_operator_refund__zero_amount_over_grpc_is_invalid_and_absent_refunds_the_rest(
    api: httpx.Client, merchant: MerchantKeys, platform: LocalPlatform
) -> None:
    """The internal CreateOperatorRefund checks presence itself (the admin service is not its
    only possible caller): 0 is INVALID_ARGUMENT naming `amount`, absent refunds what is left."""
    payment = paid(api, merchant.secret_key, amount=900)
    with grpc.insecure_channel(platform.settings.target("payment")) as channel:
        internal = payment_internal_pb2_grpc.PaymentInternalServiceStub(channel)

        def operator_refund(**amount: int) -> payment_pb2.Refund:
            request = payment_internal_pb2.CreateOperatorRefundRequest(
                payment_id=payment["id"],
                reason="requested_by_customer",
                idempotency_key=f"op-{sorted(amount.items())!r}",
                operator_id="op_zero",
                **amount,
            )
            reply: payment_pb2.Refund = internal.CreateOperatorRefund(request, timeout=10)
            return reply

        with pytest.raises(grpc.RpcError) as raised:
            operator_refund(amount=0)
        assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT  # type: ignore[attr-defined]
        status = rpc_status.from_call(raised.value)  # type: ignore[arg-type]
        assert status is not None
        fields = set()
        for detail in status.details:
            bad_request = error_details_pb2.BadRequest()
            if detail.Unpack(bad_request):
                fields |= {violation.field for violation in bad_request.field_violations}
        assert fields == {"amount"}
        assert refunds_of(api, merchant.secret_key, payment["id"]) == []
        rest = operator_refund()
    assert rest.amount == 900


def test_refund__partial_capture_limits_the_refund(
    api: httpx.Client, merchant: MerchantKeys
) -> None:
    payment = paid(api, merchant.secret_key, amount=1000, capture_method="manual")
    api.post(
        f"/v1/payments/{payment['id']}/capture",
        json={"amount_to_capture": 400},
        headers={"X-API-Key": merchant.secret_key},
    )
    wait_for(api, merchant.secret_key, payment["id"], {"succeeded"})
    over = refund(api, merchant.secret_key, payment_id=payment["id"], amount=401)
    assert over.status_code == 400 and error_code(over) == "amount_too_large"
    full = refund(api, merchant.secret_key, payment_id=payment["id"])
    assert full.json()["amount"] == 400


def test_refund__idempotency_key_replays_the_same_refund(
    api: httpx.Client, merchant: MerchantKeys
) -> None:
    payment = paid(api, merchant.secret_key, amount=800)
    first = refund(
        api, merchant.secret_key, idempotency_key="refund-1", payment_id=payment["id"], amount=100
    )
    again = refund(
        api, merchant.secret_key, idempotency_key="refund-1", payment_id=payment["id"], amount=100
    )
    assert first.status_code == again.status_code == 200
    assert again.json() == first.json()
    assert again.headers["idempotent-replayed"] == "true"
    assert "idempotent-replayed" not in first.headers
    different = refund(
        api, merchant.secret_key, idempotency_key="refund-1", payment_id=payment["id"], amount=200
    )
    assert different.status_code == 400 and error_code(different) == "idempotency_key_reused"
    assert len(refunds_of(api, merchant.secret_key, payment["id"])) == 1


def test_refund_declined_by_the_processor_fails_and_frees_the_amount(
    api: httpx.Client, merchant: MerchantKeys, sessions
) -> None:  # type: ignore[no-untyped-def]
    payment = paid(api, merchant.secret_key, amount=600)
    # Behind the service's back, the processor voids the charge: it will refuse refunds.
    with transaction(sessions) as session:
        charge = session.scalars(
            select(ProcessorCharge).where(ProcessorCharge.payment_id == payment["id"])
        ).one()
        charge.status = "voided"
    response = refund(api, merchant.secret_key, payment_id=payment["id"], amount=600)
    assert response.status_code == 200, response.text
    failed = wait_refund(api, merchant.secret_key, response.json()["id"])
    assert failed["status"] == "failed"
    assert failed["failure_code"] == "processor_declined"
    assert event_types(sessions, response.json()["id"]) == ["refund.failed"]
    assert wait_for(api, merchant.secret_key, payment["id"])["amount_refunded"] == 0
    with transaction(sessions) as session:
        charge = session.scalars(
            select(ProcessorCharge).where(ProcessorCharge.payment_id == payment["id"])
        ).one()
        charge.status = "captured"
    again = refund(api, merchant.secret_key, payment_id=payment["id"])
    assert again.status_code == 200 and again.json()["amount"] == 600
    assert wait_refund(api, merchant.secret_key, again.json()["id"])["status"] == "succeeded"
