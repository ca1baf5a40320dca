"""The event type catalog through the edge: `GET /v1/event_types` lists every type the platform
publishes with its object's JSON Schema, which real objects and events validate against, and
`enabled_events` takes nothing else."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from jsonschema import Draft202012Validator
from sqlalchemy import func, select

from services.common.db import transaction
from services.payment.models import ProcessorCharge
from services.runtime.platform import LocalPlatform
from services.webhook import catalog
from services.webhook.models import Endpoint
from tests.integration.conftest import MerchantKeys
from tests.integration.test_disputes import (
    FRAUDULENT_CARD,
    disputed_payment,
    submit,
    wait_dispute,
)
from tests.integration.test_payments import card, created, wait_for
from tests.integration.test_payments_refunds import refund, wait_refund
from tests.integration.test_payouts import (
    NO_ACCOUNT,
    PAYS,
    balance,
    create_payout,
    set_payout_settings,
    wait_payout,
)
from tests.integration.webhook_receiver import Receiver, Reply, create_endpoint, wait_until
from tests.rest_errors import api_error

SETTLE_TIMEOUT_S = 60.0


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    """A local HTTP server the platform delivers to."""
    with Receiver().running() as running:
        yield running


def _auth(merchant: MerchantKeys) -> dict[str, str]:
    return {"X-API-Key": merchant.secret_key}


def _get(api: httpx.Client, merchant: MerchantKeys, path: str, **params: Any) -> Any:
    response = api.get(path, params=params, headers=_auth(merchant))
    assert response.status_code == 200, response.text
    return response.json()


def _schemas(api: httpx.Client, merchant: MerchantKeys) -> dict[str, Draft202012Validator]:
    listed = _get(api, merchant, "/v1/event_types")["event_types"]
    return {item["name"]: Draft202012Validator(item["object_schema"]) for item in listed}


def _endpoint_count(sessions: Any, merchant: MerchantKeys) -> int:
    with transaction(sessions) as session:
        return int(
            session.scalar(
                select(func.count())
                .select_from(Endpoint)
                .where(Endpoint.merchant_id == merchant.id)
            )
            or 0
        )


def test_event_types__list_the_catalog_each_with_its_object_schema(
    api: httpx.Client, merchant: MerchantKeys
) -> None:
    listed = _get(api, merchant, "/v1/event_types")["event_types"]

    assert [item["name"] for item in listed] == [entry.name for entry in catalog.entries()]
    assert {item["name"] for item in listed} >= {
        "payment.processing",
        "payment.requires_capture",
        "payment.succeeded",
        "payment.failed",
        "payment.canceled",
        "refund.succeeded",
        "refund.failed",
        "webhook_endpoint.disabled",
    }
    for item in listed:
        assert item["description"] and item["object_type"].startswith("paymesh."), item
        schema = item["object_schema"]
        Draft202012Validator.check_schema(schema)
        assert schema["type"] == "object", item["name"]
        # Every object has an id but the balance, which is the merchant's one balance.
        has_id = "id" in schema["properties"]
        assert has_id != (item["object_type"] == "paymesh.ledger.v1.Balance"), item["name"]
    payment = listed[0]["object_schema"]
    assert listed[0]["object_type"] == "paymesh.payment.v1.Payment"
    assert payment["properties"]["amount"] == {
        "type": "integer",
        "format": "int64",
        "description": "Amount in the currency's minor unit.",
    }


def _cause_payout_events(
    api: httpx.Client, merchant: MerchantKeys, platform: LocalPlatform
) -> dict[str, dict[str, Any]]:
    """payout.created, .updated, .paid, .failed, .canceled (balance.available came before)."""
    key = merchant.secret_key
    wait_until(
        lambda: (balance(api, key).get("USD", (0, 0))[0] >= 300) or None,
        timeout_s=SETTLE_TIMEOUT_S,
    )
    made = create_payout(api, key, amount=100, currency="USD").json()
    paid_payout = wait_payout(api, key, made["id"], {"paid"})
    set_payout_settings(api, key, bank_account_number=NO_ACCOUNT)
    refused = create_payout(api, key, amount=100, currency="USD").json()
    failed_payout = wait_payout(api, key, refused["id"], {"failed"})
    platform.kill("payment-worker")  # so that the next payout stays pending
    try:
        pending = create_payout(api, key, amount=100, currency="USD").json()
        canceled = api.post(f"/v1/payouts/{pending['id']}/cancel", json={}, headers=_auth(merchant))
        assert canceled.status_code == 200, canceled.text
    finally:
        platform.start_process("payment-worker")
    return {
        "payout.paid": paid_payout,
        "payout.failed": failed_payout,
        "payout.canceled": canceled.json(),
        "balance.available": _get(api, merchant, "/v1/balance"),
    }


def _cause_every_event_type(
    api: httpx.Client, merchant: MerchantKeys, sessions: Any, receiver: Receiver
) -> dict[str, dict[str, Any]]:
    """Makes the platform publish one event of each type; returns objects as GET shows them.

    The payouts' come after, from `_cause_payout_events`: the funds captured here become
    available at once (no settlement delay) and pay them.
    """
    key = merchant.secret_key
    set_payout_settings(api, key, bank_account_number=PAYS, settlement_delay_s=0)
    # webhook_endpoint.disabled: payment.succeeded reaches an endpoint that answers 410 Gone.
    path = f"/gone/{merchant.id}"
    receiver.script(path, then=Reply(410))
    endpoint = create_endpoint(api, key, receiver.url(path), ["payment.succeeded"])
    # payment.processing, .requires_capture, .succeeded; refund.succeeded.
    held = created(api, key, amount=5000, capture_method="manual", payment_method={"card": card()})
    wait_for(api, key, held["id"], {"requires_capture"})
    captured = api.post(f"/v1/payments/{held['id']}/capture", json={}, headers=_auth(merchant))
    assert captured.status_code == 200, captured.text
    succeeded = wait_for(api, key, held["id"], {"succeeded"})
    refunded = refund(api, key, payment_id=held["id"], amount=1000)
    assert refunded.status_code == 200, refunded.text
    refund_succeeded = wait_refund(api, key, refunded.json()["id"])
    assert refund_succeeded["status"] == "succeeded"
    # payment.failed: a declined card.
    declined = created(api, key, payment_method={"card": card("4000000000000002")})
    failed = wait_for(api, key, declined["id"], {"failed"})
    # payment.requires_action: a card whose issuer asks for 3-D Secure.
    challenged = created(api, key, payment_method={"card": card("4000002760003184")})
    assert challenged["status"] == "requires_action", challenged
    # payment.canceled: an authorization canceled before capture.
    uncaptured = created(
        api, key, amount=700, capture_method="manual", payment_method={"card": card()}
    )
    wait_for(api, key, uncaptured["id"], {"requires_capture"})
    canceled = api.post(
        f"/v1/payments/{uncaptured['id']}/cancel",
        json={"cancellation_reason": "requested_by_customer"},
        headers=_auth(merchant),
    )
    assert canceled.status_code == 200, canceled.text
    # refund.failed: the processor has voided the charge behind the service's back.
    with transaction(sessions) as session:
        session.scalars(
            select(ProcessorCharge).where(ProcessorCharge.payment_id == held["id"])
        ).one().status = "voided"
    declined_refund = refund(api, key, payment_id=held["id"], amount=500)
    assert declined_refund.status_code == 200, declined_refund.text
    refund_failed = wait_refund(api, key, declined_refund.json()["id"])
    assert refund_failed["status"] == "failed"
    # customer.created, .updated, .deleted; payment_method.attached (a card saved while paying)
    # and .detached.
    customer = api.post("/v1/customers", json={"email": "e@example.com"}, headers=_auth(merchant))
    assert customer.status_code == 200, customer.text
    customer_id = customer.json()["id"]
    updated = api.patch(f"/v1/customers/{customer_id}", json={"name": "E"}, headers=_auth(merchant))
    assert updated.status_code == 200, updated.text
    saving = created(
        api,
        key,
        customer=customer_id,
        setup_future_usage="off_session",
        payment_method={"card": card()},
    )
    # The card is attached once its payment succeeded; then it is detached.
    assert wait_for(api, key, saving["id"], {"succeeded"})["status"] == "succeeded"
    detached = api.post(
        f"/v1/payment_methods/{saving['payment_method']}/detach", json={}, headers=_auth(merchant)
    )
    assert detached.status_code == 200, detached.text
    deleted = api.delete(f"/v1/customers/{customer_id}", headers=_auth(merchant))
    assert deleted.status_code == 200, deleted.text
    # dispute.created, .funds_withdrawn, .updated, .closed, .funds_reinstated: a chargeback
    # answered with the winning test evidence.
    _, dispute = disputed_payment(api, key, FRAUDULENT_CARD)
    assert submit(api, key, dispute["id"], "winning_evidence").status_code == 200
    won = wait_dispute(api, key, dispute["id"], status="won", funds_reinstated=True)
    return {
        "dispute.closed": won,
        "customer.updated": updated.json(),
        "payment_method.detached": detached.json(),
        "payment.succeeded": succeeded,
        "payment.failed": failed,
        "payment.canceled": canceled.json(),
        "payment.requires_action": _get(api, merchant, f"/v1/payments/{challenged['id']}"),
        "refund.succeeded": refund_succeeded,
        "refund.failed": refund_failed,
        "webhook_endpoint.disabled": _get(api, merchant, f"/v1/webhook_endpoints/{endpoint['id']}"),
    }


def test_event_types__every_published_event_and_object_validates_against_its_schema(
    api: httpx.Client,
    merchant: MerchantKeys,
    sessions: Any,
    receiver: Receiver,
    platform: LocalPlatform,
) -> None:
    schemas = _schemas(api, merchant)
    shown = _cause_every_event_type(api, merchant, sessions, receiver)
    shown |= _cause_payout_events(api, merchant, platform)

    def all_types_arrived() -> list[dict[str, Any]] | None:
        events: list[dict[str, Any]] = _get(api, merchant, "/v1/events", page_size=100)["events"]
        return events if {event["type"] for event in events} >= set(schemas) else None

    events = wait_until(all_types_arrived, timeout_s=SETTLE_TIMEOUT_S)

    assert {event["type"] for event in events} == set(schemas)
    for event in events:
        schemas[event["type"]].validate(event["data"]["object"])
    # The objects as GET answers them validate too: a webhook's object is what a GET shows.
    for event_type, obj in shown.items():
        schemas[event_type].validate(obj)
    # And an object of another shape does not.
    payment = shown["payment.succeeded"]
    assert not schemas["payment.succeeded"].is_valid({**payment, "amount": str(payment["amount"])})
    assert not schemas["refund.succeeded"].is_valid({"amount": 1})


@pytest.mark.parametrize(
    "enabled_events",
    [["payment.succeded"], ["payment.succeeded", "charge.succeeded"], ["*", "refund.done"]],
)
def test_create__an_unknown_event_type_is_400_naming_it_and_writes_nothing(
    api: httpx.Client, merchant: MerchantKeys, sessions: Any, enabled_events: list[str]
) -> None:
    unknown = next(value for value in enabled_events if value not in ("*", "payment.succeeded"))

    response = api.post(
        "/v1/webhook_endpoints",
        json={"url": "https://hooks.example.com/x", "enabled_events": enabled_events},
        headers={**_auth(merchant), "Idempotency-Key": f"catalog-{unknown}"},
    )

    error = api_error(response, 400, "invalid_argument", param="enabled_events")
    assert unknown in error["message"]
    assert _endpoint_count(sessions, merchant) == 0


def test_update__an_unknown_event_type_is_400_and_changes_nothing(
    api: httpx.Client, merchant: MerchantKeys
) -> None:
    endpoint = create_endpoint(api, merchant.secret_key, "https://hooks.example.com/x", ["*"])
    before = _get(api, merchant, f"/v1/webhook_endpoints/{endpoint['id']}")

    response = api.patch(
        f"/v1/webhook_endpoints/{endpoint['id']}",
        json={"enabled_events": ["refund.succeeded", "refund.refunded"], "description": "new"},
        headers=_auth(merchant),
    )

    error = api_error(response, 400, "invalid_argument", param="enabled_events")
    assert "refund.refunded" in error["message"]
    assert _get(api, merchant, f"/v1/webhook_endpoints/{endpoint['id']}") == before
    changed = api.patch(
        f"/v1/webhook_endpoints/{endpoint['id']}",
        json={"enabled_events": ["refund.succeeded", "refund.failed"]},
        headers=_auth(merchant),
    )
    assert changed.status_code == 200, changed.text
    assert changed.json()["enabled_events"] == ["refund.succeeded", "refund.failed"]


@pytest.mark.parametrize(
    "headers",
    [{}, {"X-API-Key": "sk_test_not_a_key"}, {"Authorization": "Bearer nope"}],
    ids=["no-key", "unknown-key", "bad-bearer"],
)
def test_event_types__without_a_valid_secret_key_is_401(
    api: httpx.Client, headers: dict[str, str]
) -> None:
    response = api.get("/v1/event_types", headers=headers)

    assert response.status_code == 401, response.text
    assert list(response.json()) == ["error"]


def test_event_types__a_publishable_key_is_403(api: httpx.Client, merchant: MerchantKeys) -> None:
    response = api.get("/v1/event_types", headers={"X-API-Key": merchant.publishable_key})

    api_error(response, 403, "secret_key_required")
