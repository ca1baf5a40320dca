"""The walking skeleton through Envoy: REST and gRPC, auth, limits, health, unknown paths,
strict JSON bodies and wrong methods."""

from __future__ import annotations

import json
import re
from typing import Any

import grpc
import httpx
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import given, settings
from hypothesis import strategies as st
from paymesh.ledger.v1 import ledger_internal_pb2, ledger_internal_pb2_grpc
from paymesh.payment.v1 import payment_pb2, payment_pb2_grpc
from sqlalchemy import func, select

from services.admin import merchants
from services.common.db import transaction
from services.common.settings import SERVICE_NAMES
from services.payment.models import Payment
from services.runtime.platform import LocalPlatform
from tests.integration.conftest import MerchantKeys
from tests.rest_errors import api_error, error_code


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
    assert body["amount"] == 100
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
    assert response.json()["error"]["message"] == "no API key was provided"
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
        assert error_code(response) == "unauthenticated"
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
    assert error_code(response) == "secret_key_required"


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
    assert error_code(response) == "payment_not_found"


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


# Strict JSON at the edge (envoy/edge.lua) and 405 for a known path asked with another method.


def _listed(api: httpx.Client, merchant: MerchantKeys) -> list[dict[str, Any]]:
    response = api.get("/v1/payments", headers={"X-API-Key": merchant.secret_key})
    assert response.status_code == 200, response.text
    return list(response.json()["payments"])


def _refused(response: httpx.Response, status: int, code: str) -> None:
    """The edge refused the request, in the REST error shape."""
    api_error(response, status, code)


def _post_raw(
    api: httpx.Client, merchant: MerchantKeys, body: bytes, content_type: str | None
) -> httpx.Response:
    headers = {"X-API-Key": merchant.secret_key, "Idempotency-Key": "strict-1"}
    if content_type is not None:  # httpx sends raw content with no Content-Type of its own
        headers["Content-Type"] = content_type
    return api.post("/v1/payments", content=body, headers=headers)


def test_trailing_comma_is_400_and_creates_nothing(
    api: httpx.Client, merchant: MerchantKeys
) -> None:
    for body in [b'{"amount": 100, "currency": "INR",}', b'{"amount": 100, "currency": "INR"},']:
        response = _post_raw(api, merchant, body, "application/json")
        _refused(response, 400, "invalid_json")
    assert _listed(api, merchant) == []


def test_duplicate_member_names_are_400_and_create_nothing(
    api: httpx.Client, merchant: MerchantKeys
) -> None:
    for body in [
        b'{"amount": 100, "amount": 200, "currency": "INR"}',
        # The same name spelt with an escape, and a field's lowerCamel JSON name beside its
        # proto name: protobuf's parser takes each pair as one field and keeps the last value.
        b'{"amount": 100, "\\u0061mount": 200, "currency": "INR"}',
        b'{"amount": 100, "currency": "INR", "capture_method": "manual", "captureMethod": "x"}',
    ]:
        response = _post_raw(api, merchant, body, "application/json")
        _refused(response, 400, "invalid_json")
        assert "duplicate member name" in response.json()["error"]["message"]
    assert _listed(api, merchant) == []

    # The refused requests recorded nothing under their Idempotency-Key either.
    created = _post_raw(api, merchant, b'{"amount": 100, "currency": "INR"}', "application/json")
    assert created.status_code == 200, created.text
    assert [p["amount"] for p in _listed(api, merchant)] == [100]


def test_a_body_sent_as_another_type_than_json_is_415(
    api: httpx.Client, merchant: MerchantKeys
) -> None:
    body = b'{"amount": 100, "currency": "INR"}'
    # text/plain, and the form type curl -d sends when no Content-Type is given.
    for refused_type in ["text/plain", "application/x-www-form-urlencoded"]:
        response = _post_raw(api, merchant, body, refused_type)
        _refused(response, 415, "unsupported_media_type")
        assert "application/json" in response.json()["error"]["message"]
    assert _listed(api, merchant) == []

    # JSON with parameters, and a body with no Content-Type at all, are taken as JSON.
    for content_type in ["application/json; charset=utf-8", None]:
        response = _post_raw(api, merchant, body, content_type)
        assert response.status_code == 200, (content_type, response.text)
    # A POST without a body needs no Content-Type (capture, cancel...).
    payment_id = _listed(api, merchant)[0]["id"]
    cancelled = api.post(
        f"/v1/payments/{payment_id}/cancel", headers={"X-API-Key": merchant.secret_key}
    )
    assert cancelled.status_code == 200, cancelled.text


def test_a_known_path_with_another_method_is_405_with_allow(
    api: httpx.Client, merchant: MerchantKeys
) -> None:
    key = {"X-API-Key": merchant.secret_key}
    for method, path, allow in [
        ("DELETE", "/v1/payments", "GET, POST"),
        ("PUT", "/v1/payments", "GET, POST"),
        ("GET", "/v1/payments/pay_x/capture", "POST"),
        ("POST", "/v1/payments/pay_x", "GET"),
        ("PUT", "/v1/webhook_endpoints/we_x", "DELETE, GET, PATCH"),
        ("GET", "/admin/login", "POST"),
    ]:
        # The method is at fault whatever the body: 405 before any body check.
        response = api.request(
            method, path, content=b"{,", headers={**key, "Content-Type": "text/plain"}
        )
        _refused(response, 405, "method_not_allowed")
        assert response.headers["allow"] == allow, (method, path)
    assert _listed(api, merchant) == []
    assert api.get("/v1/payments/pay_x/nothing", headers=key).status_code == 404


# Bodies the edge must accept or refuse exactly as a strict parser does.
JSON_CASES = [
    b"{}",
    b"[]",
    b" \t\r\n{ } \n",
    b'{"a": [1, -0, 0.5, -1.5e10, 2E+3, 3e-2, true, false, null, "x", {}, []]}',
    b'{"s": "\\" \\\\ \\/ \\b \\f \\n \\r \\t \\u00e9 \\ud83d\\ude00 \\ud800"}',
    '{"é": "ü €😀"}'.encode(),
    b'{"a": {"a": {"a": 1}}, "b": [{"a": 1}, {"a": 2}]}',
    b'{"a": 1, "A": 2, "a_": 3}',
    b"123",
    b'"text"',
    b"null",
    b" ",
    b"{",
    b"}",
    b"[1,]",
    b"[,1]",
    b"[1 2]",
    b'{"a" 1}',
    b'{"a": 1 "b": 2}',
    b'{"a": 1,,"b": 2}',
    b"{'a': 1}",
    b"{a: 1}",
    b'{"a": 01}',
    b'{"a": 1.}',
    b'{"a": .5}',
    b'{"a": +1}',
    b'{"a": 1e}',
    b'{"a": 1e+}',
    b'{"a": -}',
    b'{"a": 0x10}',
    b'{"a": NaN}',
    b'{"a": Infinity}',
    b'{"a": -Infinity}',
    b'{"a": tru}',
    b'{"a": True}',
    b'{"a": nul}',
    b'{"a": "\\x41"}',
    b'{"a": "\\u12"}',
    b'{"a": "\\uZZZZ"}',
    b'{"a": "tab\there"}',
    b'{"a": "nl\nhere"}',
    b'{"a": "nul\x00here"}',
    b'{"a": "unterminated}',
    b'{"a": 1}}',
    b'{"a": 1} {"b": 2}',
    b'{"a": 1}x',
    b"\xef\xbb\xbf{}",
    b'{"a": "\xff"}',
    b'{"a": "\xc3"}',
    b'{"a": "\xc0\xaf"}',
    b'{"a": "\xed\xa0\x80"}',
    b'{"a": "\xf4\x90\x80\x80"}',
    b'{"a": 1, "a": 1}',
    b'{"a": {"b": 1, "b": 2}}',
    b'[{"a": 1}, {"a": 1, "a": 2}]',
    b'{"\\u0061": 1, "a": 2}',
    b'{"\\ud83d\\ude00": 1, "\xf0\x9f\x98\x80": 2}',
    b'{"ab_cd": 1, "abCd": 2}',
    b"[" * 64 + b"]" * 64,
]


def _strict_json(raw: bytes) -> bool:
    """Whether `raw` is RFC 8259 JSON, in UTF-8, naming each member once as protobuf reads it."""

    def constant(name: str) -> None:
        raise ValueError(name)

    def members(pairs: list[tuple[str, Any]]) -> None:
        names = [re.sub("_(.)", lambda m: m.group(1).upper(), name) for name, _ in pairs]
        if len(set(names)) != len(names):
            raise ValueError("duplicate member name")

    try:
        json.loads(raw.decode("utf-8"), parse_constant=constant, object_pairs_hook=members)
    except ValueError:  # UnicodeDecodeError and json.JSONDecodeError too
        return False
    return True


def _refused_as_invalid_json(api: httpx.Client, raw: bytes) -> bool:
    # No API key: a body that passes the edge ends in the transcoder's or the service's error.
    response = api.post("/v1/payments", content=raw, headers={"Content-Type": "application/json"})
    assert response.status_code in (400, 401), (raw, response.text)
    return error_code(response) == "invalid_json"


def test_body_checks_agree_with_a_strict_json_parser(api: httpx.Client) -> None:
    disagreements = [
        raw for raw in JSON_CASES if _refused_as_invalid_json(api, raw) == _strict_json(raw)
    ]
    assert disagreements == []
    assert _refused_as_invalid_json(api, b"[" * 65 + b"]" * 65)  # nested too deeply


VALID_BODY = b'{"amount": 100, "currency": "INR", "metadata": {"k": "v\\u00e9"}, "x": [1.5e3]}'


@settings(max_examples=300, deadline=None, database=None, derandomize=True)
@given(
    position=st.integers(0, len(VALID_BODY)),
    removed=st.integers(0, 2),
    inserted=st.sampled_from([b"", b",", b'"', b"\\", b"}", b"]", b"1", b"-", b"\x80", b" "]),
)
def test_body_checks_agree_with_a_strict_json_parser_on_mutated_bodies(
    platform: LocalPlatform, position: int, removed: int, inserted: bytes
) -> None:
    raw = VALID_BODY[:position] + inserted + VALID_BODY[position + removed :]
    with httpx.Client(base_url=platform.base_url, timeout=30) as api:
        assert _refused_as_invalid_json(api, raw) != _strict_json(raw), raw


def test_a_full_page_of_the_largest_payments_is_listed_with_numbers(
    api: httpx.Client, merchant: MerchantKeys
) -> None:
    """The edge holds a REST response whole to print its 64-bit integers as numbers: a page of
    100 payments with the most metadata the API takes, quotes doubled by JSON escaping, still
    comes back (its limit is the listener's buffer, envoy/envoy.yaml.tmpl)."""
    key = {"X-API-Key": merchant.secret_key}
    metadata = {f"k{i:02d}" + "x" * 37: '"' * 500 for i in range(50)}
    body = {"amount": 4321, "currency": "USD", "metadata": metadata, "description": '"' * 1000}
    for _ in range(100):
        created = api.post("/v1/payments", json=body, headers=key)
        assert created.status_code == 200, created.text[:300]
    page = api.get("/v1/payments", params={"page_size": 100}, headers=key)
    assert page.status_code == 200, page.text[:300]
    assert len(page.content) > 5_000_000
    payments = page.json()["payments"]
    assert len(payments) == 100
    assert {p["amount"] for p in payments} == {4321}
    assert all(p["metadata"] == metadata for p in payments)


def test_a_header_gRPC_cannot_carry_is_dropped_not_a_500(
    api: httpx.Client, merchant: MerchantKeys
) -> None:
    """HTTP allows `$`, `#`, `^` in header names; gRPC metadata does not, and the services'
    server would reset the call. envoy/edge.lua drops such headers (schemathesis found them)."""
    headers = {"X-API-Key": merchant.secret_key, "RC$tH99*": "x", "a#b": "y", "c^d": "z"}
    response = api.get("/v1/payments", headers=headers)
    assert response.status_code == 200, response.text
    created = api.post("/v1/payments", json={"amount": 100, "currency": "USD"}, headers=headers)
    assert created.status_code == 200, created.text
    assert created.json()["amount"] == 100
