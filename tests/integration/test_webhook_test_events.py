"""Test events (issue 15, point 4): `POST /v1/webhook_endpoints/{id}/test` sends a signed event
of a catalog type, with the catalog's example data, to one endpoint, shown as a delivery."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from standardwebhooks.webhooks import Webhook

from services.admin import merchants
from services.common.db import transaction
from tests.integration.conftest import MerchantKeys
from tests.integration.webhook_receiver import Receiver, create_endpoint, wait_until


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver().running() as running:
        yield running


def _test(
    api: httpx.Client, key: str, endpoint_id: str, body: object, *, idempotency_key: str = ""
) -> httpx.Response:
    headers = {"X-API-Key": key}
    if idempotency_key:
        headers["Idempotency-Key"] = idempotency_key
    return api.post(f"/v1/webhook_endpoints/{endpoint_id}/test", headers=headers, json=body)


def test_test_event__delivered_signed_with_example_data_and_listed(
    api: httpx.Client, merchant: MerchantKeys, receiver: Receiver
) -> None:
    path = f"/test-event/{merchant.id}"
    # Subscribed to another type: a test event goes all the same, as the merchant asked.
    endpoint = create_endpoint(api, merchant.secret_key, receiver.url(path), ["refund.succeeded"])
    answer = _test(api, merchant.secret_key, str(endpoint["id"]), {"type": "payment.failed"})
    assert answer.status_code == 200, answer.text
    delivery = answer.json()
    assert delivery["endpoint_id"] == endpoint["id"]
    assert delivery["event_type"] == "payment.failed"
    assert delivery["status"] == "pending"

    [received] = receiver.wait_for(path, 1)
    payload = Webhook(str(endpoint["secret"])).verify(received.body, received.headers)
    assert received.headers["webhook-id"] == delivery["event_id"] == payload["id"]
    assert payload["type"] == "payment.failed"
    assert payload["livemode"] is False
    obj = payload["data"]["object"]
    # The catalog's example, as a test-mode object of this merchant in the type's state.
    assert obj["id"].startswith("pay_") and obj["status"] == "failed"
    assert obj["merchant_id"] == merchant.id and obj["livemode"] is False
    assert obj["client_secret"] == "" and isinstance(obj["amount"], int)

    headers = {"X-API-Key": merchant.secret_key}

    def delivered() -> list[dict[str, object]] | None:
        listed = api.get(
            f"/v1/webhook_endpoints/{endpoint['id']}/deliveries", headers=headers
        ).json()["deliveries"]
        return listed if listed and listed[0]["status"] == "delivered" else None

    [listed] = wait_until(delivered)
    assert listed["id"] == delivery["id"] and listed["event_type"] == "payment.failed"
    attempts = api.get(f"/v1/webhook_deliveries/{delivery['id']}/attempts", headers=headers)
    assert [a["status_code"] for a in attempts.json()["attempts"]] == [200]
    # The event is the merchant's test-mode event, as the webhook carried it.
    event = api.get(f"/v1/events/{delivery['event_id']}", headers=headers)
    assert event.status_code == 200 and event.json()["data"] == payload["data"]


def test_test_event__defaults_to_payment_succeeded_and_is_idempotent(
    api: httpx.Client, merchant: MerchantKeys, receiver: Receiver
) -> None:
    path = f"/test-default/{merchant.id}"
    endpoint = create_endpoint(api, merchant.secret_key, receiver.url(path))
    first = _test(api, merchant.secret_key, str(endpoint["id"]), {}, idempotency_key="t-1")
    assert first.status_code == 200, first.text
    assert first.json()["event_type"] == "payment.succeeded"
    again = _test(api, merchant.secret_key, str(endpoint["id"]), {}, idempotency_key="t-1")
    assert again.status_code == 200 and again.json() == first.json()
    assert again.headers.get("idempotent-replayed") == "true"
    reused = _test(
        api,
        merchant.secret_key,
        str(endpoint["id"]),
        {"type": "refund.failed"},
        idempotency_key="t-1",
    )
    assert reused.status_code == 400 and reused.json()["error"]["code"] == "idempotency_key_reused"
    [received] = receiver.wait_for(path, 1)
    assert json.loads(received.body)["data"]["object"]["status"] == "succeeded"
    listed = api.get(
        f"/v1/webhook_endpoints/{endpoint['id']}/deliveries",
        headers={"X-API-Key": merchant.secret_key},
    ).json()["deliveries"]
    assert [d["id"] for d in listed] == [first.json()["id"]]


def test_test_event__bad_requests_are_refused_and_send_nothing(
    api: httpx.Client,
    merchant: MerchantKeys,
    other_merchant: MerchantKeys,
    receiver: Receiver,
) -> None:
    path = f"/test-bad/{merchant.id}"
    endpoint = create_endpoint(api, merchant.secret_key, receiver.url(path))
    endpoint_id = str(endpoint["id"])
    key = merchant.secret_key

    unknown = _test(api, key, endpoint_id, {"type": "payment.exploded"})
    assert unknown.status_code == 400, unknown.text
    assert unknown.json()["error"]["param"] == "type"
    assert "payment.exploded" in unknown.json()["error"]["message"]
    wrong_type = _test(api, key, endpoint_id, {"type": 7})
    assert wrong_type.status_code == 400, wrong_type.text
    unknown_member = _test(api, key, endpoint_id, {"kind": "payment.succeeded"})
    assert unknown_member.status_code == 400, unknown_member.text
    malformed = api.post(
        f"/v1/webhook_endpoints/{endpoint_id}/test",
        headers={"X-API-Key": key, "Content-Type": "application/json"},
        content=b'{"type": "payment.succeeded",}',
    )
    assert malformed.status_code == 400 and malformed.json()["error"]["code"] == "invalid_json"

    # Another merchant's endpoint, and an unknown one, are not found.
    for other_key, target in ((other_merchant.secret_key, endpoint_id), (key, "we_unknown")):
        missing = _test(api, other_key, target, {"type": "payment.succeeded"})
        assert missing.status_code == 404, missing.text
    # A publishable key opens nothing.
    assert _test(api, merchant.publishable_key, endpoint_id, {}).status_code in (401, 403)

    # A disabled endpoint says so.
    disabled = api.patch(
        f"/v1/webhook_endpoints/{endpoint_id}",
        headers={"X-API-Key": key},
        json={"enabled": False},
    )
    assert disabled.status_code == 200, disabled.text
    refused = _test(api, key, endpoint_id, {"type": "payment.succeeded"})
    assert refused.status_code == 400, refused.text
    assert refused.json()["error"]["code"] == "webhook_endpoint_not_enabled"

    listed = api.get(
        f"/v1/webhook_endpoints/{endpoint_id}/deliveries", headers={"X-API-Key": key}
    ).json()
    assert listed.get("deliveries", []) == []
    assert receiver.received(path) == []


def test_test_event__to_a_live_endpoint_is_livemode_false_and_its_delivery_is_live(
    sessions: Any, api: httpx.Client, merchant: MerchantKeys, receiver: Receiver
) -> None:
    with transaction(sessions) as session:
        live_key = merchants.create_api_key(
            session, merchant_id=merchant.id, mode="live", kind="secret"
        ).key
    path = f"/test-live/{merchant.id}"
    endpoint = create_endpoint(api, live_key, receiver.url(path))
    assert endpoint["livemode"] is True
    answer = _test(api, live_key, str(endpoint["id"]), {"type": "refund.succeeded"})
    assert answer.status_code == 200, answer.text
    delivery = answer.json()
    assert delivery["livemode"] is True

    [received] = receiver.wait_for(path, 1)
    payload = Webhook(str(endpoint["secret"])).verify(received.body, received.headers)
    # Not real money, whatever the endpoint's mode.
    assert payload["livemode"] is False and payload["data"]["object"]["livemode"] is False
    # The delivery is the live endpoint's (its live log lists it); the event is a test-mode one.
    live, test = {"X-API-Key": live_key}, {"X-API-Key": merchant.secret_key}
    assert api.get(f"/v1/webhook_deliveries/{delivery['id']}", headers=live).status_code == 200
    assert api.get(f"/v1/webhook_deliveries/{delivery['id']}", headers=test).status_code == 404
    assert api.get(f"/v1/events/{delivery['event_id']}", headers=test).status_code == 200
    assert api.get(f"/v1/events/{delivery['event_id']}", headers=live).status_code == 404
