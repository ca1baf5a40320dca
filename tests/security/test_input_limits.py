"""Hostile input through the edge: every limit answers 4xx and nothing is stored."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from services.common.db import transaction
from services.payment.models import IdempotencyKey, Payment, Refund
from tests.integration.conftest import MerchantKeys
from tests.integration.test_payments import card, created, wait_for
from tests.rest_errors import error_code
from tests.security.contracts import RestMethod, merchant_methods

INT64_MAX = 2**63 - 1
AMOUNTS = [
    "0",
    "-1",
    "-9223372036854775808",
    str(INT64_MAX),  # representable, but beyond any currency's maximum
    str(INT64_MAX + 1),
    str(10**30),
    "1.5",
    "1e3",
    "NaN",
    "",
    True,
    None,
    [],
]
CURRENCIES = ["ZZZ", "QQQ", "US", "USDD", "", "€€€", "U$D", 840]
LIST_METHODS = [m for m in merchant_methods() if any(f.name == "page_size" for f in m.fields)]
PAGE_SIZES = [1_000_000, 2**31, -1]


def stored(sessions: sessionmaker[Session], merchant_id: str) -> tuple[int, int, int]:
    """How many payments, refunds and idempotency records the merchant has."""
    with transaction(sessions) as session:
        counts = [
            session.scalar(
                select(func.count()).select_from(model).where(model.merchant_id == merchant_id)
            )
            for model in (Payment, Refund, IdempotencyKey)
        ]
    return counts[0] or 0, counts[1] or 0, counts[2] or 0


def post(api: httpx.Client, key: str, path: str, body: Any, **headers: str) -> httpx.Response:
    """POSTs a JSON value (or raw bytes) with a key and an Idempotency-Key."""
    sent = {"X-API-Key": key, "Idempotency-Key": "limits", **headers}
    if isinstance(body, bytes):
        sent["Content-Type"] = "application/json"
        return api.post(path, content=body, headers=sent)
    return api.post(path, json=body, headers=sent)


def assert_refused(response: httpx.Response, *statuses: int) -> None:
    """A 4xx (one of `statuses` when given) with an error body in the one shape."""
    allowed = statuses or tuple(range(400, 500))
    assert response.status_code in allowed, (response.status_code, response.text)
    error_code(response)


@pytest.mark.parametrize("amount", AMOUNTS, ids=repr)
def test_payment_amounts__out_of_range_or_wrong_type_are_400_and_nothing_stored(
    api: httpx.Client, sessions: sessionmaker[Session], merchant: MerchantKeys, amount: Any
) -> None:
    response = post(api, merchant.secret_key, "/v1/payments", {"amount": amount, "currency": "USD"})
    assert_refused(response, 400)
    assert stored(sessions, merchant.id) == (0, 0, 0)


@pytest.mark.parametrize("currency", CURRENCIES, ids=repr)
def test_payment_currencies__unknown_are_400_and_nothing_stored(
    api: httpx.Client, sessions: sessionmaker[Session], merchant: MerchantKeys, currency: Any
) -> None:
    response = post(
        api, merchant.secret_key, "/v1/payments", {"amount": "100", "currency": currency}
    )
    assert_refused(response, 400)
    assert stored(sessions, merchant.id) == (0, 0, 0)


def test_refund_and_capture_amounts__beyond_the_payment_or_int64_are_4xx(
    api: httpx.Client, sessions: sessionmaker[Session], merchant: MerchantKeys
) -> None:
    held = created(
        api, merchant.secret_key, capture_method="manual", payment_method={"card": card()}
    )
    wait_for(api, merchant.secret_key, held["id"], {"requires_capture"})
    paid = created(api, merchant.secret_key, payment_method={"card": card()})
    wait_for(api, merchant.secret_key, paid["id"], {"succeeded"})
    before = stored(sessions, merchant.id)
    # Zero is proto3's "not set" here: the whole remaining amount, as the API documents.
    for amount in ["-1", str(INT64_MAX), str(INT64_MAX + 1), "1001", "abc", "1.5"]:
        refund = post(
            api,
            merchant.secret_key,
            "/v1/refunds",
            {"payment_id": paid["id"], "amount": amount},
            **{"Idempotency-Key": f"refund-{amount}"},
        )
        assert_refused(refund)
        capture = post(
            api,
            merchant.secret_key,
            f"/v1/payments/{held['id']}/capture",
            {"amount_to_capture": amount},
            **{"Idempotency-Key": f"capture-{amount}"},
        )
        assert_refused(capture)
    assert stored(sessions, merchant.id) == before
    assert wait_for(api, merchant.secret_key, held["id"])["status"] == "requires_capture"


def test_oversized_body__is_413_at_the_edge(
    api: httpx.Client, sessions: sessionmaker[Session], merchant: MerchantKeys
) -> None:
    body = json.dumps(
        {"amount": "100", "currency": "USD", "description": "x" * (2 * 1024 * 1024)}
    ).encode()
    assert_refused(post(api, merchant.secret_key, "/v1/payments", body), 413)
    assert stored(sessions, merchant.id) == (0, 0, 0)


@pytest.mark.parametrize("depth", [64, 5_000])
def test_deep_json__is_400_and_nothing_stored(
    api: httpx.Client, sessions: sessionmaker[Session], merchant: MerchantKeys, depth: int
) -> None:
    nested = '{"a":' * depth + '"x"' + "}" * depth
    bodies = [
        f'{{"amount": "100", "currency": "USD", "metadata": {nested}}}',
        f'{{"amount": "100", "currency": "USD", "payment_method": {nested}}}',
        "[" * depth + "]" * depth,
    ]
    for body in bodies:
        assert_refused(post(api, merchant.secret_key, "/v1/payments", body.encode()), 400)
    assert stored(sessions, merchant.id) == (0, 0, 0)


@pytest.mark.parametrize(
    "metadata",
    [
        {"note": "x" * 100_000},
        {"k" * 10_000: "v"},
        {f"key{index}": "v" for index in range(1_000)},
        {"": "empty key"},
        {"nested": {"not": "a string"}},
        {"list": ["a"]},
    ],
    ids=["huge value", "huge key", "too many keys", "empty key", "object value", "list value"],
)
def test_metadata__huge_or_malformed_is_400_and_nothing_stored(
    api: httpx.Client,
    sessions: sessionmaker[Session],
    merchant: MerchantKeys,
    metadata: dict[str, Any],
) -> None:
    response = post(
        api,
        merchant.secret_key,
        "/v1/payments",
        {"amount": "100", "currency": "USD", "metadata": metadata},
    )
    assert_refused(response, 400)
    assert stored(sessions, merchant.id) == (0, 0, 0)


def test_malformed_json_and_wrong_types__are_400(
    api: httpx.Client, sessions: sessionmaker[Session], merchant: MerchantKeys
) -> None:
    for body in [b"{", b"null", b'"text"', b"[]", b'{"amount": }', b"\xff\xfe", b'{"amount": {}}']:
        assert_refused(post(api, merchant.secret_key, "/v1/payments", body), 400)
    assert stored(sessions, merchant.id) == (0, 0, 0)


@pytest.mark.parametrize("method", LIST_METHODS, ids=lambda m: m.name)
def test_page_sizes__over_the_maximum_or_negative_are_400(
    api: httpx.Client, merchant: MerchantKeys, method: RestMethod
) -> None:
    assert len(LIST_METHODS) >= 5
    path = method.url({name: "xyz_doesnotexist" for name in method.path_params})
    for page_size in PAGE_SIZES:
        response = api.get(
            path, params={"page_size": page_size}, headers={"X-API-Key": merchant.secret_key}
        )
        assert response.status_code in (400, 404), (page_size, response.text)
        if not method.path_params:
            assert response.status_code == 400, (page_size, response.text)
