"""Events: publishing (internal, idempotent), listing and reading them through the edge."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import grpc
import httpx
import pytest
from google.protobuf import struct_pb2
from google.rpc import error_details_pb2, status_pb2
from paymesh.webhook.v1 import webhook_internal_pb2, webhook_internal_pb2_grpc
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from services.common.clients import sync_channel
from services.common.db import transaction
from services.common.ids import new_id
from services.runtime.platform import LocalPlatform
from services.webhook.models import Delivery
from tests.integration.conftest import MerchantKeys
from tests.integration.webhook_receiver import create_endpoint, publish

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
        ({"id": "evt_" + "a" * 64}, "id"),
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
    assert (first["has_more"], second["has_more"]) == (True, False)
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


def _event(merchant_id: str, **fields: Any) -> webhook_internal_pb2.PublishEventRequest:
    """A valid event to publish, with `fields` changed."""
    request = webhook_internal_pb2.PublishEventRequest(
        id=new_id("evt"), merchant_id=merchant_id, type="payment.succeeded"
    )
    request.object.update({"id": new_id("pay"), "amount": "100"})
    for name, value in fields.items():
        setattr(request, name, value)
    return request


def _reason(status: status_pb2.Status) -> str:
    (detail,) = [d for d in status.details if d.Is(error_details_pb2.ErrorInfo.DESCRIPTOR)]
    info = error_details_pb2.ErrorInfo()
    detail.Unpack(info)
    return str(info.reason)


def _listed(api: httpx.Client, merchant: MerchantKeys) -> list[tuple[str, str]]:
    events = api.get("/v1/events", params={"page_size": 100}, headers=_auth(merchant)).json()
    return sorted((e["id"], e["type"]) for e in events.get("events", []))


def _deliveries(sessions: sessionmaker[Session], event_ids: list[str]) -> dict[str, int]:
    with transaction(sessions) as session:
        rows = session.execute(
            select(Delivery.event_id, func.count())
            .where(Delivery.event_id.in_(event_ids))
            .group_by(Delivery.event_id)
        ).all()
    return {event_id: count for event_id, count in rows}


def test_publish_events__refused_events_leave_the_others_stored(
    internal: Stub, api: httpx.Client, merchant: MerchantKeys
) -> None:
    nul = _event(merchant.id)
    nul.object.update({"id": "pay_1", "note": "a\x00b"})
    batch = [
        _event(merchant.id),
        _event(merchant.id, type="Not A Type"),
        _event(merchant.id, type="refund.succeeded"),
        _event(merchant.id, id="evt_" + "a" * 64),
        nul,
        _event(merchant.id, id="pay_notanevent"),
    ]

    reply = internal.PublishEvents(
        webhook_internal_pb2.PublishEventsRequest(events=batch), timeout=15
    )

    assert [result.id for result in reply.results] == [event.id for event in batch]
    refused = [result.HasField("error") for result in reply.results]
    assert refused == [False, True, False, True, True, True]
    for result in reply.results[1::2] + reply.results[4:5]:
        assert result.error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
        assert _reason(result.error) == "INVALID_ARGUMENT"
    assert "type" in reply.results[1].error.message
    assert _listed(api, merchant) == sorted(
        [(batch[0].id, "payment.succeeded"), (batch[2].id, "refund.succeeded")]
    )


def test_publish_events__a_repeated_id_is_stored_and_fanned_out_once(
    internal: Stub, api: httpx.Client, merchant: MerchantKeys, sessions: sessionmaker[Session]
) -> None:
    create_endpoint(api, merchant.secret_key, "http://127.0.0.1:9/hook", ["*"])
    first = _event(merchant.id)
    again = _event(merchant.id, id=first.id, type="payment.failed")
    other = _event(merchant.id)

    reply = internal.PublishEvents(
        webhook_internal_pb2.PublishEventsRequest(events=[first, again, other]), timeout=15
    )

    assert [result.HasField("error") for result in reply.results] == [False, False, False]
    assert _listed(api, merchant) == sorted(
        [(first.id, "payment.succeeded"), (other.id, "payment.succeeded")]
    )
    assert _deliveries(sessions, [first.id, other.id]) == {first.id: 1, other.id: 1}


def test_publish_events__replaying_a_batch_changes_nothing(
    internal: Stub, api: httpx.Client, merchant: MerchantKeys, sessions: sessionmaker[Session]
) -> None:
    create_endpoint(api, merchant.secret_key, "http://127.0.0.1:9/hook", ["payment.succeeded"])
    batch = webhook_internal_pb2.PublishEventsRequest(
        events=[_event(merchant.id) for _ in range(3)] + [_event(merchant.id, type="x")]
    )
    ids = [event.id for event in batch.events]

    first = internal.PublishEvents(batch, timeout=15)
    listed, delivered = _listed(api, merchant), _deliveries(sessions, ids)
    second = internal.PublishEvents(batch, timeout=15)

    assert first == second
    assert [result.HasField("error") for result in second.results] == [False] * 3 + [True]
    assert len(listed) == 3
    assert delivered == {event_id: 1 for event_id in ids[:3]}
    assert _listed(api, merchant) == listed
    assert _deliveries(sessions, ids) == delivered


@pytest.mark.parametrize("count", [0, 501])
def test_publish_events__an_empty_or_oversized_batch_is_refused_whole(
    internal: Stub, api: httpx.Client, merchant: MerchantKeys, count: int
) -> None:
    batch = webhook_internal_pb2.PublishEventsRequest(
        events=[_event(merchant.id) for _ in range(count)]
    )

    with pytest.raises(grpc.RpcError) as caught:
        internal.PublishEvents(batch, timeout=15)

    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "events" in (caught.value.details() or "")
    assert _listed(api, merchant) == []


def test_publish_events_is_not_routed_by_the_edge(
    api: httpx.Client, merchant: MerchantKeys
) -> None:
    response = api.post(
        "/paymesh.webhook.v1.WebhookInternalService/PublishEvents",
        headers={"X-API-Key": merchant.secret_key, "Content-Type": "application/json"},
        content=b"{}",
    )

    assert response.status_code == 404
