"""Strict input (issue 14, point 1): a parameter the request does not have, or a value of the
wrong type, answers 400 (REST, envoy/edge.lua) or INVALID_ARGUMENT (gRPC, the server kit) naming
it, and changes nothing."""

from __future__ import annotations

from typing import Any

import grpc
import httpx
import pytest
from google.rpc import error_details_pb2, status_pb2
from paymesh.payment.v1 import payment_pb2

from services.runtime.platform import LocalPlatform
from tests.integration.conftest import MerchantKeys, OperatorLogin
from tests.rest_errors import api_error


def _refused(response: httpx.Response, reason: str, field: str) -> str:
    """The edge refused one parameter, in the REST error shape; returns the message."""
    error = api_error(response, 400, reason.lower(), param=field)
    assert field in error["message"]
    return error["message"]


def _payments(api: httpx.Client, merchant: MerchantKeys) -> list[dict[str, Any]]:
    response = api.get("/v1/payments", headers={"X-API-Key": merchant.secret_key})
    assert response.status_code == 200, response.text
    return list(response.json()["payments"])


CARD = {"number": "4242424242424242", "exp_month": 12, "exp_year": 2030, "cvc": "123"}


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ({"captur_method": "manual"}, "captur_method"),
        ({"payment_method": {"card": {**CARD, "foo": 1}}}, "payment_method.card.foo"),
        ({"payment_method": {"card": CARD, "bank": {}}}, "payment_method.bank"),
        # The path binds no field here, and `id` is not the client's to give.
        ({"id": "pay_mine"}, "id"),
    ],
)
def test_an_unknown_body_field_is_400_naming_it_and_creates_nothing(
    api: httpx.Client, merchant: MerchantKeys, extra: dict[str, Any], field: str
) -> None:
    headers = {"X-API-Key": merchant.secret_key, "Idempotency-Key": "strict-unknown"}
    response = api.post(
        "/v1/payments", json={"amount": 100, "currency": "USD", **extra}, headers=headers
    )
    message = _refused(response, "UNKNOWN_PARAMETER", field)
    assert message == f"unknown parameter: {field}"
    assert _payments(api, merchant) == []
    # Nothing was recorded under the Idempotency-Key: the same key with a valid body creates.
    created = api.post("/v1/payments", json={"amount": 100, "currency": "USD"}, headers=headers)
    assert created.status_code == 200, created.text
    assert created.headers.get("idempotent-replayed") is None
    assert [p["id"] for p in _payments(api, merchant)] == [created.json()["id"]]


@pytest.mark.parametrize("raw", [b"[]", b'"x"', b"1", b"true", b" null "])
def test_a_body_that_is_not_an_object_is_400_and_creates_nothing(
    api: httpx.Client, merchant: MerchantKeys, raw: bytes
) -> None:
    headers = {"X-API-Key": merchant.secret_key, "Content-Type": "application/json"}
    response = api.post("/v1/payments", content=raw, headers=headers)
    # No parameter to name (null too, which the transcoder refused in its own shape).
    error = api_error(response, 400, "invalid_parameter_type")
    assert error["message"] == "the request body must be a JSON object"
    assert _payments(api, merchant) == []


def test_an_empty_parameter_name_is_unknown_not_the_body(
    api: httpx.Client, merchant: MerchantKeys
) -> None:
    key = {"X-API-Key": merchant.secret_key}
    for response in [
        api.post("/v1/payments", json={"amount": 100, "currency": "USD", "": 1}, headers=key),
        api.get("/v1/payments?=1", headers=key),
    ]:
        assert _refused(response, "UNKNOWN_PARAMETER", "") == 'unknown parameter: ""'
    assert _payments(api, merchant) == []


def test_a_body_on_a_get_takes_no_parameters(api: httpx.Client, merchant: MerchantKeys) -> None:
    key = {"X-API-Key": merchant.secret_key, "Content-Type": "application/json"}
    # A GET's parameters are in its query: the same one in a body is unknown.
    response = api.request("GET", "/v1/payments", content=b'{"page_size": 1}', headers=key)
    _refused(response, "UNKNOWN_PARAMETER", "page_size")
    assert api.request("GET", "/v1/payments", content=b"{}", headers=key).status_code == 200


def test_a_body_of_many_members_is_refused_naming_the_first_unknown(
    api: httpx.Client, merchant: MerchantKeys
) -> None:
    key = {"X-API-Key": merchant.secret_key}
    members = {f"k{i}": 0 for i in range(60_000)}  # about 0.8 MB, under the edge's 1 MiB
    response = api.post("/v1/payments", json={"amount": 100, **members}, headers=key)
    _refused(response, "UNKNOWN_PARAMETER", "k0")
    # As many metadata keys pass the edge (a map's keys are data) and the service refuses them.
    body = {"amount": 100, "currency": "USD", "metadata": {k: "" for k in members}}
    response = api.post("/v1/payments", json=body, headers=key)
    api_error(response, 400, "invalid_argument", param="metadata")
    assert _payments(api, merchant) == []


def test_a_path_bound_field_in_the_body_is_400(api: httpx.Client, merchant: MerchantKeys) -> None:
    key = {"X-API-Key": merchant.secret_key}
    payment = api.post("/v1/payments", json={"amount": 100, "currency": "USD"}, headers=key)
    assert payment.status_code == 200, payment.text
    response = api.post(
        f"/v1/payments/{payment.json()['id']}/cancel",
        json={"id": "pay_another", "cancellation_reason": "requested_by_customer"},
        headers=key,
    )
    _refused(response, "UNKNOWN_PARAMETER", "id")
    assert _payments(api, merchant)[0]["status"] == "requires_payment_method"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"amount": "abc", "currency": "USD"}, "amount"),
        ({"amount": 10.5, "currency": "USD"}, "amount"),
        ({"amount": 1e3, "currency": "USD"}, "amount"),
        ({"amount": "1e3", "currency": "USD"}, "amount"),
        ({"amount": 2**63, "currency": "USD"}, "amount"),
        ({"amount": True, "currency": "USD"}, "amount"),
        ({"amount": 100, "currency": {"code": "USD"}}, "currency"),
        ({"amount": 100, "currency": 840}, "currency"),
        ({"amount": 100, "currency": "USD", "metadata": {"order": {"id": 1}}}, "metadata.order"),
        ({"amount": 100, "currency": "USD", "metadata": ["a"]}, "metadata"),
        ({"amount": 100, "currency": "USD", "payment_method": "pm_card"}, "payment_method"),
        (
            {
                "amount": 100,
                "currency": "USD",
                "payment_method": {"card": {**CARD, "exp_month": "x"}},
            },
            "payment_method.card.exp_month",
        ),
        (
            {
                "amount": 100,
                "currency": "USD",
                "paymentMethod": {"card": {"number": "4242424242424242", "expYear": 2**31}},
            },
            "payment_method.card.exp_year",
        ),
    ],
)
def test_a_wrong_type_is_400_naming_the_field_and_creates_nothing(
    api: httpx.Client, merchant: MerchantKeys, body: dict[str, Any], field: str
) -> None:
    response = api.post("/v1/payments", json=body, headers={"X-API-Key": merchant.secret_key})
    _refused(response, "INVALID_PARAMETER_TYPE", field)
    assert _payments(api, merchant) == []


def test_wrong_types_in_other_bodies_name_the_field(
    api: httpx.Client, merchant: MerchantKeys, operator_login: OperatorLogin
) -> None:
    key = {"X-API-Key": merchant.secret_key}
    for body, field in [
        ({"url": "https://example.com/hook", "enabled_events": "*"}, "enabled_events"),
        ({"url": "https://example.com/hook", "enabled_events": ["*", 1]}, "enabled_events[1]"),
        ({"url": ["https://example.com/hook"], "enabled_events": ["*"]}, "url"),
    ]:
        _refused(
            api.post("/v1/webhook_endpoints", json=body, headers=key),
            "INVALID_PARAMETER_TYPE",
            field,
        )
    assert api.get("/v1/webhook_endpoints", headers=key).json()["webhook_endpoints"] == []
    for since in ["yesterday", 1733300000, "2026-12-04"]:
        _refused(
            api.post(
                "/admin/webhooks/replay",
                json={"since": since, "limit": 10},
                headers=operator_login.headers,
            ),
            "INVALID_PARAMETER_TYPE",
            "since",
        )


def test_metadata_keys_and_both_field_spellings_are_still_free(
    api: httpx.Client, merchant: MerchantKeys
) -> None:
    body = {
        "amount": "250",  # protobuf's JSON takes an int64 as a string of digits (protobuf-es)
        "currency": "USD",
        "captureMethod": "manual",
        "return_url": "https://shop.example/done",
        "metadata": {"captur_method": "x", "order.id": "1", "é": "ü"},
        "payment_method": {
            "card": {"number": "4242424242424242", "expMonth": 1, "exp_year": 2030, "cvc": "123"}
        },
        "description": None,
    }
    response = api.post("/v1/payments", json=body, headers={"X-API-Key": merchant.secret_key})
    assert response.status_code == 200, response.text
    created = response.json()
    assert created["capture_method"] == "manual"
    assert created["metadata"] == body["metadata"]


def test_an_unknown_query_parameter_is_400_naming_it(
    api: httpx.Client, merchant: MerchantKeys, operator_login: OperatorLogin
) -> None:
    key = {"X-API-Key": merchant.secret_key}
    for path, params, field in [
        ("/v1/payments", {"limit": "10"}, "limit"),
        ("/v1/payments", {"page_size": "2", "statuss": "succeeded"}, "statuss"),
        ("/v1/refunds", {"payment_id": "pay_x", "payment_id.x": "1"}, "payment_id.x"),
        # A field the path binds is not the query's to give (the transcoder let it win).
        ("/v1/payments/pay_x", {"id": "pay_y"}, "id"),
        ("/v1/webhook_endpoints/we_x/deliveries", {"endpoint_id": "we_y"}, "endpoint_id"),
    ]:
        _refused(api.get(path, params=params, headers=key), "UNKNOWN_PARAMETER", field)
    # A body method takes its parameters in the body only.
    response = api.post(
        "/v1/payments", params={"amount": "100"}, json={"currency": "USD"}, headers=key
    )
    _refused(response, "UNKNOWN_PARAMETER", "amount")
    assert _payments(api, merchant) == []
    _refused(
        api.get("/admin/payments", params={"merchant": "m_x"}, headers=operator_login.headers),
        "UNKNOWN_PARAMETER",
        "merchant",
    )


def test_a_query_parameter_of_the_wrong_type_is_400_naming_it(
    api: httpx.Client, merchant: MerchantKeys, operator_login: OperatorLogin
) -> None:
    key = {"X-API-Key": merchant.secret_key}
    for params, field in [
        ({"page_size": "ten"}, "page_size"),
        ({"page_size": "1.5"}, "page_size"),
        ({"pageSize": "99999999999"}, "pageSize"),
    ]:
        _refused(
            api.get("/v1/payments", params=params, headers=key), "INVALID_PARAMETER_TYPE", field
        )
    for params, field in [
        ({"livemode": "yes"}, "livemode"),
        ({"start_time": "last week"}, "start_time"),
    ]:
        response = api.get("/admin/overview", params=params, headers=operator_login.headers)
        _refused(response, "INVALID_PARAMETER_TYPE", field)


def test_known_query_parameters_in_both_spellings_still_work(
    api: httpx.Client, merchant: MerchantKeys, operator_login: OperatorLogin
) -> None:
    key = {"X-API-Key": merchant.secret_key}
    for params in [{"page_size": "1"}, {"pageSize": "1", "status": "succeeded"}, {}]:
        response = api.get("/v1/payments", params=params, headers=key)
        assert response.status_code == 200, (params, response.text)
    response = api.get(
        "/admin/overview",
        params={
            "livemode": "false",
            "start_time": "2026-01-01T00:00:00Z",
            "endTime": "2026-12-31T23:59:59.5+01:00",
        },
        headers=operator_login.headers,
    )
    assert response.status_code == 200, response.text


def test_grpc_unknown_fields_are_invalid_argument_naming_the_field_number(
    platform: LocalPlatform, merchant: MerchantKeys
) -> None:
    known = payment_pb2.CreatePaymentRequest(
        amount=100, currency="USD", capture_method="manual"
    ).SerializeToString()
    card = payment_pb2.Card(number="4242424242424242", exp_month=12, exp_year=2030, cvc="123")
    # Field 99 (varint 1) at the top; field 15 inside payment_method.card.
    nested = payment_pb2.PaymentMethod(
        card=payment_pb2.Card.FromString(card.SerializeToString() + b"\x78\x01")
    )
    with_nested = known + b"\x1a" + bytes([nested.ByteSize()]) + nested.SerializeToString()
    assert payment_pb2.CreatePaymentRequest.FromString(with_nested).payment_method.card.cvc
    with grpc.insecure_channel(f"127.0.0.1:{platform.settings.http_port}") as channel:
        create = channel.unary_unary(
            "/paymesh.payment.v1.PaymentService/CreatePayment",
            request_serializer=None,
            response_deserializer=payment_pb2.Payment.FromString,
        )
        metadata = (("x-api-key", merchant.secret_key), ("idempotency-key", "grpc-strict"))
        for raw, field in [
            (known + b"\x98\x06\x01", "99"),
            (with_nested, "payment_method.card.15"),
        ]:
            with pytest.raises(grpc.RpcError) as refused:
                create(raw, metadata=metadata, timeout=10)
            error: Any = refused.value
            assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
            details = dict(error.trailing_metadata())["grpc-status-details-bin"]
            status = status_pb2.Status.FromString(details)
            info = error_details_pb2.ErrorInfo()
            assert status.details[0].Unpack(info)
            assert info.reason == "UNKNOWN_PARAMETER"
            bad_request = error_details_pb2.BadRequest()
            assert status.details[1].Unpack(bad_request)
            assert [v.field for v in bad_request.field_violations] == [field]
        # The refusals stored nothing, not even the Idempotency-Key.
        created = create(known, metadata=metadata, timeout=10)
        assert created.capture_method == "manual"
