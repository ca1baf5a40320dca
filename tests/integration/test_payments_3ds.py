"""3-D Secure (simulated) through the edge (issue 16, point 1).

Stripe's authentication test cards put a payment in `requires_action` with a `next_action` to
the challenge page; the customer completes or fails it there (POST .../authenticate with the
client secret), and the payment goes on or fails. Left alone, the sweeper cancels it.
"""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qs, urlparse

import httpx
import pytest
from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from services.common.db import transaction
from services.payment import sweeper
from services.payment.models import Payment
from tests.integration.conftest import MerchantKeys
from tests.integration.test_payments import card, created, wait_for
from tests.rest_errors import api_error

THREE_DS_REQUIRED = "4000002760003184"
THREE_DS2 = "4000000000003220"
UNLESS_SAVED = "4000002500003155"
DECLINED_AFTER = "4000008400001629"
EVENT_WAIT_S = 60.0


def _authenticate(
    api: httpx.Client, payment: dict[str, Any], result: str, **extra: str
) -> httpx.Response:
    body = {"client_secret": payment["client_secret"], "result": result, **extra}
    return api.post(f"/v1/payments/{payment['id']}/authenticate", json=body)


def _event_types(api: httpx.Client, key: str, payment_id: str) -> list[str]:
    listed = api.get("/v1/events", params={"page_size": 100}, headers={"X-API-Key": key})
    assert listed.status_code == 200, listed.text
    return sorted(
        event["type"]
        for event in listed.json()["events"]
        if event["data"]["object"].get("id") == payment_id
    )


def _wait_events(api: httpx.Client, key: str, payment_id: str, wanted: set[str]) -> list[str]:
    deadline = time.monotonic() + EVENT_WAIT_S
    while True:
        found = _event_types(api, key, payment_id)
        if wanted <= set(found) or time.monotonic() > deadline:
            return found
        time.sleep(0.5)


@pytest.mark.parametrize("number", [THREE_DS_REQUIRED, THREE_DS2, UNLESS_SAVED])
def test_authentication_cards__wait_for_the_customer_then_succeed(
    api: httpx.Client, merchant: MerchantKeys, number: str
) -> None:
    payment = created(api, merchant.secret_key, payment_method={"card": card(number)})
    assert payment["status"] == "requires_action", payment
    action = payment["next_action"]
    assert action["type"] == "redirect_to_url"
    url = urlparse(action["url"])
    assert url.path == f"/checkout/{payment['id']}/authenticate"
    assert parse_qs(url.query)["client_secret"] == [payment["client_secret"]]
    # Nothing is authorized before the customer authenticates.
    time.sleep(1)
    still = wait_for(api, merchant.secret_key, payment["id"], {"requires_action"})
    assert still["amount_capturable"] == 0 and still["amount_received"] == 0

    done = _authenticate(api, payment, "complete")
    assert done.status_code == 200, done.text
    assert done.json()["status"] == "processing" and "next_action" not in done.json()
    final = wait_for(api, merchant.secret_key, payment["id"])
    assert final["status"] == "succeeded", final
    assert final["amount_received"] == 1000
    types = _wait_events(
        api, merchant.secret_key, payment["id"], {"payment.requires_action", "payment.succeeded"}
    )
    assert {"payment.requires_action", "payment.processing", "payment.succeeded"} <= set(types)


def test_a_failed_challenge__fails_the_payment_and_another_card_may_follow(
    api: httpx.Client, merchant: MerchantKeys
) -> None:
    payment = created(api, merchant.secret_key, payment_method={"card": card(THREE_DS_REQUIRED)})
    failed = _authenticate(api, payment, "fail")
    assert failed.status_code == 200, failed.text
    assert failed.json()["status"] == "failed"
    assert failed.json()["failure_code"] == "authentication_failed"
    # The challenge is over: answering it again is refused, and changes nothing.
    api_error(_authenticate(api, payment, "complete"), 400, "payment_state_invalid")
    retried = api.post(
        f"/v1/payments/{payment['id']}/confirm",
        json={"payment_method": {"card": card()}, "client_secret": payment["client_secret"]},
    )
    assert retried.status_code == 200, retried.text
    assert wait_for(api, merchant.secret_key, payment["id"])["status"] == "succeeded"


def test_authenticated_then_declined__fails_with_the_decline(
    api: httpx.Client, merchant: MerchantKeys
) -> None:
    payment = created(api, merchant.secret_key, payment_method={"card": card(DECLINED_AFTER)})
    assert payment["status"] == "requires_action"
    assert _authenticate(api, payment, "complete").status_code == 200
    final = wait_for(api, merchant.secret_key, payment["id"])
    assert (final["status"], final["failure_code"]) == ("failed", "card_declined"), final


def test_confirming_with_an_authentication_card__waits_too(
    api: httpx.Client, merchant: MerchantKeys
) -> None:
    payment = created(api, merchant.secret_key)
    confirmed = api.post(
        f"/v1/payments/{payment['id']}/confirm",
        json={
            "payment_method": {"card": card(THREE_DS_REQUIRED)},
            "client_secret": payment["client_secret"],
        },
        headers={"X-API-Key": merchant.publishable_key},
    )
    assert confirmed.status_code == 200, confirmed.text
    assert confirmed.json()["status"] == "requires_action"
    assert confirmed.json()["next_action"]["type"] == "redirect_to_url"


def test_authenticate__bad_input_and_other_payments_change_nothing(
    api: httpx.Client, merchant: MerchantKeys, other_merchant: MerchantKeys
) -> None:
    payment = created(api, merchant.secret_key, payment_method={"card": card(THREE_DS_REQUIRED)})
    path = f"/v1/payments/{payment['id']}/authenticate"
    for body, status, code in [
        ({"client_secret": payment["client_secret"], "result": "maybe"}, 400, "invalid_argument"),
        ({"client_secret": payment["client_secret"]}, 400, "invalid_argument"),
        ({"client_secret": payment["client_secret"], "result": 1}, 400, "invalid_parameter_type"),
        ({"client_secret": "wrong", "result": "complete"}, 404, "payment_not_found"),
        ({"result": "complete"}, 404, "payment_not_found"),
    ]:
        response = api.post(path, json=body)
        assert response.status_code == status, (body, response.text)
        assert response.json()["error"]["code"] == code, (body, response.text)
    malformed = api.post(path, content=b"{", headers={"Content-Type": "application/json"})
    assert malformed.status_code == 400, malformed.text
    other = api.post(
        path,
        json={"result": "complete"},
        headers={"X-API-Key": other_merchant.secret_key},
    )
    api_error(other, 404, "payment_not_found")
    unknown = api.post(
        "/v1/payments/pay_doesnotexist/authenticate",
        json={"client_secret": payment["client_secret"], "result": "complete"},
    )
    api_error(unknown, 404, "payment_not_found")
    plain = created(api, merchant.secret_key, payment_method={"card": card()})
    api_error(_authenticate(api, plain, "complete"), 400, "payment_state_invalid")
    current = wait_for(api, merchant.secret_key, payment["id"], {"requires_action"})
    assert current["status"] == "requires_action"


def test_the_merchant_may_cancel_a_payment_waiting_for_authentication(
    api: httpx.Client, merchant: MerchantKeys
) -> None:
    payment = created(api, merchant.secret_key, payment_method={"card": card(THREE_DS_REQUIRED)})
    canceled = api.post(
        f"/v1/payments/{payment['id']}/cancel", json={}, headers={"X-API-Key": merchant.secret_key}
    )
    assert canceled.status_code == 200, canceled.text
    assert canceled.json()["status"] == "canceled"
    api_error(_authenticate(api, payment, "complete"), 400, "payment_state_invalid")


def test_an_abandoned_challenge__is_canceled_by_the_sweeper(
    api: httpx.Client, sessions: sessionmaker[Session], merchant: MerchantKeys
) -> None:
    payment = created(api, merchant.secret_key, payment_method={"card": card(THREE_DS_REQUIRED)})
    with transaction(sessions) as session:
        # As if the customer had left the challenge page two hours ago.
        session.execute(
            update(Payment)
            .where(Payment.id == payment["id"])
            .values(update_time=Payment.update_time - timedelta(hours=2))
        )
    with transaction(sessions) as session:
        assert sweeper.cancel_unauthenticated(session, window_s=3600) >= 1
    final = wait_for(api, merchant.secret_key, payment["id"], {"canceled"})
    assert final["cancellation_reason"] == "abandoned"
    types = _wait_events(api, merchant.secret_key, payment["id"], {"payment.canceled"})
    assert "payment.canceled" in types
