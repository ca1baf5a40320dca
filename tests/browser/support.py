"""Arranging browser tests through the API: payments, operators, and waiting for outcomes."""

from __future__ import annotations

import math
import re
import secrets
import time
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import httpx
from playwright.sync_api import Page, expect

from tests.conftest import MerchantKeys, OperatorLogin

VISA_OK = "4242424242424242"
MASTERCARD_OK = "5555555555554444"
DECLINED = "4000000000000002"
# The card network disputes a payment by this card as fraudulent soon after it succeeds.
DISPUTED = "4000000000000259"
# ...and by this one as an inquiry, which moves no money: the payment may still be refunded.
INQUIRY = "4000000000001976"
FINAL = {"succeeded", "failed", "requires_capture", "canceled"}


def create_payment(
    api: httpx.Client,
    merchant: MerchantKeys,
    *,
    amount: int,
    currency: str,
    card: str | None = None,
    return_url: str = "",
    description: str = "",
    customer: str = "",
    setup_future_usage: str = "",
) -> dict[str, Any]:
    """Creates a payment (confirmed at once when `card` is given); returns its JSON."""
    body: dict[str, Any] = {"amount": amount, "currency": currency}
    if customer:
        body["customer"] = customer
    if setup_future_usage:
        body["setup_future_usage"] = setup_future_usage
    if card:
        body["payment_method"] = {
            "card": {"number": card, "exp_month": 12, "exp_year": 2034, "cvc": "123"}
        }
    if return_url:
        body["return_url"] = return_url
    if description:
        body["description"] = description
    response = api.post(
        "/v1/payments",
        headers={"X-API-Key": merchant.secret_key, "Idempotency-Key": secrets.token_hex(8)},
        json=body,
    )
    assert response.status_code == 200, response.text
    created: dict[str, Any] = response.json()
    return created


def returning_customer(
    api: httpx.Client, merchant: MerchantKeys, *, cards: list[str]
) -> tuple[str, list[str]]:
    """(a new customer's id, its saved payment methods' ids, oldest first): each card paid for
    once with setup_future_usage, as a returning customer's earlier purchases would (each card
    is attached once its payment succeeded)."""
    response = api.post(
        "/v1/customers",
        headers={"X-API-Key": merchant.secret_key, "Idempotency-Key": secrets.token_hex(8)},
        json={"email": "returning@example.com"},
    )
    assert response.status_code == 200, response.text
    customer_id: str = response.json()["id"]
    methods = []
    for number in cards:
        paid = create_payment(
            api,
            merchant,
            amount=500,
            currency="EUR",
            card=number,
            customer=customer_id,
            setup_future_usage="off_session",
        )
        assert wait_final(api, merchant, paid["id"])["status"] == "succeeded"
        methods.append(paid["payment_method"])
    return customer_id, methods


def get_payment(api: httpx.Client, merchant: MerchantKeys, payment_id: str) -> dict[str, Any]:
    """The payment as its merchant sees it."""
    response = api.get(f"/v1/payments/{payment_id}", headers={"X-API-Key": merchant.secret_key})
    assert response.status_code == 200, response.text
    found: dict[str, Any] = response.json()
    return found


def wait_final(
    api: httpx.Client, merchant: MerchantKeys, payment_id: str, *, timeout_s: float = 30
) -> dict[str, Any]:
    """Polls the payment until it leaves processing."""
    deadline = time.monotonic() + timeout_s
    while True:
        payment = get_payment(api, merchant, payment_id)
        if payment["status"] in FINAL:
            return payment
        if time.monotonic() > deadline:
            raise AssertionError(f"{payment_id} still {payment['status']} after {timeout_s}s")
        time.sleep(0.2)


def wait_until_refunded(
    api: httpx.Client, merchant: MerchantKeys, payment_id: str, amount: int
) -> int:
    """Polls the payment until its refunded amount reaches `amount`; returns it."""
    deadline = time.monotonic() + 30
    while True:
        response = api.get(f"/v1/payments/{payment_id}", headers={"X-API-Key": merchant.secret_key})
        refunded = int(response.json()["amount_refunded"])
        if refunded >= amount or time.monotonic() > deadline:
            return refunded
        time.sleep(0.3)


def wait_dispute(
    api: httpx.Client, merchant: MerchantKeys, payment_id: str, *, timeout_s: float = 60
) -> dict[str, Any]:
    """Polls the merchant's disputes of the payment until the network filed one; returns it."""
    deadline = time.monotonic() + timeout_s
    while True:
        response = api.get(
            "/v1/disputes",
            params={"payment_id": payment_id},
            headers={"X-API-Key": merchant.secret_key},
        )
        assert response.status_code == 200, response.text
        disputes: list[dict[str, Any]] = response.json().get("disputes", [])
        if disputes:
            return disputes[0]
        if time.monotonic() > deadline:
            raise AssertionError(f"no dispute of {payment_id} after {timeout_s}s")
        time.sleep(0.2)


def money_text(page: Page, minor: int, currency: str, digits: int) -> str:
    """How the browser's Intl formats an amount, the way the dashboards must show it."""
    decimal = f"{minor / 10**digits:.{digits}f}"
    formatted: str = page.evaluate(
        "([value, currency]) => new Intl.NumberFormat(undefined,"
        " {style: 'currency', currency}).format(value)",
        [decimal, currency],
    )
    return formatted


def time_text(page: Page, rfc3339: str) -> str:
    """How the browser shows a timestamp from the API (the apps' `time` pipe).

    The pipe's date rounds the nanoseconds to the nearest millisecond (@bufbuild/protobuf's
    `timestampMs`, Math.round), where `new Date(rfc3339)` would cut them: .9996 s shows as the
    next second.
    """
    assert rfc3339.endswith("Z"), rfc3339
    whole, _, fraction = rfc3339.removesuffix("Z").partition(".")
    seconds = int(datetime.fromisoformat(whole).replace(tzinfo=UTC).timestamp())
    nanos = int(fraction.ljust(9, "0")[:9]) if fraction else 0
    ms = seconds * 1000 + math.floor(nanos / 1_000_000 + 0.5)
    formatted: str = page.evaluate(
        "(ms) => new Date(ms).toLocaleString(undefined,"
        " {dateStyle: 'medium', timeStyle: 'medium'})",
        ms,
    )
    return formatted


def checkout_path(payment: dict[str, Any]) -> str:
    """The path and query of a payment's hosted checkout link (the host is the edge's)."""
    url = urlsplit(payment["checkout_url"])
    assert url.path.startswith("/checkout/pay_"), payment["checkout_url"]
    assert "client_secret=" in url.query
    return f"{url.path}?{url.query}"


def fill_card(page: Page, number: str, expiry: str = "12 / 34", cvc: str = "123") -> None:
    """Types a card into the checkout form, as a customer would."""
    page.get_by_label("Card number").fill("")
    page.get_by_label("Card number").press_sequentially(number)
    page.get_by_label("Expiry (MM / YY)").fill("")
    page.get_by_label("Expiry (MM / YY)").press_sequentially(expiry.replace(" / ", ""))
    page.get_by_label("Security code (CVC)").fill(cvc)


def sign_in(page: Page, email: str, password: str, path: str = "/dashboard/overview") -> None:
    """Opens a dashboard page, signs in when asked, and waits to be back on that page.

    The session lives in the page's memory only, so every page load asks to sign in again.
    """
    page.goto(path)
    expect(page).to_have_url(re.compile(r"/dashboard/login"))
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(re.compile(re.escape(path.split("?", maxsplit=1)[0]) + r"(\?|$)"))


def invite_user(api: httpx.Client, operator: OperatorLogin, merchant_id: str, role: str) -> Any:
    """An operator's invitation through the API: its JSON, with the only copy of the link."""
    response = api.post(
        f"/admin/merchants/{merchant_id}/invites",
        headers={**operator.headers, "Idempotency-Key": secrets.token_hex(8)},
        json={"email": f"{role}-{secrets.token_hex(4)}@merchant.test", "role": role},
    )
    assert response.status_code == 200, response.text
    return response.json()


def _path(url: str) -> str:
    """The path and query of an absolute link, to open it on the test's edge."""
    parts = urlsplit(url)
    return f"{parts.path}?{parts.query}" if parts.query else parts.path


def accept_invite(page: Page, accept_url: str, password: str) -> None:
    """Opens an invitation's link, sets the password and waits for the signed-in home."""
    assert urlsplit(accept_url).path == "/merchant/accept", accept_url
    page.goto(_path(accept_url))
    page.get_by_label("New password").fill(password)
    page.get_by_label("Repeat the password").fill(password)
    page.get_by_test_id("accept").click()
    expect(page).to_have_url(re.compile(r"/merchant/home$"))


def follow_nav(page: Page, section: str) -> None:
    """Follows a link of a dashboard's side navigation."""
    page.get_by_role("navigation", name="Sections").get_by_role("link", name=section).click()
