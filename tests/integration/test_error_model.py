"""One error model (issue 14, point 3): every error a REST client can meet, whoever answers it
(envoy/edge.lua, Envoy itself, the transcoder, a service), has the one shape
`{"error": {"type", "code", "message", "param", "request_id"}}`, with the status and `type`
that docs/errors.md (the error catalog) gives its code; and the request changes nothing."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable

import httpx
import pytest

from services.runtime.platform import LocalPlatform
from tests.integration.conftest import MerchantKeys
from tests.rest_errors import api_error

CARD = {"number": "4242424242424242", "exp_month": 12, "exp_year": 2030, "cvc": "123"}


def _payment_ids(api: httpx.Client, merchant: MerchantKeys) -> list[str]:
    response = api.get(
        "/v1/payments", params={"page_size": 100}, headers={"X-API-Key": merchant.secret_key}
    )
    assert response.status_code == 200, response.text
    return [p["id"] for p in response.json()["payments"]]


# (what is wrong, the request, status, code, param). Each answers before anything is written.
Call = Callable[[httpx.Client, MerchantKeys], httpx.Response]


def _post(path: str, body: bytes, content_type: str = "application/json") -> Call:
    def call(api: httpx.Client, merchant: MerchantKeys) -> httpx.Response:
        headers = {"X-API-Key": merchant.secret_key, "Content-Type": content_type}
        return api.post(path, content=body, headers=headers)

    return call


def _request(method: str, path: str, key: str = "secret", **kwargs: object) -> Call:
    def call(api: httpx.Client, merchant: MerchantKeys) -> httpx.Response:
        keys = {
            "secret": merchant.secret_key,
            "publishable": merchant.publishable_key,
            "malformed": "sk_test_nope",
        }
        headers = {"X-API-Key": keys[key]} if key != "none" else {}
        return api.request(method, path, headers=headers, **kwargs)  # type: ignore[arg-type]

    return call


CASES: list[tuple[str, Call, int, str, str | None]] = [
    ("unknown route", _request("GET", "/v1/nothing"), 404, "route_not_found", None),
    ("wrong method", _request("DELETE", "/v1/payments"), 405, "method_not_allowed", None),
    (
        "form body",
        _post("/v1/payments", b"amount=1", "application/x-www-form-urlencoded"),
        415,
        "unsupported_media_type",
        None,
    ),
    ("malformed JSON", _post("/v1/payments", b'{"amount": 1,}'), 400, "invalid_json", None),
    ("JSON array", _post("/v1/payments", b"[]"), 400, "invalid_parameter_type", None),
    (
        "too large",
        _post("/v1/payments", b'{"description": "' + b"x" * 1_100_000 + b'"}'),
        413,
        "body_too_large",
        None,
    ),
    (
        "unknown body member",
        _post("/v1/payments", b'{"amount": 1, "currency": "USD", "x": 1}'),
        400,
        "unknown_parameter",
        "x",
    ),
    (
        "unknown query parameter",
        _request("GET", "/v1/payments", params={"limit": 1}),
        400,
        "unknown_parameter",
        "limit",
    ),
    (
        "fraction",
        _post("/v1/payments", b'{"amount": 10.5, "currency": "USD"}'),
        400,
        "invalid_parameter_type",
        "amount",
    ),
    (
        "exponent as text",
        _post("/v1/payments", b'{"amount": "1e3", "currency": "USD"}'),
        400,
        "invalid_parameter_type",
        "amount",
    ),
    ("no key", _request("GET", "/v1/payments", key="none"), 401, "unauthenticated", None),
    (
        "malformed key",
        _request("GET", "/v1/payments", key="malformed"),
        401,
        "unauthenticated",
        None,
    ),
    (
        "publishable key",
        _request("GET", "/v1/payments", key="publishable"),
        403,
        "secret_key_required",
        None,
    ),
    (
        "unknown payment",
        _request("GET", "/v1/payments/pay_unknown"),
        404,
        "payment_not_found",
        None,
    ),
    (
        "invalid amount",
        _post("/v1/payments", b'{"amount": 0, "currency": "USD"}'),
        400,
        "invalid_argument",
        "amount",
    ),
    (
        "unknown currency",
        _post("/v1/payments", b'{"amount": 100, "currency": "XXZ"}'),
        400,
        "invalid_argument",
        "currency",
    ),
    (
        "impossible date",
        _request("GET", "/v1/payments", params={"created_gte": "2026-13-45T00:00:00Z"}),
        400,
        "invalid_request",
        None,
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[case[0] for case in CASES])
def test_each_error_path_answers_the_one_shape_and_writes_nothing(
    api: httpx.Client, merchant: MerchantKeys, case: tuple[str, Call, int, str, str | None]
) -> None:
    _, call, status, code, param = case
    before = _payment_ids(api, merchant)
    error = api_error(call(api, merchant), status, code, param=param)
    assert "grpc" not in error["message"].lower()
    assert _payment_ids(api, merchant) == before


def test_a_state_error_and_an_idempotency_error_have_their_types(
    api: httpx.Client, merchant: MerchantKeys
) -> None:
    key = {"X-API-Key": merchant.secret_key}
    body = {"amount": 500, "currency": "USD", "payment_method": {"card": CARD}}
    created = api.post("/v1/payments", json=body, headers={**key, "Idempotency-Key": "err-1"})
    assert created.status_code == 200, created.text
    payment_id = created.json()["id"]

    other = api.post(
        "/v1/payments", json={**body, "amount": 501}, headers={**key, "Idempotency-Key": "err-1"}
    )
    error = api_error(other, 400, "idempotency_key_reused")
    assert error["type"] == "idempotency_error"

    # Captured automatically, so there is nothing to capture by hand.
    deadline = time.monotonic() + 30
    while api.get(f"/v1/payments/{payment_id}", headers=key).json()["status"] == "processing":
        assert time.monotonic() < deadline
        time.sleep(0.1)
    capture = api.post(f"/v1/payments/{payment_id}/capture", json={}, headers=key)
    api_error(capture, 400, "payment_state_invalid")


def test_a_service_that_is_down_answers_503_in_the_shape(
    platform: LocalPlatform, api: httpx.Client, merchant: MerchantKeys
) -> None:
    key = {"X-API-Key": merchant.secret_key}
    platform.kill("ledger", signal.SIGKILL)
    try:
        api_error(api.get("/v1/balance", headers=key), 503, "service_unavailable")
    finally:
        platform.start_process("ledger")
        platform.wait_healthy(timeout_s=60)
    deadline = time.monotonic() + 30
    while api.get("/v1/balance", headers=key).status_code != 200:
        assert time.monotonic() < deadline, "the ledger did not come back"
        time.sleep(0.2)
