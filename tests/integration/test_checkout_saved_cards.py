"""The hosted checkout offers a returning customer's saved cards (issue 16, point 2), at the edge.

`GET /v1/checkout/{id}` (the client secret alone) lists the payment's customer's unexpired saved
cards, newest first, at most 10, while the payment waits for a card, and says whether the
merchant asked for `setup_future_usage`; the checkout confirms with a card's payment method id.
A caller with the client secret alone finds no other customer's method, may not ask for
`setup_future_usage` the merchant did not set, and cannot pay with an expired card.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import httpx
from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from services.common.db import transaction
from services.payment import customers as customer_rules
from services.payment.models import Customer, SavedPaymentMethod
from tests.integration.conftest import MerchantKeys
from tests.integration.test_customers import new_customer, saved_method
from tests.integration.test_payments import card, create_payment, created, wait_for
from tests.rest_errors import api_error

MASTERCARD = "5555555555554444"
THREE_DS_REQUIRED = "4000002760003184"


def checkout(api: httpx.Client, payment: dict[str, Any]) -> httpx.Response:
    """GET /v1/checkout/{id} as the hosted checkout page calls it: the client secret, no key."""
    return api.get(
        f"/v1/checkout/{payment['id']}", params={"client_secret": payment["client_secret"]}
    )


def offered(api: httpx.Client, payment: dict[str, Any]) -> list[dict[str, Any]]:
    """The saved cards the checkout offers for a payment."""
    response = checkout(api, payment)
    assert response.status_code == 200, response.text
    cards: list[dict[str, Any]] = response.json().get("saved_payment_methods", [])
    return cards


def confirm(api: httpx.Client, payment: dict[str, Any], **body: Any) -> httpx.Response:
    """POST .../confirm as the hosted checkout sends it: the client secret, no key."""
    return api.post(
        f"/v1/payments/{payment['id']}/confirm",
        json={"client_secret": payment["client_secret"], **body},
    )


def expire(sessions: sessionmaker[Session], method_id: str) -> None:
    """Makes a saved card one that expired last year (as time would)."""
    with transaction(sessions) as session:
        session.execute(
            update(SavedPaymentMethod)
            .where(SavedPaymentMethod.id == method_id)
            .values(card_exp_month=1, card_exp_year=datetime.now(UTC).year - 1)
        )


def methods_of(api: httpx.Client, key: str, customer_id: str) -> list[str]:
    """The ids of a customer's saved payment methods, newest first."""
    listed = api.get(
        "/v1/payment_methods", params={"customer": customer_id}, headers={"X-API-Key": key}
    )
    assert listed.status_code == 200, listed.text
    return [method["id"] for method in listed.json()["payment_methods"]]


def test_checkout__offers_the_customers_unexpired_saved_cards_newest_first(
    api: httpx.Client, merchant: MerchantKeys, sessions: sessionmaker[Session]
) -> None:
    key = merchant.secret_key
    customer = new_customer(api, key, email="returning@example.com")
    _, visa = saved_method(api, key, customer["id"])
    _, mastercard = saved_method(api, key, customer["id"], MASTERCARD)
    _, old = saved_method(api, key, customer["id"])
    expire(sessions, old["id"])
    # Another customer's card, of the same merchant, is never offered.
    stranger = new_customer(api, key)
    saved_method(api, key, stranger["id"])

    payment = created(api, key, customer=customer["id"], amount=3100)
    assert offered(api, payment) == [
        {
            "id": mastercard["id"],
            "brand": "mastercard",
            "last4": "4444",
            "exp_month": 12,
            "exp_year": mastercard["card"]["exp_year"],
        },
        {
            "id": visa["id"],
            "brand": "visa",
            "last4": "4242",
            "exp_month": 12,
            "exp_year": visa["card"]["exp_year"],
        },
    ]
    body = checkout(api, payment).json()
    assert body.get("setup_future_usage", "") == ""
    # Neither the fingerprint nor the processor's token goes to the checkout page.
    assert visa["card"]["fingerprint"] not in str(body) and "tok_" not in str(body)
    # A payment without a customer offers nothing.
    assert offered(api, created(api, key)) == []


def test_checkout__says_setup_future_usage_and_offers_at_most_ten(
    api: httpx.Client, merchant: MerchantKeys, sessions: sessionmaker[Session]
) -> None:
    key = merchant.secret_key
    customer = new_customer(api, key)
    ids = []
    for number in range(12):
        # Saved one transaction each (their own creation times), as twelve payments would.
        with transaction(sessions) as session:
            row = session.get(Customer, customer["id"])
            assert row is not None
            method = customer_rules.save_card(
                session,
                customer=row,
                payment_id=f"pay_saved_{number}",
                brand="visa",
                last4=f"{number:04d}",
                exp_month=12,
                exp_year=datetime.now(UTC).year + 2,
                fingerprint=f"{number:064d}",
                processor_token=f"tok_test_{number}",
            )
            # As if that payment succeeded: the worker attaches the card then.
            method.customer_id, method.setup_payment_id = row.id, None
            ids.append(method.id)
    payment = created(api, key, customer=customer["id"], setup_future_usage="off_session")
    cards = offered(api, payment)
    assert [item["id"] for item in cards] == list(reversed(ids))[:10]
    assert checkout(api, payment).json()["setup_future_usage"] == "off_session"


def test_checkout__pays_with_a_saved_card_and_offers_none_once_paid(
    api: httpx.Client, merchant: MerchantKeys
) -> None:
    key = merchant.secret_key
    customer = new_customer(api, key)
    first, method = saved_method(api, key, customer["id"])
    wait_for(api, key, first["id"])
    payment = created(api, key, customer=customer["id"], amount=4400)
    assert [item["id"] for item in offered(api, payment)] == [method["id"]]

    paid = confirm(api, payment, payment_method={"id": method["id"]})
    assert paid.status_code == 200, paid.text
    assert paid.json()["payment_method"] == method["id"]
    assert paid.json()["card"]["last4"] == "4242"
    final = wait_for(api, key, payment["id"])
    assert (final["status"], final["amount_received"]) == ("succeeded", 4400)
    # Paying with a saved card saves nothing new; a paid payment offers no cards.
    assert methods_of(api, key, customer["id"]) == [method["id"]]
    assert offered(api, payment) == []


def test_checkout__a_saved_card_that_requires_authentication_goes_to_the_challenge(
    api: httpx.Client, merchant: MerchantKeys
) -> None:
    key = merchant.secret_key
    customer = new_customer(api, key)
    _, method = saved_method(api, key, customer["id"], THREE_DS_REQUIRED)
    payment = created(api, key, customer=customer["id"])
    paid = confirm(api, payment, payment_method={"id": method["id"]})
    assert paid.status_code == 200, paid.text
    assert paid.json()["status"] == "requires_action"
    assert paid.json()["next_action"]["type"] == "redirect_to_url"
    # While the customer authenticates there is nothing to choose.
    assert offered(api, payment) == []


def test_checkout__another_customers_or_merchants_method_is_not_found_and_changes_nothing(
    api: httpx.Client, merchant: MerchantKeys, other_merchant: MerchantKeys
) -> None:
    key = merchant.secret_key
    customer = new_customer(api, key)
    saved_method(api, key, customer["id"])
    stranger = new_customer(api, key)
    _, strangers = saved_method(api, key, stranger["id"])
    foreign_customer = new_customer(api, other_merchant.secret_key)
    _, foreign = saved_method(api, other_merchant.secret_key, foreign_customer["id"])
    payment = created(api, key, customer=customer["id"])

    refusals = {
        method_id: confirm(api, payment, payment_method={"id": method_id})
        for method_id in (strangers["id"], foreign["id"], "pm_doesnotexist0000000000")
    }
    for method_id, refused in refusals.items():
        error = api_error(refused, 404, "payment_method_not_found")
        # The same answer as for an id that does not exist: no customer named, nothing told.
        assert error["message"] == f"no such payment method: {method_id!r}"
        assert stranger["id"] not in refused.text
    # A publishable key with the client secret is the checkout too.
    with_publishable = api.post(
        f"/v1/payments/{payment['id']}/confirm",
        json={"client_secret": payment["client_secret"], "payment_method": {"id": strangers["id"]}},
        headers={"X-API-Key": merchant.publishable_key},
    )
    api_error(with_publishable, 404, "payment_method_not_found")
    still = wait_for(api, key, payment["id"], {"requires_payment_method"})
    assert still["status"] == "requires_payment_method" and still.get("payment_method", "") == ""
    # The stranger's card still belongs to the stranger only.
    assert methods_of(api, key, stranger["id"]) == [strangers["id"]]


def test_checkout__setup_future_usage_on_confirm_needs_the_merchants_create(
    api: httpx.Client, merchant: MerchantKeys
) -> None:
    key = merchant.secret_key
    customer = new_customer(api, key)
    plain = created(api, key, customer=customer["id"])
    for usage in ("on_session", "off_session"):
        refused = confirm(api, plain, payment_method={"card": card()}, setup_future_usage=usage)
        api_error(refused, 400, "invalid_argument", param="setup_future_usage")
    assert methods_of(api, key, customer["id"]) == []
    # Set to on_session at create: the checkout may not turn it into off_session ...
    asked = created(api, key, customer=customer["id"], setup_future_usage="on_session")
    widened = confirm(api, asked, payment_method={"card": card()}, setup_future_usage="off_session")
    api_error(widened, 400, "invalid_argument", param="setup_future_usage")
    assert wait_for(api, key, asked["id"], {"requires_payment_method"})["status"] == (
        "requires_payment_method"
    )
    # ... and repeating the merchant's own choice, or leaving it out, saves the card.
    saved = confirm(api, asked, payment_method={"card": card()}, setup_future_usage="on_session")
    assert saved.status_code == 200, saved.text
    # Attached to the customer once that payment succeeded.
    assert wait_for(api, key, asked["id"], {"succeeded"})["status"] == "succeeded"
    assert methods_of(api, key, customer["id"]) == [saved.json()["payment_method"]]
    # The merchant's secret key may still ask on confirm (its own decision).
    by_merchant = created(api, key, customer=customer["id"])
    merchant_confirm = api.post(
        f"/v1/payments/{by_merchant['id']}/confirm",
        json={"payment_method": {"card": card(MASTERCARD)}, "setup_future_usage": "off_session"},
        headers={"X-API-Key": key},
    )
    assert merchant_confirm.status_code == 200, merchant_confirm.text
    assert merchant_confirm.json()["payment_method"].startswith("pm_")


def test_checkout__an_expired_saved_card_is_refused_with_a_clear_error(
    api: httpx.Client, merchant: MerchantKeys, sessions: sessionmaker[Session]
) -> None:
    key = merchant.secret_key
    customer = new_customer(api, key)
    _, method = saved_method(api, key, customer["id"])
    expire(sessions, method["id"])
    payment = created(api, key, customer=customer["id"])
    assert offered(api, payment) == []

    refused = confirm(api, payment, payment_method={"id": method["id"]})
    error = api_error(refused, 400, "invalid_argument", param="payment_method.id")
    assert "expired" in error["message"] and "4242" in error["message"]
    assert wait_for(api, key, payment["id"], {"requires_payment_method"})["status"] == (
        "requires_payment_method"
    )
    # The merchant's off-session payment with it is refused the same way, and not created.
    off = create_payment(
        api,
        key,
        customer=customer["id"],
        payment_method={"id": method["id"]},
        off_session=True,
    )
    api_error(off, 400, "invalid_argument", param="payment_method.id")
