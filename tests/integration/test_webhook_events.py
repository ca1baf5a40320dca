"""Events: publishing (internal, idempotent), listing and reading them through the edge."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import httpx
import pytest
from google.protobuf import struct_pb2
from paymesh.webhook.v1 import webhook_internal_pb2, webhook_internal_pb2_grpc

from services.common.clients import sync_channel
from services.common.ids import new_id
from services.runtime.platform import LocalPlatform
from tests.integration.conftest import MerchantKeys
from tests.integration.webhook_receiver import publish

Stub = webhook_internal_pb2_grpc.WebhookInternalServiceStub


@pytest.fixture(scope="module")
def internal(platform: LocalPlatform) -> Iterator[Stub]:
    """A stub of the internal webhook service, on its own port (never through the edge)."""
    channel = sync_channel(platform.settings.target("webhook"))
    yield Stub(channel)
    channel.close()


def _auth(merchant: MerchantKeys) -> dict[str, str]:
    return {"X-API-Key": merchant.secret_key}


def test_publish__event_is_listed_and_readable(
    internal: Stub, api: httpx.Client, merchant: MerchantKeys
) -> None:
    obj = {"id": "pay_abc", "amount": "100", "status": "succeeded", "count": 3}
    request = publish(internal, merchant.id, obj=obj)

    one = api.get(f"/v1/events/{request.id}", headers=_auth(merchant))
    listed = api.get("/v1/events", headers=_auth(merchant))

    assert one.status_code == 200, one.text
    assert one.json()["type"] == "payment.succeeded"
    assert one.json()["livemode"] is False
    assert one.json()["data"]["object"] == obj
    assert [e["id"] for e in listed.json()["events"]] == [request.id]


def test_publish__same_id_twice_stores_one_event(
    internal: Stub, api: httpx.Client, merchant: MerchantKeys
) -> None:
    event_id = new_id("evt")
    publish(internal, merchant.id, event_id=event_id)
    publish(internal, merchant.id, event_id=event_id, event_type="payment.failed")

    listed = api.get("/v1/events", headers=_auth(merchant))

    assert [(e["id"], e["type"]) for e in listed.json()["events"]] == [
        (event_id, "payment.succeeded")
    ]


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"id": "pay_notanevent"}, "id"),
        ({"id": ""}, "id"),
        ({"merchant_id": ""}, "merchant_id"),
        ({"type": ""}, "type"),
        ({"type": "Payment Succeeded"}, "type"),
        ({"type": "payment"}, "type"),
        ({"type": "a." + "b" * 200}, "type"),
        ({"object": ""}, "object"),
    ],
)
def test_publish__bad_request_is_refused_and_stores_nothing(
    internal: Stub, api: httpx.Client, merchant: MerchantKeys, change: dict[str, str], field: str
) -> None:
    request = webhook_internal_pb2.PublishEventRequest(
        id=new_id("evt"), merchant_id=merchant.id, type="payment.succeeded"
    )
    request.object.update({"id": "pay_1"})
    for name, value in change.items():
        if name == "object":
            request.ClearField("object")
        else:
            setattr(request, name, value)
    with pytest.raises(grpc.RpcError) as caught:
        internal.PublishEvent(request, timeout=10)

    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field in (caught.value.details() or "")
    assert api.get("/v1/events", headers=_auth(merchant)).json().get("events", []) == []


def test_publish__payload_over_the_cap_is_refused(
    internal: Stub, api: httpx.Client, merchant: MerchantKeys
) -> None:
    huge = struct_pb2.Struct()
    huge.update({"id": "pay_big", "blob": "x" * (300 * 1024)})
    request = webhook_internal_pb2.PublishEventRequest(
        id=new_id("evt"), merchant_id=merchant.id, type="payment.succeeded", object=huge
    )

    with pytest.raises(grpc.RpcError) as caught:
        internal.PublishEvent(request, timeout=10)

    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert api.get(f"/v1/events/{request.id}", headers=_auth(merchant)).status_code == 404


def test_events__filtered_by_type_and_paginated_newest_first(
    internal: Stub, api: httpx.Client, merchant: MerchantKeys
) -> None:
    published = [publish(internal, merchant.id).id for _ in range(3)]
    refund = publish(internal, merchant.id, event_type="refund.succeeded").id

    first = api.get("/v1/events", params={"page_size": 2}, headers=_auth(merchant)).json()
    second = api.get(
        "/v1/events",
        params={"page_size": 2, "page_token": first["next_page_token"]},
        headers=_auth(merchant),
    ).json()
    refunds = api.get(
        "/v1/events", params={"type": "refund.succeeded"}, headers=_auth(merchant)
    ).json()

    assert [e["id"] for e in first["events"] + second["events"]] == [refund, *published[::-1]]
    assert second.get("next_page_token", "") == ""
    assert [e["id"] for e in refunds["events"]] == [refund]


@pytest.mark.parametrize(
    "params",
    [{"page_size": 101}, {"page_size": -1}, {"page_token": "garbage!"}, {"type": "NOT A TYPE"}],
)
def test_events__bad_list_parameters_are_400(
    api: httpx.Client, merchant: MerchantKeys, params: dict[str, str | int]
) -> None:
    response = api.get("/v1/events", params=params, headers=_auth(merchant))

    assert response.status_code == 400, response.text


def test_events__other_merchants_and_live_mode_events_are_not_found(
    internal: Stub, api: httpx.Client, merchant: MerchantKeys, other_merchant: MerchantKeys
) -> None:
    theirs = publish(internal, other_merchant.id).id
    live = publish(internal, merchant.id, livemode=True).id

    assert api.get(f"/v1/events/{theirs}", headers=_auth(merchant)).status_code == 404
    assert api.get(f"/v1/events/{live}", headers=_auth(merchant)).status_code == 404
    assert api.get("/v1/events/evt_unknown", headers=_auth(merchant)).status_code == 404
    assert api.get("/v1/events", headers=_auth(merchant)).json().get("events", []) == []


def test_events__need_a_secret_key(api: httpx.Client, merchant: MerchantKeys) -> None:
    assert api.get("/v1/events").status_code == 401
    publishable = api.get("/v1/events", headers={"X-API-Key": merchant.publishable_key})
    assert publishable.status_code == 403


def test_object_events__lists_an_objects_events_oldest_first(
    internal: Stub, merchant: MerchantKeys
) -> None:
    object_id = new_id("pay")
    first = publish(internal, merchant.id, obj={"id": object_id}, event_type="payment.created")
    second = publish(internal, merchant.id, obj={"id": object_id})
    publish(internal, merchant.id)

    reply = internal.ListObjectEvents(
        webhook_internal_pb2.ListObjectEventsRequest(object_id=object_id), timeout=10
    )

    assert [e.id for e in reply.events] == [first.id, second.id]


def test_publish_is_not_routed_by_the_edge(api: httpx.Client, merchant: MerchantKeys) -> None:
    response = api.post(
        "/paymesh.webhook.v1.WebhookInternalService/PublishEvent",
        headers={"X-API-Key": merchant.secret_key, "Content-Type": "application/json"},
        content=b"{}",
    )

    assert response.status_code == 404


@pytest.mark.parametrize(
    ("method", "message", "code"),
    [
        (
            "ReplayDelivery",
            webhook_internal_pb2.ReplayDeliveryRequest(id="garbage"),
            grpc.StatusCode.NOT_FOUND,
        ),
        (
            "ReplayDelivery",
            webhook_internal_pb2.ReplayDeliveryRequest(id="whd_unknown-attempt-1"),
            grpc.StatusCode.NOT_FOUND,
        ),
        (
            "ReplayDeliveries",
            webhook_internal_pb2.ReplayDeliveriesRequest(limit=5000),
            grpc.StatusCode.INVALID_ARGUMENT,
        ),
        (
            "ListDeliveryAttempts",
            webhook_internal_pb2.ListDeliveryAttemptsRequest(delivery_id="whd_unknown"),
            grpc.StatusCode.NOT_FOUND,
        ),
        (
            "ListFailedDeliveries",
            webhook_internal_pb2.ListFailedDeliveriesRequest(page_size=1000),
            grpc.StatusCode.INVALID_ARGUMENT,
        ),
        (
            "ListFailedDeliveries",
            webhook_internal_pb2.ListFailedDeliveriesRequest(page_token="forged"),
            grpc.StatusCode.INVALID_ARGUMENT,
        ),
        (
            "ListObjectEvents",
            webhook_internal_pb2.ListObjectEventsRequest(object_id=""),
            grpc.StatusCode.INVALID_ARGUMENT,
        ),
    ],
)
def test_internal__bad_requests_get_clear_errors(
    internal: Stub, method: str, message: object, code: grpc.StatusCode
) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        getattr(internal, method)(message, timeout=10)

    assert caught.value.code() == code
