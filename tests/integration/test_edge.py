"""The walking skeleton through Envoy: REST and gRPC, auth, limits, health, unknown paths."""

from __future__ import annotations

import grpc
import httpx
from grpc_health.v1 import health_pb2, health_pb2_grpc
from paymesh.ledger.v1 import ledger_internal_pb2, ledger_internal_pb2_grpc
from paymesh.payment.v1 import payment_pb2, payment_pb2_grpc
from sqlalchemy import func, select

from services.admin import merchants
from services.common.db import transaction
from services.common.settings import SERVICE_NAMES
from services.payment.models import Payment
from services.runtime.platform import LocalPlatform
from tests.integration.conftest import MerchantKeys


def _payment_count(sessions) -> int:  # type: ignore[no-untyped-def]
    with transaction(sessions) as session:
        return int(session.scalar(select(func.count()).select_from(Payment)) or 0)


def test_create_then_get_payment(api: httpx.Client, merchant: MerchantKeys) -> None:
    created = api.post(
        "/v1/payments",
        json={"amount": 100, "currency": "INR"},
        headers={"X-API-Key": merchant.secret_key, "Idempotency-Key": "k1"},
    )
    assert created.status_code == 200, created.text
    body = created.json()
    assert body["id"].startswith("pay_")
    assert body["amount"] == "100"
    assert body["currency"] == "INR"
    assert body["status"] == "requires_payment_method"
    assert body["livemode"] is False

    fetched = api.get(
        f"/v1/payments/{body['id']}",
        headers={"Authorization": f"Bearer {merchant.secret_key}"},
    )
    assert fetched.status_code == 200
    assert fetched.json()["id"] == body["id"]
    assert not [name for name in fetched.headers if name.startswith("grpc-")]


def test_legacy_path_creates_a_payment(api: httpx.Client, merchant: MerchantKeys) -> None:
    response = api.post(
        "/payments",
        json={"amount": 250, "currency": "usd"},
        headers={"X-API-Key": merchant.secret_key, "Idempotency-Key": "legacy-1"},
    )
    assert response.status_code == 200, response.text
    assert response.json()["currency"] == "USD"


def test_missing_key_is_401_with_json_and_stores_nothing(api: httpx.Client, sessions) -> None:  # type: ignore[no-untyped-def]
    before = _payment_count(sessions)
    response = api.post("/v1/payments", json={"amount": 100, "currency": "INR"})
    assert response.status_code == 401
    assert response.json()["message"] == "no API key was provided"
    assert not [name for name in response.headers if name.startswith("grpc-")]
    assert _payment_count(sessions) == before


def test_malformed_key_is_401(api: httpx.Client, merchant: MerchantKeys, sessions) -> None:  # type: ignore[no-untyped-def]
    before = _payment_count(sessions)
    tampered = merchant.secret_key[:-1] + ("A" if merchant.secret_key[-1] != "A" else "B")
    for key in ["garbage", "sk_test_short", tampered]:
        response = api.post(
            "/v1/payments", json={"amount": 100, "currency": "INR"}, headers={"X-API-Key": key}
        )
        assert response.status_code == 401, key
        assert response.json()["details"][0]["reason"] == "UNAUTHENTICATED"
    assert _payment_count(sessions) == before


def test_revoked_key_is_401(api: httpx.Client, merchant: MerchantKeys, sessions) -> None:  # type: ignore[no-untyped-def]
    with transaction(sessions) as session:
        issued = merchants.create_api_key(
            session, merchant_id=merchant.id, mode="test", kind="secret"
        )
        merchants.revoke_api_key(session, key_id=issued.api_key.id)
    before = _payment_count(sessions)
    response = api.post(
        "/v1/payments",
        json={"amount": 100, "currency": "INR"},
        headers={"X-API-Key": issued.key},
    )
    assert response.status_code == 401
    assert _payment_count(sessions) == before


def test_publishable_key_cannot_create_payments(api: httpx.Client, merchant: MerchantKeys) -> None:
    response = api.post(
        "/v1/payments",
        json={"amount": 100, "currency": "INR"},
        headers={"X-API-Key": merchant.publishable_key},
    )
    assert response.status_code == 403
    assert response.json()["details"][0]["reason"] == "SECRET_KEY_REQUIRED"


def test_unknown_path_is_404(api: httpx.Client, merchant: MerchantKeys) -> None:
    for method, path in [("GET", "/v1/nothing"), ("POST", "/v2/payments"), ("GET", "/")]:
        response = api.request(method, path, headers={"X-API-Key": merchant.secret_key})
        assert response.status_code == 404, (method, path, response.text)


def test_two_mib_body_is_413_and_stores_nothing(  # type: ignore[no-untyped-def]
    api: httpx.Client, merchant: MerchantKeys, sessions
) -> None:
    before = _payment_count(sessions)
    body = b'{"amount": 100, "currency": "INR", "description": "' + b"x" * (2 << 20) + b'"}'
    response = api.post(
        "/v1/payments",
        content=body,
        headers={"X-API-Key": merchant.secret_key, "Content-Type": "application/json"},
    )
    assert response.status_code == 413
    assert _payment_count(sessions) == before


def test_another_merchants_payment_is_not_found(
    api: httpx.Client, merchant: MerchantKeys, other_merchant: MerchantKeys
) -> None:
    created = api.post(
        "/v1/payments",
        json={"amount": 100, "currency": "EUR"},
        headers={"X-API-Key": merchant.secret_key},
    ).json()
    response = api.get(
        f"/v1/payments/{created['id']}", headers={"X-API-Key": other_merchant.secret_key}
    )
    assert response.status_code == 404
    assert response.json()["details"][0]["reason"] == "PAYMENT_NOT_FOUND"


def test_every_service_answers_health_through_the_edge(platform: LocalPlatform) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{platform.settings.http_port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        for service in SERVICE_NAMES:
            reply = stub.Check(
                health_pb2.HealthCheckRequest(),
                metadata=(("x-paymesh-service", service),),
                timeout=5,
            )
            assert reply.status == health_pb2.HealthCheckResponse.SERVING, service


def test_grpc_clients_reach_public_services_through_the_edge(
    platform: LocalPlatform, merchant: MerchantKeys
) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{platform.settings.http_port}") as channel:
        stub = payment_pb2_grpc.PaymentServiceStub(channel)
        metadata = (("x-api-key", merchant.secret_key),)
        created = stub.CreatePayment(
            payment_pb2.CreatePaymentRequest(amount=500, currency="JPY"),
            metadata=metadata,
            timeout=10,
        )
        fetched = stub.GetPayment(
            payment_pb2.GetPaymentRequest(id=created.id), metadata=metadata, timeout=10
        )
        assert fetched.amount == 500
        assert fetched.currency == "JPY"


def test_internal_services_are_not_routed_by_the_edge(platform: LocalPlatform) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{platform.settings.http_port}") as channel:
        stub = ledger_internal_pb2_grpc.LedgerInternalServiceStub(channel)
        try:
            stub.PostTransaction(ledger_internal_pb2.PostTransactionRequest(), timeout=5)
        except grpc.RpcError as error:
            assert error.code() == grpc.StatusCode.UNIMPLEMENTED  # type: ignore[attr-defined]
        else:
            raise AssertionError("an internal RPC was routed by the edge")
