"""Rows as the API shows them (proto messages), shared by the servicers and the worker."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from paymesh.webhook.v1 import webhook_internal_pb2, webhook_pb2

from services.common.rest_json import message_to_json
from services.webhook.job_ids import job_id
from services.webhook.models import Delivery, DeliveryAttempt, Endpoint, Event


def event_to_proto(event: Event) -> webhook_pb2.Event:
    """The event as the API shows it, the object under `data.object`."""
    message = webhook_pb2.Event(id=event.id, type=event.type, livemode=event.livemode)
    message.create_time.FromDatetime(event.create_time)
    message.data.update({"object": event.data})
    return message


def event_payload(event: Event) -> dict[str, Any]:
    """The JSON body a webhook carries: the event exactly as `GET /v1/events/{id}` shows it."""
    # As the edge prints it: every field, so a test-mode event says `"livemode": false`.
    payload = message_to_json(event_to_proto(event))
    # Struct holds numbers as doubles; the stored object keeps the publisher's exact values.
    payload["data"] = {"object": event.data}
    return payload


def endpoint_to_proto(endpoint: Endpoint, *, secret: str = "") -> webhook_pb2.WebhookEndpoint:
    """The endpoint as the API shows it; `secret` only on create and rotate."""
    message = webhook_pb2.WebhookEndpoint(
        id=endpoint.id,
        url=endpoint.url,
        enabled_events=endpoint.enabled_events,
        description=endpoint.description,
        status=endpoint.status,
        secret=secret,
        livemode=endpoint.livemode,
        disabled_reason=endpoint.disabled_reason,
    )
    message.create_time.FromDatetime(endpoint.create_time)
    message.update_time.FromDatetime(endpoint.update_time)
    return message


def job_id_of(delivery: Delivery) -> str:
    """The job id of the delivery's next attempt while it is live, else of its last one."""
    live = delivery.status in ("pending", "failing")
    return job_id(delivery.id, delivery.attempt_count + 1 if live else delivery.attempt_count)


def _set_time(field: Any, value: datetime | None) -> None:
    if value is not None:
        field.FromDatetime(value)


def delivery_to_proto(
    delivery: Delivery, *, event_type: str, endpoint_url: str
) -> webhook_internal_pb2.Delivery:
    """The delivery for internal callers (operators)."""
    message = webhook_internal_pb2.Delivery(
        id=delivery.id,
        job_id=job_id_of(delivery),
        event_id=delivery.event_id,
        event_type=event_type,
        endpoint_id=delivery.endpoint_id,
        endpoint_url=endpoint_url,
        merchant_id=delivery.merchant_id,
        status=delivery.status,
        attempt_count=delivery.attempt_count,
        last_status_code=delivery.last_status_code,
        last_error=delivery.last_error,
    )
    if delivery.status in ("pending", "failing"):
        _set_time(message.next_attempt_time, delivery.next_attempt_time)
    _set_time(message.create_time, delivery.create_time)
    _set_time(message.update_time, delivery.update_time)
    return message


def attempt_to_proto(attempt: DeliveryAttempt) -> webhook_internal_pb2.DeliveryAttempt:
    """One attempt for internal callers."""
    message = webhook_internal_pb2.DeliveryAttempt(
        attempt_number=attempt.attempt_number,
        duration_ms=attempt.duration_ms or 0,
        status_code=attempt.status_code,
        response_body=attempt.response_body,
        error=attempt.error,
    )
    message.start_time.FromDatetime(attempt.start_time)
    return message
