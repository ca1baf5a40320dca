"""Versioning (issue 14, point 8): a merchant's calls are served under its pinned API version
unless a request asks for another with `Paymesh-Version`; the version is echoed in the
response; an unknown version is refused (400 naming the header) and nothing is written."""

from __future__ import annotations

import grpc
import httpx
from paymesh.payment.v1 import payment_pb2, payment_pb2_grpc

from services.common.versions import LATEST, VERSIONS
from services.runtime.platform import LocalPlatform
from tests.integration.conftest import MerchantKeys, OperatorLogin
from tests.rest_errors import api_error


def test_the_merchants_version_is_the_default_and_a_request_may_name_one(
    api: httpx.Client, merchant: MerchantKeys
) -> None:
    key = {"X-API-Key": merchant.secret_key}
    default = api.get("/v1/payments", headers=key)
    assert default.status_code == 200
    assert default.headers["paymesh-version"] == LATEST
    for version in VERSIONS:
        asked = api.get("/v1/payments", headers={**key, "Paymesh-Version": version})
        assert asked.status_code == 200
        assert asked.headers["paymesh-version"] == version
    # An error is served under the version too.
    missing = api.get("/v1/payments/pay_missing", headers=key)
    api_error(missing, 404, "payment_not_found")
    assert missing.headers["paymesh-version"] == LATEST


def test_an_unknown_version_is_400_and_writes_nothing(
    api: httpx.Client, merchant: MerchantKeys
) -> None:
    key = {"X-API-Key": merchant.secret_key}
    for version in ("2020-01-01", "latest", ""):
        refused = api.post(
            "/v1/payments",
            json={"amount": 100, "currency": "USD"},
            headers={**key, "Paymesh-Version": version},
        )
        error = api_error(refused, 400, "api_version_unknown", param="Paymesh-Version")
        assert LATEST in error["message"]
    assert api.get("/v1/payments", headers=key).json()["payments"] == []


def test_grpc_callers_get_the_version_in_the_initial_metadata(
    platform: LocalPlatform, merchant: MerchantKeys
) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{platform.settings.http_port}") as channel:
        stub = payment_pb2_grpc.PaymentServiceStub(channel)
        _, call = stub.ListPayments.with_call(
            payment_pb2.ListPaymentsRequest(),
            metadata=(("x-api-key", merchant.secret_key),),
            timeout=10,
        )
    assert ("paymesh-version", LATEST) in tuple(call.initial_metadata())


def test_operators_see_each_merchants_version(
    api: httpx.Client, merchant: MerchantKeys, operator_login: OperatorLogin
) -> None:
    shown = api.get(f"/admin/merchants/{merchant.id}", headers=operator_login.headers)
    assert shown.status_code == 200, shown.text
    assert shown.json()["api_version"] == LATEST
