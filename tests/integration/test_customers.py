"""Customers and saved payment methods through the edge (issue 16, point 2).

`/v1/customers` (create, get, update, list, delete) and `/v1/payment_methods` (get, list a
customer's, attach, detach); saving a card while paying (`setup_future_usage`), paying with a
saved method on and off session, `authentication_required`, and the card that needs
authentication unless saved (4000 0025 0000 3155).
"""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import pytest

from services.admin import merchants
from services.common.db import transaction
from tests.integration.conftest import MerchantKeys
from tests.integration.test_payments import card, create_payment, created, wait_for
from tests.rest_errors import api_error

THREE_DS_REQUIRED = "4000002760003184"
UNLESS_SAVED = "4000002500003155"
DECLINED = "4000000000000002"
EVENT_WAIT_S = 60.0


def _headers(key: str, idempotency_key: str | None = None) -> dict[str, str]:
    headers = {"X-API-Key": key}
    if idempotency_key is not None:
        headers["Idempotency-Key"] = idempotency_key
    return headers


def new_customer(api: httpx.Client, key: str, **body: Any) -> dict[str, Any]:
    """A customer created successfully."""
    response = api.post("/v1/customers", json=body, headers=_headers(key))
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


def saved_method(
    api: httpx.Client, key: str, customer_id: str, number: str = "4242424242424242"
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the payment as created, its saved payment method): a card paid and saved for
    `customer_id`. A card that asks for 3-D Secure has its challenge completed first: the card
    is attached to the customer only once the payment that saves it succeeded."""
    payment = created(
        api,
        key,
        customer=customer_id,
        setup_future_usage="off_session",
        payment_method={"card": card(number)},
    )
    assert payment["customer"] == customer_id and payment["payment_method"].startswith("pm_")
    if payment["status"] == "requires_action":
        completed = api.post(
            f"/v1/payments/{payment['id']}/authenticate",
            json={"client_secret": payment["client_secret"], "result": "complete"},
        )
        assert completed.status_code == 200, completed.text
    assert wait_for(api, key, payment["id"], {"succeeded"})["status"] == "succeeded"
    method = api.get(f"/v1/payment_methods/{payment['payment_method']}", headers=_headers(key))
    assert method.status_code == 200, method.text
    return payment, method.json()


def _live_key(sessions: Any, merchant: MerchantKeys) -> str:
    with transaction(sessions) as session:
        return merchants.create_api_key(
            session, merchant_id=merchant.id, mode="live", kind="secret"
        ).key


def _events(api: httpx.Client, key: str, object_id: str) -> list[str]:
    listed = api.get("/v1/events", params={"page_size": 100}, headers=_headers(key))
    assert listed.status_code == 200, listed.text
    return sorted(
        event["type"]
        for event in listed.json()["events"]
        if event["data"]["object"].get("id") == object_id
    )


def _wait_events(api: httpx.Client, key: str, object_id: str, wanted: list[str]) -> list[str]:
    deadline = time.monotonic() + EVENT_WAIT_S
    while True:
        found = _events(api, key, object_id)
        if found == sorted(wanted) or time.monotonic() > deadline:
            return found
        time.sleep(0.5)


# Customers


def test_customer__created_read_updated_listed_and_deleted(
    api: httpx.Client, merchant: MerchantKeys
) -> None:
    key = merchant.secret_key
    customer = new_customer(
        api,
        key,
        email="jenny@example.com",
        name="Jenny Rosen",
        description="first",
        metadata={"account": "A-1", "tier": "gold"},
    )
    assert customer["id"].startswith("cus_")
    assert customer["email"] == "jenny@example.com" and customer["name"] == "Jenny Rosen"
    assert customer["livemode"] is False and customer["merchant_id"] == merchant.id
    got = api.get(f"/v1/customers/{customer['id']}", headers=_headers(key))
    assert got.status_code == 200 and got.json() == customer

    # PATCH: what is sent changes, what is absent stays; a metadata key sent empty goes.
    changed = api.patch(
        f"/v1/customers/{customer['id']}",
        json={"name": "Jenny R.", "metadata": {"tier": "", "note": "vip"}},
        headers=_headers(key),
    )
    assert changed.status_code == 200, changed.text
    body = changed.json()
    assert body["name"] == "Jenny R." and body["email"] == "jenny@example.com"
    assert body["description"] == "first"
    assert body["metadata"] == {"account": "A-1", "note": "vip"}
    cleared = api.patch(
        f"/v1/customers/{customer['id']}", json={"description": ""}, headers=_headers(key)
    )
    assert cleared.status_code == 200 and cleared.json()["description"] == ""

    other = new_customer(api, key, email="other@example.com")
    listed = api.get("/v1/customers", headers=_headers(key)).json()
    assert [item["id"] for item in listed["customers"]] == [other["id"], customer["id"]]
    by_email = api.get(
        "/v1/customers", params={"email": "jenny@example.com"}, headers=_headers(key)
    )
    assert [item["id"] for item in by_email.json()["customers"]] == [customer["id"]]

    deleted = api.delete(f"/v1/customers/{customer['id']}", headers=_headers(key))
    assert deleted.status_code == 200, deleted.text
    assert deleted.json() == {"id": customer["id"], "deleted": True}
    for response in (
        api.get(f"/v1/customers/{customer['id']}", headers=_headers(key)),
        api.patch(f"/v1/customers/{customer['id']}", json={"name": "x"}, headers=_headers(key)),
        api.delete(f"/v1/customers/{customer['id']}", headers=_headers(key)),
    ):
        api_error(response, 404, "customer_not_found")
    listed = api.get("/v1/customers", headers=_headers(key)).json()
    assert [item["id"] for item in listed["customers"]] == [other["id"]]
    assert _wait_events(
        api,
        key,
        customer["id"],
        ["customer.created", "customer.updated", "customer.updated", "customer.deleted"],
    ) == sorted(["customer.created", "customer.updated", "customer.updated", "customer.deleted"])


def test_customers__list_pages_newest_first(api: httpx.Client, merchant: MerchantKeys) -> None:
    key = merchant.secret_key
    made = [new_customer(api, key, name=f"c{index}")["id"] for index in range(5)]
    seen: list[str] = []
    params: dict[str, Any] = {"page_size": 2}
    while True:
        page = api.get("/v1/customers", params=params, headers=_headers(key))
        assert page.status_code == 200, page.text
        body = page.json()
        seen += [item["id"] for item in body["customers"]]
        assert body.get("has_more", False) == bool(body.get("next_page_token"))
        if not body.get("has_more"):
            break
        params["page_token"] = body["next_page_token"]
    assert seen == list(reversed(made))
    # A token is bound to its filters.
    first = api.get("/v1/customers", params={"page_size": 1}, headers=_headers(key)).json()
    refused = api.get(
        "/v1/customers",
        params={"page_size": 1, "email": "x@example.com", "page_token": first["next_page_token"]},
        headers=_headers(key),
    )
    api_error(refused, 400, "invalid_argument", param="page_token")


@pytest.mark.parametrize(
    ("body", "code", "param"),
    [
        ({"email": 5}, "invalid_parameter_type", "email"),
        ({"name": ["a"]}, "invalid_parameter_type", "name"),
        ({"metadata": "x"}, "invalid_parameter_type", "metadata"),
        ({"emial": "a@example.com"}, "unknown_parameter", "emial"),
        ({"email": "not-an-email"}, "invalid_argument", "email"),
        ({"email": "a" * 600 + "@example.com"}, "invalid_argument", "email"),
        ({"name": "n" * 257}, "invalid_argument", "name"),
        ({"description": "d" * 1001}, "invalid_argument", "description"),
        ({"metadata": {f"k{i}": "v" for i in range(51)}}, "invalid_argument", "metadata"),
        ({"metadata": {"k": "v" * 501}}, "invalid_argument", "metadata.k"),
    ],
)
def test_customer_create__bad_input_is_refused_and_creates_nothing(
    api: httpx.Client,
    merchant: MerchantKeys,
    body: dict[str, Any],
    code: str,
    param: str,
) -> None:
    response = api.post("/v1/customers", json=body, headers=_headers(merchant.secret_key))
    api_error(response, 400, code, param=param)
    listed = api.get("/v1/customers", headers=_headers(merchant.secret_key)).json()
    assert listed.get("customers", []) == []


def test_customer_create__malformed_json_is_refused(
    api: httpx.Client, merchant: MerchantKeys
) -> None:
    response = api.post(
        "/v1/customers",
        content=b'{"email": "a@example.com",',
        headers={**_headers(merchant.secret_key), "Content-Type": "application/json"},
    )
    api_error(response, 400, "invalid_json")
    assert (
        api.get("/v1/customers", headers=_headers(merchant.secret_key)).json().get("customers", [])
        == []
    )


def test_customer_update__bad_input_changes_nothing(
    api: httpx.Client, merchant: MerchantKeys
) -> None:
    key = merchant.secret_key
    customer = new_customer(api, key, email="a@example.com", metadata={"a": "1"})
    for body, code, param in [
        ({"email": "nope"}, "invalid_argument", "email"),
        ({"name": 3}, "invalid_parameter_type", "name"),
        ({"id": "cus_other"}, "unknown_parameter", "id"),
        ({"metadata": {f"k{i}": "v" for i in range(50)}}, "invalid_argument", "metadata"),
    ]:
        response = api.patch(f"/v1/customers/{customer['id']}", json=body, headers=_headers(key))
        assert response.status_code == 400, (body, response.text)
        assert response.json()["error"]["code"] == code, response.text
        if param is not None:
            assert response.json()["error"].get("param") == param, response.text
    assert api.get(f"/v1/customers/{customer['id']}", headers=_headers(key)).json() == customer


def test_customers__unknown_other_merchants_and_other_modes_ids_are_not_found(
    api: httpx.Client, merchant: MerchantKeys, other_merchant: MerchantKeys, sessions: Any
) -> None:
    mine = new_customer(api, merchant.secret_key, email="mine@example.com")
    live_key = _live_key(sessions, merchant)
    for key in (other_merchant.secret_key, live_key):
        api_error(
            api.get(f"/v1/customers/{mine['id']}", headers=_headers(key)), 404, "customer_not_found"
        )
        api_error(
            api.patch(f"/v1/customers/{mine['id']}", json={"name": "x"}, headers=_headers(key)),
            404,
            "customer_not_found",
        )
        api_error(
            api.delete(f"/v1/customers/{mine['id']}", headers=_headers(key)),
            404,
            "customer_not_found",
        )
        listed = api.get(
            "/v1/customers", params={"email": "mine@example.com"}, headers=_headers(key)
        )
        assert listed.json().get("customers", []) == []
    for unknown in ("cus_doesnotexist", "pay_x", "x" * 300):
        api_error(
            api.get(f"/v1/customers/{unknown}", headers=_headers(merchant.secret_key)),
            404,
            "customer_not_found",
        )
    assert (
        api.get(f"/v1/customers/{mine['id']}", headers=_headers(merchant.secret_key)).json() == mine
    )


def test_customer_writes__replay_under_the_same_idempotency_key(
    api: httpx.Client, merchant: MerchantKeys
) -> None:
    headers = _headers(merchant.secret_key, "cus-create-1")
    first = api.post("/v1/customers", json={"email": "r@example.com"}, headers=headers)
    again = api.post("/v1/customers", json={"email": "r@example.com"}, headers=headers)
    assert first.status_code == again.status_code == 200
    assert again.headers.get("idempotent-replayed") == "true"
    assert again.json() == first.json()
    listed = api.get("/v1/customers", headers=_headers(merchant.secret_key)).json()
    assert len(listed["customers"]) == 1
    reused = api.post("/v1/customers", json={"email": "s@example.com"}, headers=headers)
    api_error(reused, 400, "idempotency_key_reused")

    customer_id = first.json()["id"]
    patch_headers = _headers(merchant.secret_key, "cus-update-1")
    changed = api.patch(f"/v1/customers/{customer_id}", json={"name": "A"}, headers=patch_headers)
    replayed = api.patch(f"/v1/customers/{customer_id}", json={"name": "A"}, headers=patch_headers)
    assert replayed.headers.get("idempotent-replayed") == "true"
    assert replayed.json() == changed.json()
    delete_headers = _headers(merchant.secret_key, "cus-delete-1")
    deleted = api.delete(f"/v1/customers/{customer_id}", headers=delete_headers)
    replayed = api.delete(f"/v1/customers/{customer_id}", headers=delete_headers)
    assert deleted.status_code == replayed.status_code == 200
    assert replayed.headers.get("idempotent-replayed") == "true"
    assert replayed.json() == {"id": customer_id, "deleted": True}


# Saved payment methods


def test_paying_with_setup_future_usage__saves_the_card_for_the_customer(
    api: httpx.Client, merchant: MerchantKeys
) -> None:
    key = merchant.secret_key
    customer = new_customer(api, key, email="saver@example.com")
    payment, method = saved_method(api, key, customer["id"])
    assert method["id"] == payment["payment_method"]
    assert method["type"] == "card" and method["customer"] == customer["id"]
    assert method["card"] == payment["card"]
    assert method["card"]["brand"] == "visa" and method["card"]["last4"] == "4242"
    assert len(method["card"]["fingerprint"]) == 64
    assert "4242424242424242" not in json.dumps(method)
    assert "processor_token" not in method and "tok_" not in json.dumps(method)
    assert wait_for(api, key, payment["id"])["status"] == "succeeded"
    listed = api.get(
        "/v1/payment_methods", params={"customer": customer["id"]}, headers=_headers(key)
    )
    assert listed.status_code == 200, listed.text
    assert [item["id"] for item in listed.json()["payment_methods"]] == [method["id"]]
    assert _wait_events(api, key, method["id"], ["payment_method.attached"]) == [
        "payment_method.attached"
    ]
    # Without setup_future_usage nothing is saved, with a customer or not.
    plain = created(api, key, customer=customer["id"], payment_method={"card": card()})
    assert plain["customer"] == customer["id"] and plain.get("payment_method", "") == ""
    listed = api.get(
        "/v1/payment_methods", params={"customer": customer["id"]}, headers=_headers(key)
    ).json()
    assert len(listed["payment_methods"]) == 1


def test_confirm_with_setup_future_usage__saves_the_card(
    api: httpx.Client, merchant: MerchantKeys
) -> None:
    key = merchant.secret_key
    customer = new_customer(api, key)
    payment = created(api, key, customer=customer["id"], setup_future_usage="on_session")
    assert payment["status"] == "requires_payment_method"
    # The hosted checkout confirms with the publishable key and the client secret.
    confirmed = api.post(
        f"/v1/payments/{payment['id']}/confirm",
        json={"client_secret": payment["client_secret"], "payment_method": {"card": card()}},
        headers={"X-API-Key": merchant.publishable_key},
    )
    assert confirmed.status_code == 200, confirmed.text
    method_id = confirmed.json()["payment_method"]
    assert method_id.startswith("pm_")
    assert wait_for(api, key, payment["id"])["status"] == "succeeded"
    method = api.get(f"/v1/payment_methods/{method_id}", headers=_headers(key)).json()
    assert method["customer"] == customer["id"]
    # Without a customer there is nothing to save the card for.
    lone = created(api, key)
    refused = api.post(
        f"/v1/payments/{lone['id']}/confirm",
        json={"payment_method": {"card": card()}, "setup_future_usage": "off_session"},
        headers=_headers(key),
    )
    api_error(refused, 400, "invalid_argument", param="setup_future_usage")
    assert wait_for(api, key, lone["id"], {"requires_payment_method"})["status"] == (
        "requires_payment_method"
    )


def test_paying_with_a_saved_method__off_session_reuses_the_vaulted_card(
    api: httpx.Client, merchant: MerchantKeys
) -> None:
    key = merchant.secret_key
    customer = new_customer(api, key)
    first, method = saved_method(api, key, customer["id"])
    wait_for(api, key, first["id"])
    again = created(
        api,
        key,
        amount=2500,
        customer=customer["id"],
        payment_method={"id": method["id"]},
        off_session=True,
    )
    assert again["payment_method"] == method["id"] and again["customer"] == customer["id"]
    assert again["card"] == method["card"]
    final = wait_for(api, key, again["id"])
    assert final["status"] == "succeeded" and final["amount_received"] == 2500
    # Still one saved method: paying with it saves nothing new.
    listed = api.get(
        "/v1/payment_methods", params={"customer": customer["id"]}, headers=_headers(key)
    ).json()
    assert [item["id"] for item in listed["payment_methods"]] == [method["id"]]
    # On a payment waiting for one, confirm takes the saved method too.
    waiting = created(api, key, customer=customer["id"])
    confirmed = api.post(
        f"/v1/payments/{waiting['id']}/confirm",
        json={"payment_method": {"id": method["id"]}},
        headers=_headers(key),
    )
    assert confirmed.status_code == 200, confirmed.text
    assert wait_for(api, key, waiting["id"])["status"] == "succeeded"


def test_off_session__a_card_that_requires_authentication_fails_at_once(
    api: httpx.Client, merchant: MerchantKeys
) -> None:
    key = merchant.secret_key
    customer = new_customer(api, key)
    # Saved while paying on session: that payment waits for its 3-D Secure challenge.
    first, method = saved_method(api, key, customer["id"], THREE_DS_REQUIRED)
    assert first["status"] == "requires_action"
    off = created(
        api, key, customer=customer["id"], payment_method={"id": method["id"]}, off_session=True
    )
    assert off["status"] == "failed", off
    assert off["failure_code"] == "authentication_required"
    assert off["failure_message"] and off["amount_capturable"] == 0
    assert _wait_events(api, key, off["id"], ["payment.failed"]) == ["payment.failed"]
    assert wait_for(api, key, off["id"])["status"] == "failed"
    # On session the same saved card asks the customer instead.
    on = created(api, key, customer=customer["id"], payment_method={"id": method["id"]})
    assert on["status"] == "requires_action" and on["next_action"]["type"] == "redirect_to_url"


def test_card_3155__requires_authentication_unless_saved(
    api: httpx.Client, merchant: MerchantKeys
) -> None:
    key = merchant.secret_key
    customer = new_customer(api, key)
    # Not saved: authentication, on or off session.
    unsaved = created(api, key, payment_method={"card": card(UNLESS_SAVED)})
    assert unsaved["status"] == "requires_action"
    unsaved_off = created(
        api,
        key,
        customer=customer["id"],
        off_session=True,
        payment_method={"card": card(UNLESS_SAVED)},
    )
    assert unsaved_off["status"] == "failed"
    assert unsaved_off["failure_code"] == "authentication_required"
    # Saved (the payment that saves it authenticates, as on Stripe) ...
    first, method = saved_method(api, key, customer["id"], UNLESS_SAVED)
    assert first["status"] == "requires_action"
    # ... then paid with off session, and on session, without authentication.
    for extra in ({"off_session": True}, {}):
        paid = created(
            api, key, customer=customer["id"], payment_method={"id": method["id"]}, **extra
        )
        assert paid["status"] == "processing", paid
        assert wait_for(api, key, paid["id"])["status"] == "succeeded"


@pytest.mark.parametrize(
    ("number", "challenge"),
    [(DECLINED, None), (THREE_DS_REQUIRED, "fail"), (THREE_DS_REQUIRED, "abandon")],
)
def test_a_card_whose_payment_fails__is_never_attached(
    api: httpx.Client, merchant: MerchantKeys, number: str, challenge: str | None
) -> None:
    key = merchant.secret_key
    customer = new_customer(api, key)
    payment = created(
        api,
        key,
        customer=customer["id"],
        setup_future_usage="off_session",
        payment_method={"card": card(number)},
    )
    method_id = payment["payment_method"]
    if challenge == "fail":
        failed = api.post(
            f"/v1/payments/{payment['id']}/authenticate",
            json={"client_secret": payment["client_secret"], "result": "fail"},
        )
        assert failed.status_code == 200, failed.text
    elif challenge == "abandon":
        canceled = api.post(f"/v1/payments/{payment['id']}/cancel", json={}, headers=_headers(key))
        assert canceled.status_code == 200, canceled.text
    final = wait_for(api, key, payment["id"], {"failed", "canceled"})
    assert final["status"] in {"failed", "canceled"}
    method = api.get(f"/v1/payment_methods/{method_id}", headers=_headers(key))
    assert method.status_code == 200, method.text
    assert method.json().get("customer", "") == ""
    listed = api.get(
        "/v1/payment_methods", params={"customer": customer["id"]}, headers=_headers(key)
    ).json()
    assert listed.get("payment_methods", []) == []
    assert _events(api, key, method_id) == []
    # Nor can it pay for the customer.
    reused = create_payment(
        api, key, customer=customer["id"], payment_method={"id": method_id}, off_session=True
    )
    assert reused.status_code in (400, 404), reused.text


def test_payment_methods__detach_attach_and_customer_deletion(
    api: httpx.Client, merchant: MerchantKeys
) -> None:
    key = merchant.secret_key
    customer = new_customer(api, key)
    second = new_customer(api, key)
    _, method = saved_method(api, key, customer["id"])
    detached = api.post(
        f"/v1/payment_methods/{method['id']}/detach", json={}, headers=_headers(key)
    )
    assert detached.status_code == 200, detached.text
    assert detached.json().get("customer", "") == ""
    listed = api.get(
        "/v1/payment_methods", params={"customer": customer["id"]}, headers=_headers(key)
    ).json()
    assert listed.get("payment_methods", []) == []
    # A detached method cannot pay.
    refused = create_payment(api, key, customer=customer["id"], payment_method={"id": method["id"]})
    api_error(refused, 400, "invalid_argument", param="payment_method.id")
    attached = api.post(
        f"/v1/payment_methods/{method['id']}/attach",
        json={"customer": second["id"]},
        headers=_headers(key),
    )
    assert attached.status_code == 200, attached.text
    assert attached.json()["customer"] == second["id"]
    # Another customer's method does not pay for this one.
    refused = create_payment(api, key, customer=customer["id"], payment_method={"id": method["id"]})
    api_error(refused, 400, "invalid_argument", param="payment_method.id")
    paid = created(api, key, customer=second["id"], payment_method={"id": method["id"]})
    assert wait_for(api, key, paid["id"])["status"] == "succeeded"

    deleted = api.delete(f"/v1/customers/{second['id']}", headers=_headers(key))
    assert deleted.status_code == 200, deleted.text
    after = api.get(f"/v1/payment_methods/{method['id']}", headers=_headers(key)).json()
    assert after.get("customer", "") == ""
    assert _wait_events(
        api,
        key,
        method["id"],
        [
            "payment_method.attached",
            "payment_method.detached",
            "payment_method.attached",
            "payment_method.detached",
        ],
    ) == sorted(
        [
            "payment_method.attached",
            "payment_method.detached",
            "payment_method.attached",
            "payment_method.detached",
        ]
    )
    api_error(
        api.get("/v1/payment_methods", params={"customer": second["id"]}, headers=_headers(key)),
        404,
        "customer_not_found",
    )
    api_error(
        api.post(
            f"/v1/payment_methods/{method['id']}/attach",
            json={"customer": second["id"]},
            headers=_headers(key),
        ),
        404,
        "customer_not_found",
    )


@pytest.mark.parametrize(
    ("body", "code", "param"),
    [
        ({"customer": 5}, "invalid_parameter_type", "customer"),
        ({"off_session": "yes"}, "invalid_parameter_type", "off_session"),
        ({"setup_future_usage": "always"}, "invalid_argument", "setup_future_usage"),
        ({"setup_future_usage": "off_session"}, "invalid_argument", "setup_future_usage"),
        ({"payment_method": {"id": "pm_x"}}, "invalid_argument", "customer"),
        ({"off_session": True}, "invalid_argument", "off_session"),
        ({"payment_method": {"idd": "pm_x"}}, "unknown_parameter", "payment_method.idd"),
    ],
)
def test_payment_create__bad_customer_options_are_refused_and_create_nothing(
    api: httpx.Client,
    merchant: MerchantKeys,
    body: dict[str, Any],
    code: str,
    param: str,
) -> None:
    response = create_payment(api, merchant.secret_key, **body)
    api_error(response, 400, code, param=param)
    listed = api.get("/v1/payments", headers=_headers(merchant.secret_key)).json()
    assert listed.get("payments", []) == []


def test_payment_create__card_and_id_together_are_refused(
    api: httpx.Client, merchant: MerchantKeys
) -> None:
    customer = new_customer(api, merchant.secret_key)
    response = create_payment(
        api,
        merchant.secret_key,
        customer=customer["id"],
        payment_method={"id": "pm_x", "card": card()},
    )
    api_error(response, 400, "invalid_argument", param="payment_method")


def test_payment_methods__unknown_other_merchants_and_other_modes_ids_are_not_found(
    api: httpx.Client, merchant: MerchantKeys, other_merchant: MerchantKeys, sessions: Any
) -> None:
    key = merchant.secret_key
    customer = new_customer(api, key)
    _, method = saved_method(api, key, customer["id"])
    live_key = _live_key(sessions, merchant)
    for stranger in (other_merchant.secret_key, live_key):
        theirs = new_customer(api, stranger)
        for response in (
            api.get(f"/v1/payment_methods/{method['id']}", headers=_headers(stranger)),
            api.post(
                f"/v1/payment_methods/{method['id']}/detach", json={}, headers=_headers(stranger)
            ),
            api.post(
                f"/v1/payment_methods/{method['id']}/attach",
                json={"customer": theirs["id"]},
                headers=_headers(stranger),
            ),
            create_payment(
                api, stranger, customer=theirs["id"], payment_method={"id": method["id"]}
            ),
        ):
            api_error(response, 404, "payment_method_not_found")
        for response in (
            api.get(
                "/v1/payment_methods",
                params={"customer": customer["id"]},
                headers=_headers(stranger),
            ),
            create_payment(api, stranger, customer=customer["id"]),
            # My method, with another's customer: the customer is not found for me.
            api.post(
                f"/v1/payment_methods/{method['id']}/attach",
                json={"customer": theirs["id"]},
                headers=_headers(key),
            ),
        ):
            api_error(response, 404, "customer_not_found")
    for unknown in ("pm_doesnotexist", "cus_x", "p" * 300):
        api_error(
            api.get(f"/v1/payment_methods/{unknown}", headers=_headers(key)),
            404,
            "payment_method_not_found",
        )
    api_error(
        api.get("/v1/payment_methods", headers=_headers(key)),
        400,
        "invalid_argument",
        param="customer",
    )
    after = api.get(f"/v1/payment_methods/{method['id']}", headers=_headers(key)).json()
    assert after == method


def test_payment_method_writes__replay_under_the_same_idempotency_key(
    api: httpx.Client, merchant: MerchantKeys
) -> None:
    key = merchant.secret_key
    customer = new_customer(api, key)
    headers = _headers(key, "save-pay-1")
    body = {
        "amount": 1000,
        "currency": "USD",
        "customer": customer["id"],
        "setup_future_usage": "off_session",
        "payment_method": {"card": card()},
    }
    first = api.post("/v1/payments", json=body, headers=headers)
    again = api.post("/v1/payments", json=body, headers=headers)
    assert first.status_code == again.status_code == 200, first.text
    assert again.headers.get("idempotent-replayed") == "true"
    assert again.json()["id"] == first.json()["id"]
    wait_for(api, key, first.json()["id"])
    listed = api.get(
        "/v1/payment_methods", params={"customer": customer["id"]}, headers=_headers(key)
    ).json()
    assert len(listed["payment_methods"]) == 1
    method_id = first.json()["payment_method"]
    detach_headers = _headers(key, "detach-1")
    detached = api.post(f"/v1/payment_methods/{method_id}/detach", json={}, headers=detach_headers)
    replayed = api.post(f"/v1/payment_methods/{method_id}/detach", json={}, headers=detach_headers)
    assert replayed.headers.get("idempotent-replayed") == "true"
    assert replayed.json() == detached.json()
    attach_headers = _headers(key, "attach-1")
    attach = {"customer": customer["id"]}
    attached = api.post(
        f"/v1/payment_methods/{method_id}/attach", json=attach, headers=attach_headers
    )
    replayed = api.post(
        f"/v1/payment_methods/{method_id}/attach", json=attach, headers=attach_headers
    )
    assert attached.status_code == 200, attached.text
    assert replayed.headers.get("idempotent-replayed") == "true"
    assert replayed.json() == attached.json()
    assert _wait_events(
        api,
        key,
        method_id,
        ["payment_method.attached", "payment_method.detached", "payment_method.attached"],
    ) == sorted(["payment_method.attached", "payment_method.detached", "payment_method.attached"])
