"""Bad input to the payment API: 4xx with the field at fault, and nothing stored."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from services.common.money import AMOUNT_MAX
from tests.integration.conftest import MerchantKeys
from tests.integration.test_payments import card, create_payment, payment_count
from tests.rest_errors import api_error

NOW = datetime.now(UTC)

BAD_CREATES: list[tuple[str, dict[str, Any], str]] = [
    ("zero amount", {"amount": 0}, "amount"),
    ("negative amount", {"amount": -1}, "amount"),
    ("huge amount", {"amount": AMOUNT_MAX + 1}, "amount"),
    ("unknown currency", {"currency": "XYZ"}, "currency"),
    ("empty currency", {"currency": ""}, "currency"),
    ("capture method", {"capture_method": "later"}, "capture_method"),
    ("long description", {"description": "x" * 1001}, "description"),
    ("too many metadata keys", {"metadata": {f"k{i}": "v" for i in range(51)}}, "metadata"),
    ("long metadata key", {"metadata": {"k" * 41: "v"}}, "metadata." + "k" * 40),
    ("long metadata value", {"metadata": {"k": "v" * 501}}, "metadata.k"),
    ("ftp return url", {"return_url": "ftp://shop.example/back"}, "return_url"),
    ("relative return url", {"return_url": "/back"}, "return_url"),
    ("script return url", {"return_url": "javascript:alert(1)"}, "return_url"),
    (
        "luhn failure",
        {"payment_method": {"card": card("4242424242424241")}},
        "payment_method.card.number",
    ),
    (
        "letters in number",
        {"payment_method": {"card": card("4242abcd42424242")}},
        "payment_method.card.number",
    ),
    ("short number", {"payment_method": {"card": card("4242")}}, "payment_method.card.number"),
    (
        "expired last year",
        {"payment_method": {"card": card(exp_year=NOW.year - 1)}},
        "payment_method.card.exp_year",
    ),
    (
        "month 13",
        {"payment_method": {"card": card(exp_month=13)}},
        "payment_method.card.exp_month",
    ),
    ("two-digit cvc", {"payment_method": {"card": card(cvc="12")}}, "payment_method.card.cvc"),
    ("five-digit cvc", {"payment_method": {"card": card(cvc="12345")}}, "payment_method.card.cvc"),
    ("letters cvc", {"payment_method": {"card": card(cvc="abc")}}, "payment_method.card.cvc"),
    ("no card", {"payment_method": {}}, "payment_method.card"),
]
if NOW.month > 1:
    BAD_CREATES.append(
        (
            "expired earlier this year",
            {"payment_method": {"card": card(exp_year=NOW.year, exp_month=NOW.month - 1)}},
            "payment_method.card.exp_month",
        )
    )


@pytest.mark.parametrize(
    ("overrides", "field"),
    [(case[1], case[2]) for case in BAD_CREATES],
    ids=[case[0] for case in BAD_CREATES],
)
def test_bad_create__400_with_field_violation_and_no_row(
    api: httpx.Client, merchant: MerchantKeys, sessions, overrides: dict[str, Any], field: str
) -> None:  # type: ignore[no-untyped-def]
    response = create_payment(api, merchant.secret_key, idempotency_key="bad", **overrides)
    error = api_error(response, 400, "invalid_argument", param=field)
    assert field in error["message"]
    assert payment_count(sessions, merchant.id) == 0


def test_missing_amount_and_currency_are_both_reported(
    api: httpx.Client, merchant: MerchantKeys, sessions
) -> None:  # type: ignore[no-untyped-def]
    response = api.post("/v1/payments", json={}, headers={"X-API-Key": merchant.secret_key})
    error = api_error(response, 400, "invalid_argument", param="amount")
    assert "amount: " in error["message"]
    assert "currency: " in error["message"]
    assert payment_count(sessions, merchant.id) == 0


@pytest.mark.parametrize(
    "raw",
    [
        b'{"amount": 100, "currency": "USD"',
        b'{"amount": "abc", "currency": "USD"}',
        b'{"amount": 100000000000000000000000, "currency": "USD"}',
        b'{"amount": 100, "currency": 5}',
        b'{"amount": 100, "currency": "USD", "metadata": ["a"]}',
        b"[1, 2, 3]",
        b"not json",
    ],
)
def test_malformed_json_and_wrong_types_are_400_and_store_nothing(
    api: httpx.Client, merchant: MerchantKeys, sessions, raw: bytes
) -> None:  # type: ignore[no-untyped-def]
    response = api.post(
        "/v1/payments",
        content=raw,
        headers={"X-API-Key": merchant.secret_key, "Content-Type": "application/json"},
    )
    assert response.status_code == 400, response.text
    assert payment_count(sessions, merchant.id) == 0


def test_accepted_edges(api: httpx.Client, merchant: MerchantKeys, sessions) -> None:  # type: ignore[no-untyped-def]
    response = create_payment(
        api,
        merchant.secret_key,
        amount=AMOUNT_MAX,
        currency="jpy",
        description="x" * 1000,
        metadata={f"{i:0>40}": "v" * 500 for i in range(50)},
        return_url="http://localhost:4200/done?x=1",
        payment_method={"card": card(cvc="1234", exp_year=NOW.year, exp_month=NOW.month)},
    )
    assert response.status_code == 200, response.text
    assert response.json()["currency"] == "JPY"
    assert payment_count(sessions, merchant.id) == 1
