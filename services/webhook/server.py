"""The webhook service's gRPC servicers: proto <-> domain, nothing more."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

import grpc
from google.protobuf import json_format, timestamp_pb2
from google.protobuf.message import Message
from paymesh.webhook.v1 import (
    webhook_internal_pb2,
    webhook_internal_pb2_grpc,
    webhook_pb2,
    webhook_pb2_grpc,
)
from sqlalchemy.orm import Session

from services.common import idempotency, pages, tracing
from services.common.auth import AuthPolicy, current_principal
from services.common.db import transaction
from services.common.errors import DomainError, InvalidArgument
from services.common.pages import PageTokens, page_size
from services.common.server import ServiceSpec
from services.common.service_main import run_service
from services.common.settings import Settings
from services.webhook import catalog, deliveries, endpoints, events
from services.webhook.dispatch import DueAttempt
from services.webhook.endpoints import Owner
from services.webhook.metrics import pipeline_collector
from services.webhook.models import KEYS, Delivery, DeliveryAttempt, Event
from services.webhook.runtime import Runtime, build_runtime
from services.webhook.views import (
    attempt_to_proto,
    delivery_to_proto,
    endpoint_to_proto,
    event_to_proto,
)

Context = grpc.aio.ServicerContext[Any, Any]

# An event stream reads new events this often (so an event reaches `paymesh listen` within it).
STREAM_POLL_INTERVAL_S = 0.5
# A quiet stream sends a message without an event this often, well within Envoy's idle timeout
# (stream_idle_timeout, 300 s), so neither Envoy nor a client takes it for dead.
STREAM_KEEPALIVE_S = 15.0
# The server ends a stream after this long; the client reopens it from its last cursor, and
# the key is authenticated again (a revoked key stops within this bound).
STREAM_DURATION_S = 300.0
# Types a stream may be filtered to (the catalog is smaller).
STREAM_TYPES_MAX = 50
# What a publishing caller makes of each stored event (the Event message, or nothing).
_Rendered = TypeVar("_Rendered")
_Response = TypeVar("_Response", bound=Message)


def _owner() -> Owner:
    principal = current_principal()
    return Owner(merchant_id=principal.merchant_id, livemode=principal.livemode)


# Struct holds every number as a double; integers up to 2**53 are exact and read back as ints.
_EXACT_INT_MAX = 2**53


def _plain(value: Any) -> Any:
    """A Struct's JSON value with integral numbers as ints, as the publisher meant them."""
    if isinstance(value, float) and value.is_integer() and abs(value) <= _EXACT_INT_MAX:
        return int(value)
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_plain(item) for item in value]
    return value


def _time_or_none(value: timestamp_pb2.Timestamp, present: bool) -> datetime | None:
    return value.ToDatetime(tzinfo=UTC) if present else None


def _draft(request: webhook_internal_pb2.PublishEventRequest) -> events.EventDraft:
    """The domain's view of an event to publish."""
    obj = _plain(json_format.MessageToDict(request.object)) if request.HasField("object") else {}
    return events.EventDraft(
        event_id=request.id,
        merchant_id=request.merchant_id,
        event_type=request.type,
        livemode=request.livemode,
        obj=obj,
        create_time=_time_or_none(request.create_time, request.HasField("create_time")),
    )


def public_delivery(delivery: Delivery, *, event_type: str) -> webhook_pb2.WebhookDelivery:
    """A delivery as its merchant sees it."""
    message = webhook_pb2.WebhookDelivery(
        id=delivery.id,
        event_id=delivery.event_id,
        event_type=event_type,
        endpoint_id=delivery.endpoint_id,
        status=delivery.status,
        attempt_count=delivery.attempt_count,
        last_status_code=delivery.last_status_code,
        last_error=delivery.last_error,
        livemode=delivery.livemode,
    )
    if delivery.status in deliveries.LIVE_STATUSES and delivery.next_attempt_time is not None:
        message.next_attempt_time.FromDatetime(delivery.next_attempt_time)
    message.create_time.FromDatetime(delivery.create_time)
    message.update_time.FromDatetime(delivery.update_time)
    return message


def public_attempt(attempt: DeliveryAttempt) -> webhook_pb2.WebhookDeliveryAttempt:
    """An attempt as the merchant sees it."""
    message = webhook_pb2.WebhookDeliveryAttempt(
        attempt_number=attempt.attempt_number,
        duration_ms=attempt.duration_ms or 0,
        status_code=attempt.status_code,
        response_body=attempt.response_body,
        error=attempt.error,
    )
    message.start_time.FromDatetime(attempt.start_time)
    return message


def _event_type_definition(
    definition: catalog.EventTypeDefinition,
) -> webhook_pb2.EventTypeDefinition:
    """A catalog entry as the API shows it."""
    message = webhook_pb2.EventTypeDefinition(
        name=definition.entry.name,
        description=definition.entry.description,
        object_type=definition.entry.object_type,
    )
    message.object_schema.update(definition.object_schema)
    return message


class WebhookServicer(webhook_pb2_grpc.WebhookServiceServicer):
    """Merchant-facing endpoints, events and deliveries."""

    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime
        self._allow_private = runtime.settings.webhook_allow_private_networks
        self._tokens = PageTokens(runtime.settings.require_secret("page_token_key"))
        # Responses that show a signing secret are stored sealed.
        self._idempotent = idempotency.Runner(
            runtime.sessions,
            runtime.settings,
            KEYS,
            secret=runtime.settings.require_secret("secret_encryption_key"),
            sealed=True,
        )
        # The catalog is fixed by the contracts: built once, and the service does not start
        # when gen/event_types.json is missing or stale.
        definitions = catalog.load_definitions()
        self._event_types = webhook_pb2.ListEventTypesResponse(
            event_types=[_event_type_definition(definition) for definition in definitions]
        )
        self._definitions = {definition.entry.name: definition for definition in definitions}

    def _keyed(
        self,
        owner: Owner,
        operation: str,
        key: str | None,
        request: Message,
        *,
        work: Callable[[Session], _Response],
        response_type: type[_Response],
    ) -> tuple[_Response, bool]:
        """A write under its Idempotency-Key, if any: key, work and response in one transaction."""
        return self._idempotent.run(
            owner=owner.merchant_id,
            livemode=owner.livemode,
            operation=operation,
            key=key,
            request=request,
            work=work,
            parse=response_type.FromString,
        )

    def _keyed_and_queued(
        self,
        owner: Owner,
        operation: str,
        key: str | None,
        request: Message,
        *,
        work: Callable[[Session, list[DueAttempt]], _Response],
        response_type: type[_Response],
    ) -> tuple[_Response, bool]:
        """A keyed write that makes deliveries due, their attempts queued after the commit.

        `work` adds the attempts to the list it is given; they are queued once the transaction
        has committed (a lost enqueue is the sweeper's). A replayed answer queues nothing.
        """
        due: list[DueAttempt] = []
        result = self._keyed(
            owner,
            operation,
            key,
            request,
            work=lambda session: work(session, due),
            response_type=response_type,
        )
        self._runtime.enqueue(due)
        return result

    def _create(
        self, owner: Owner, key: str | None, request: webhook_pb2.CreateWebhookEndpointRequest
    ) -> tuple[webhook_pb2.WebhookEndpoint, bool]:
        def work(session: Session) -> webhook_pb2.WebhookEndpoint:
            endpoint, secret = endpoints.create_endpoint(
                session,
                owner=owner,
                url=request.url,
                enabled_events=list(request.enabled_events),
                description=request.description,
                box=self._runtime.box,
                allow_private=self._allow_private,
            )
            return endpoint_to_proto(endpoint, secret=secret)

        return self._keyed(
            owner,
            "create_webhook_endpoint",
            key,
            request,
            work=work,
            response_type=webhook_pb2.WebhookEndpoint,
        )

    def _get(self, owner: Owner, endpoint_id: str) -> webhook_pb2.WebhookEndpoint:
        with transaction(self._runtime.sessions) as session:
            endpoint = endpoints.get_endpoint_or_raise(
                session, owner=owner, endpoint_id=endpoint_id
            )
            return endpoint_to_proto(endpoint)

    def _list(
        self, owner: Owner, request: webhook_pb2.ListWebhookEndpointsRequest
    ) -> webhook_pb2.ListWebhookEndpointsResponse:
        with transaction(self._runtime.sessions) as session:
            rows, token = endpoints.list_endpoints(
                session,
                tokens=self._tokens,
                owner=owner,
                page_size=page_size(request.page_size),
                page_token=request.page_token,
            )
            return webhook_pb2.ListWebhookEndpointsResponse(
                webhook_endpoints=[endpoint_to_proto(row) for row in rows], **pages.next_page(token)
            )

    def _update(
        self, owner: Owner, key: str | None, request: webhook_pb2.UpdateWebhookEndpointRequest
    ) -> tuple[webhook_pb2.WebhookEndpoint, bool]:
        def work(session: Session) -> webhook_pb2.WebhookEndpoint:
            endpoint = endpoints.update_endpoint(
                session,
                owner=owner,
                endpoint_id=request.id,
                url=request.url if request.HasField("url") else None,
                enabled_events=list(request.enabled_events),
                description=request.description if request.HasField("description") else None,
                enabled=request.enabled if request.HasField("enabled") else None,
                allow_private=self._allow_private,
            )
            return endpoint_to_proto(endpoint)

        return self._keyed(
            owner,
            "update_webhook_endpoint",
            key,
            request,
            work=work,
            response_type=webhook_pb2.WebhookEndpoint,
        )

    def _delete(
        self, owner: Owner, key: str | None, request: webhook_pb2.DeleteWebhookEndpointRequest
    ) -> tuple[webhook_pb2.DeleteWebhookEndpointResponse, bool]:
        def work(session: Session) -> webhook_pb2.DeleteWebhookEndpointResponse:
            endpoint = endpoints.delete_endpoint(session, owner=owner, endpoint_id=request.id)
            return webhook_pb2.DeleteWebhookEndpointResponse(id=endpoint.id, deleted=True)

        return self._keyed(
            owner,
            "delete_webhook_endpoint",
            key,
            request,
            work=work,
            response_type=webhook_pb2.DeleteWebhookEndpointResponse,
        )

    def _rotate(
        self,
        owner: Owner,
        key: str | None,
        request: webhook_pb2.RotateWebhookEndpointSecretRequest,
    ) -> tuple[webhook_pb2.WebhookEndpoint, bool]:
        def work(session: Session) -> webhook_pb2.WebhookEndpoint:
            endpoint, secret = endpoints.rotate_secret(
                session,
                owner=owner,
                endpoint_id=request.id,
                box=self._runtime.box,
                overlap_s=self._runtime.settings.webhook_secret_overlap_s,
            )
            return endpoint_to_proto(endpoint, secret=secret)

        return self._keyed(
            owner,
            "rotate_webhook_endpoint_secret",
            key,
            request,
            work=work,
            response_type=webhook_pb2.WebhookEndpoint,
        )

    def _list_deliveries(
        self, owner: Owner, request: webhook_pb2.ListWebhookDeliveriesRequest
    ) -> webhook_pb2.ListWebhookDeliveriesResponse:
        with transaction(self._runtime.sessions) as session:
            endpoint = endpoints.get_endpoint_or_raise(
                session, owner=owner, endpoint_id=request.endpoint_id
            )
            rows, token = deliveries.list_for_endpoint(
                session,
                tokens=self._tokens,
                endpoint_id=endpoint.id,
                status=request.status,
                page_size=page_size(request.page_size),
                page_token=request.page_token,
                created=pages.CreatedRange.of(request),
            )
            context = deliveries.context_of(session, rows)
            return webhook_pb2.ListWebhookDeliveriesResponse(
                deliveries=[public_delivery(row, event_type=context[row.id][0]) for row in rows],
                **pages.next_page(token),
            )

    def _replay_many(
        self, owner: Owner, key: str | None, request: webhook_pb2.ReplayWebhookDeliveriesRequest
    ) -> tuple[webhook_pb2.ReplayWebhookDeliveriesResponse, bool]:
        if not request.HasField("since"):
            raise InvalidArgument.field("since", "is required")

        def work(
            session: Session, due: list[DueAttempt]
        ) -> webhook_pb2.ReplayWebhookDeliveriesResponse:
            endpoint = endpoints.get_endpoint_or_raise(
                session, owner=owner, endpoint_id=request.endpoint_id
            )
            replayed = deliveries.replay_many(
                session,
                endpoint_id=endpoint.id,
                merchant_id=owner.merchant_id,
                livemode=owner.livemode,
                since=request.since.ToDatetime(tzinfo=UTC),
                include_delivered=request.include_delivered,
                limit=deliveries.replay_limit(request.limit),
            )
            due.extend(replayed)
            return webhook_pb2.ReplayWebhookDeliveriesResponse(
                delivery_ids=[attempt.delivery_id for attempt in replayed]
            )

        return self._keyed_and_queued(
            owner,
            "replay_webhook_deliveries",
            key,
            request,
            work=work,
            response_type=webhook_pb2.ReplayWebhookDeliveriesResponse,
        )

    def _get_delivery(self, owner: Owner, delivery_id: str) -> webhook_pb2.WebhookDelivery:
        with transaction(self._runtime.sessions) as session:
            delivery = deliveries.get_delivery_or_raise(
                session, delivery_or_job_id=delivery_id, owner=owner
            )
            event_type, _ = deliveries.context_of(session, [delivery])[delivery.id]
            return public_delivery(delivery, event_type=event_type)

    def _attempts(
        self, owner: Owner, delivery_id: str
    ) -> webhook_pb2.ListWebhookDeliveryAttemptsResponse:
        with transaction(self._runtime.sessions) as session:
            delivery = deliveries.get_delivery_or_raise(
                session, delivery_or_job_id=delivery_id, owner=owner
            )
            rows = deliveries.list_attempts(session, delivery_id=delivery.id)
            return webhook_pb2.ListWebhookDeliveryAttemptsResponse(
                attempts=[public_attempt(row) for row in rows]
            )

    def _replay(
        self, owner: Owner, key: str | None, request: webhook_pb2.ReplayWebhookDeliveryRequest
    ) -> tuple[webhook_pb2.WebhookDelivery, bool]:
        def work(session: Session, due: list[DueAttempt]) -> webhook_pb2.WebhookDelivery:
            delivery = deliveries.get_delivery_or_raise(
                session, delivery_or_job_id=request.id, owner=owner
            )
            due.append(deliveries.replay(session, delivery=delivery))
            event_type, _ = deliveries.context_of(session, [delivery])[delivery.id]
            return public_delivery(delivery, event_type=event_type)

        return self._keyed_and_queued(
            owner,
            "replay_webhook_delivery",
            key,
            request,
            work=work,
            response_type=webhook_pb2.WebhookDelivery,
        )

    def _resend(
        self, owner: Owner, key: str | None, request: webhook_pb2.ResendEventRequest
    ) -> tuple[webhook_pb2.ResendEventResponse, bool]:
        # An empty id finds no event (NOT_FOUND), as GetEvent's does.
        def work(session: Session, due: list[DueAttempt]) -> webhook_pb2.ResendEventResponse:
            event = events.get_event_or_raise(
                session, merchant_id=owner.merchant_id, livemode=owner.livemode, event_id=request.id
            )
            due.extend(
                deliveries.resend_event(
                    session, event_id=event.id, endpoint_id=request.endpoint_id, owner=owner
                )
            )
            return webhook_pb2.ResendEventResponse(
                delivery_ids=[attempt.delivery_id for attempt in due]
            )

        return self._keyed_and_queued(
            owner,
            "resend_event",
            key,
            request,
            work=work,
            response_type=webhook_pb2.ResendEventResponse,
        )

    def _test(
        self, owner: Owner, key: str | None, request: webhook_pb2.TestWebhookEndpointRequest
    ) -> tuple[webhook_pb2.WebhookDelivery, bool]:
        event_type = request.type or catalog.TEST_EVENT_TYPE_DEFAULT
        catalog.check_known(event_type, field="type")
        obj = catalog.test_object(self._definitions[event_type], merchant_id=owner.merchant_id)

        def work(session: Session, due: list[DueAttempt]) -> webhook_pb2.WebhookDelivery:
            delivery, attempt = deliveries.send_test_event(
                session, owner=owner, endpoint_id=request.id, event_type=event_type, obj=obj
            )
            due.append(attempt)
            return public_delivery(delivery, event_type=event_type)

        return self._keyed_and_queued(
            owner,
            "test_webhook_endpoint",
            key,
            request,
            work=work,
            response_type=webhook_pb2.WebhookDelivery,
        )

    def _open_stream(self, owner: Owner, cursor: str) -> events.StreamPosition:
        with transaction(self._runtime.sessions) as session:
            return events.open_stream(
                session,
                tokens=self._tokens,
                merchant_id=owner.merchant_id,
                livemode=owner.livemode,
                cursor=cursor,
            )

    def _read_stream(
        self, owner: Owner, types: list[str], after: events.StreamPosition
    ) -> tuple[list[webhook_pb2.StreamEventsResponse], events.StreamPosition]:
        with transaction(self._runtime.sessions) as session:
            rows, position = events.read_stream(
                session,
                merchant_id=owner.merchant_id,
                livemode=owner.livemode,
                types=types,
                after=after,
            )
            messages = [
                webhook_pb2.StreamEventsResponse(
                    event=event_to_proto(row),
                    cursor=self._seal(owner, events.StreamPosition(row.txid, row.id)),
                )
                for row in rows
            ]
        return messages, position

    def _seal(self, owner: Owner, position: events.StreamPosition) -> str:
        return events.seal_stream_position(
            position, tokens=self._tokens, merchant_id=owner.merchant_id, livemode=owner.livemode
        )

    def _get_event(self, owner: Owner, event_id: str) -> webhook_pb2.Event:
        with transaction(self._runtime.sessions) as session:
            event = events.get_event_or_raise(
                session, merchant_id=owner.merchant_id, livemode=owner.livemode, event_id=event_id
            )
            return event_to_proto(event)

    def _list_events(
        self, owner: Owner, request: webhook_pb2.ListEventsRequest
    ) -> webhook_pb2.ListEventsResponse:
        with transaction(self._runtime.sessions) as session:
            rows, token = events.list_events(
                session,
                tokens=self._tokens,
                merchant_id=owner.merchant_id,
                livemode=owner.livemode,
                event_type=request.type,
                page_size=page_size(request.page_size),
                page_token=request.page_token,
                created=pages.CreatedRange.of(request),
            )
            return webhook_pb2.ListEventsResponse(
                events=[event_to_proto(row) for row in rows], **pages.next_page(token)
            )

    async def CreateWebhookEndpoint(
        self, request: webhook_pb2.CreateWebhookEndpointRequest, context: Context
    ) -> webhook_pb2.WebhookEndpoint:
        """Registers an endpoint; the response is the only time its secret is shown."""
        return idempotency.answer(
            await asyncio.to_thread(self._create, _owner(), idempotency.key_of(context), request)
        )

    async def GetWebhookEndpoint(
        self, request: webhook_pb2.GetWebhookEndpointRequest, context: Context
    ) -> webhook_pb2.WebhookEndpoint:
        """Returns one endpoint."""
        return await asyncio.to_thread(self._get, _owner(), request.id)

    async def ListWebhookEndpoints(
        self, request: webhook_pb2.ListWebhookEndpointsRequest, context: Context
    ) -> webhook_pb2.ListWebhookEndpointsResponse:
        """Lists the caller's endpoints."""
        return await asyncio.to_thread(self._list, _owner(), request)

    async def UpdateWebhookEndpoint(
        self, request: webhook_pb2.UpdateWebhookEndpointRequest, context: Context
    ) -> webhook_pb2.WebhookEndpoint:
        """Changes an endpoint."""
        return idempotency.answer(
            await asyncio.to_thread(self._update, _owner(), idempotency.key_of(context), request)
        )

    async def DeleteWebhookEndpoint(
        self, request: webhook_pb2.DeleteWebhookEndpointRequest, context: Context
    ) -> webhook_pb2.DeleteWebhookEndpointResponse:
        """Deletes an endpoint."""
        return idempotency.answer(
            await asyncio.to_thread(self._delete, _owner(), idempotency.key_of(context), request)
        )

    async def RotateWebhookEndpointSecret(
        self, request: webhook_pb2.RotateWebhookEndpointSecretRequest, context: Context
    ) -> webhook_pb2.WebhookEndpoint:
        """Issues a new signing secret."""
        return idempotency.answer(
            await asyncio.to_thread(self._rotate, _owner(), idempotency.key_of(context), request)
        )

    async def ListWebhookDeliveries(
        self, request: webhook_pb2.ListWebhookDeliveriesRequest, context: Context
    ) -> webhook_pb2.ListWebhookDeliveriesResponse:
        """Lists an endpoint's deliveries."""
        return await asyncio.to_thread(self._list_deliveries, _owner(), request)

    async def ReplayWebhookDeliveries(
        self, request: webhook_pb2.ReplayWebhookDeliveriesRequest, context: Context
    ) -> webhook_pb2.ReplayWebhookDeliveriesResponse:
        """Re-sends an endpoint's finished deliveries since a time."""
        return idempotency.answer(
            await asyncio.to_thread(
                self._replay_many, _owner(), idempotency.key_of(context), request
            )
        )

    async def GetWebhookDelivery(
        self, request: webhook_pb2.GetWebhookDeliveryRequest, context: Context
    ) -> webhook_pb2.WebhookDelivery:
        """Returns one delivery."""
        return await asyncio.to_thread(self._get_delivery, _owner(), request.id)

    async def ListWebhookDeliveryAttempts(
        self, request: webhook_pb2.ListWebhookDeliveryAttemptsRequest, context: Context
    ) -> webhook_pb2.ListWebhookDeliveryAttemptsResponse:
        """Lists a delivery's attempts."""
        return await asyncio.to_thread(self._attempts, _owner(), request.delivery_id)

    async def ReplayWebhookDelivery(
        self, request: webhook_pb2.ReplayWebhookDeliveryRequest, context: Context
    ) -> webhook_pb2.WebhookDelivery:
        """Re-sends one finished delivery."""
        return idempotency.answer(
            await asyncio.to_thread(self._replay, _owner(), idempotency.key_of(context), request)
        )

    async def GetEvent(
        self, request: webhook_pb2.GetEventRequest, context: Context
    ) -> webhook_pb2.Event:
        """Returns one event."""
        return await asyncio.to_thread(self._get_event, _owner(), request.id)

    async def ListEvents(
        self, request: webhook_pb2.ListEventsRequest, context: Context
    ) -> webhook_pb2.ListEventsResponse:
        """Lists the caller's events, newest first."""
        return await asyncio.to_thread(self._list_events, _owner(), request)

    async def ResendEvent(
        self, request: webhook_pb2.ResendEventRequest, context: Context
    ) -> webhook_pb2.ResendEventResponse:
        """Sends an event again to the endpoints it was delivered to (or one of them)."""
        return idempotency.answer(
            await asyncio.to_thread(self._resend, _owner(), idempotency.key_of(context), request)
        )

    async def TestWebhookEndpoint(
        self, request: webhook_pb2.TestWebhookEndpointRequest, context: Context
    ) -> webhook_pb2.WebhookDelivery:
        """Sends a test event of a catalog type to the endpoint; answers its delivery."""
        return idempotency.answer(
            await asyncio.to_thread(self._test, _owner(), idempotency.key_of(context), request)
        )

    async def StreamEvents(
        self, request: webhook_pb2.StreamEventsRequest, context: Context
    ) -> AsyncIterator[webhook_pb2.StreamEventsResponse]:
        """Sends the caller's events as they are stored, each with its cursor; ends in a while."""
        owner = _owner()
        types = list(dict.fromkeys(request.types))
        if len(types) > STREAM_TYPES_MAX:
            raise InvalidArgument.field("types", f"lists at most {STREAM_TYPES_MAX} types")
        for event_type in types:
            catalog.check_known(event_type, field="types")
        position = await asyncio.to_thread(self._open_stream, owner, request.cursor)
        loop = asyncio.get_running_loop()
        end = loop.time() + STREAM_DURATION_S
        # The first message says the stream is open (and gives the cursor of its start).
        last_sent = -STREAM_KEEPALIVE_S
        while loop.time() < end:
            messages, position = await asyncio.to_thread(self._read_stream, owner, types, position)
            for message in messages:
                yield message
            now = loop.time()
            if messages:
                last_sent = now
            elif now - last_sent >= STREAM_KEEPALIVE_S:
                yield webhook_pb2.StreamEventsResponse(cursor=self._seal(owner, position))
                last_sent = now
            if len(messages) < events.STREAM_BATCH_MAX:
                await asyncio.sleep(STREAM_POLL_INTERVAL_S)

    async def ListEventTypes(
        self, request: webhook_pb2.ListEventTypesRequest, context: Context
    ) -> webhook_pb2.ListEventTypesResponse:
        """Lists the event type catalog, each type with its object's JSON Schema."""
        return self._event_types


class WebhookInternalServicer(webhook_internal_pb2_grpc.WebhookInternalServiceServicer):
    """Methods for other paymesh services (events) and the admin service (operators)."""

    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime
        self._tokens = PageTokens(runtime.settings.require_secret("page_token_key"))

    def _internal_deliveries(
        self, session: Any, rows: list[Delivery]
    ) -> list[webhook_internal_pb2.Delivery]:
        context = deliveries.context_of(session, rows)
        return [
            delivery_to_proto(row, event_type=context[row.id][0], endpoint_url=context[row.id][1])
            for row in rows
        ]

    def _publish(
        self,
        requests: Sequence[webhook_internal_pb2.PublishEventRequest],
        render: Callable[[Event], _Rendered],
    ) -> list[_Rendered | DomainError]:
        """Publishes events in one transaction, then queues their first deliveries.

        Each event comes back rendered, or as the error that refused it.
        """
        # Each event's deliveries continue its trace (from this call's span, if it is the same).
        contexts = tracing.onward([request.traceparent or None for request in requests])
        with transaction(self._runtime.sessions) as session:
            results = events.publish_events(
                session,
                [
                    dataclasses.replace(_draft(request), traceparent=traceparent)
                    for request, traceparent in zip(requests, contexts, strict=True)
                ],
                bytes_max=self._runtime.settings.webhook_event_bytes_max,
            )
            outcomes = [
                result if isinstance(result, DomainError) else render(result.event)
                for result in results
            ]
        self._runtime.enqueue(
            [
                attempt
                for result in results
                if isinstance(result, events.Published)
                for attempt in result.first_attempts
            ]
        )
        return outcomes

    def _publish_one(self, request: webhook_internal_pb2.PublishEventRequest) -> webhook_pb2.Event:
        (outcome,) = self._publish([request], event_to_proto)
        if isinstance(outcome, DomainError):
            raise outcome
        return outcome

    def _publish_many(
        self, request: webhook_internal_pb2.PublishEventsRequest
    ) -> webhook_internal_pb2.PublishEventsResponse:
        outcomes = self._publish(request.events, lambda event: None)
        return webhook_internal_pb2.PublishEventsResponse(
            results=[
                webhook_internal_pb2.PublishEventResult(
                    id=event.id,
                    error=outcome.to_status() if isinstance(outcome, DomainError) else None,
                )
                for event, outcome in zip(request.events, outcomes, strict=True)
            ]
        )

    def _list_failed(
        self, request: webhook_internal_pb2.ListFailedDeliveriesRequest
    ) -> webhook_internal_pb2.ListFailedDeliveriesResponse:
        with transaction(self._runtime.sessions) as session:
            rows, token = deliveries.list_failed(
                session,
                tokens=self._tokens,
                merchant_id=request.merchant_id,
                include_failing=request.include_failing,
                page_size=page_size(request.page_size),
                page_token=request.page_token,
            )
            return webhook_internal_pb2.ListFailedDeliveriesResponse(
                deliveries=self._internal_deliveries(session, rows), **pages.next_page(token)
            )

    def _replay(self, delivery_or_job_id: str) -> webhook_internal_pb2.Delivery:
        with transaction(self._runtime.sessions) as session:
            delivery = deliveries.get_delivery_or_raise(
                session, delivery_or_job_id=delivery_or_job_id, owner=None
            )
            next_attempt = deliveries.replay(session, delivery=delivery)
            (message,) = self._internal_deliveries(session, [delivery])
        self._runtime.enqueue([next_attempt])
        return message

    def _replay_many(
        self, request: webhook_internal_pb2.ReplayDeliveriesRequest
    ) -> webhook_internal_pb2.ReplayDeliveriesResponse:
        with transaction(self._runtime.sessions) as session:
            replayed = deliveries.replay_many(
                session,
                endpoint_id=request.endpoint_id,
                merchant_id=request.merchant_id,
                livemode=None,
                since=_time_or_none(request.since, request.HasField("since")),
                include_delivered=request.include_delivered,
                limit=deliveries.replay_limit(request.limit),
            )
        self._runtime.enqueue(replayed)
        return webhook_internal_pb2.ReplayDeliveriesResponse(
            delivery_ids=[attempt.delivery_id for attempt in replayed]
        )

    def _stats(
        self, request: webhook_internal_pb2.GetDeliveryStatsRequest
    ) -> webhook_internal_pb2.GetDeliveryStatsResponse:
        with transaction(self._runtime.sessions) as session:
            counts = deliveries.stats(
                session,
                merchant_id=request.merchant_id,
                livemode=request.livemode if request.HasField("livemode") else None,
                start=_time_or_none(request.start_time, request.HasField("start_time")),
                end=_time_or_none(request.end_time, request.HasField("end_time")),
            )
        return webhook_internal_pb2.GetDeliveryStatsResponse(**counts)

    def _object_events(self, object_id: str) -> webhook_internal_pb2.ListObjectEventsResponse:
        with transaction(self._runtime.sessions) as session:
            rows = events.list_object_events(session, object_id=object_id)
            return webhook_internal_pb2.ListObjectEventsResponse(
                events=[event_to_proto(row) for row in rows],
                trace_ids=[tracing.trace_id_of(row.traceparent) for row in rows],
            )

    def _attempts(self, delivery_id: str) -> webhook_internal_pb2.ListDeliveryAttemptsResponse:
        with transaction(self._runtime.sessions) as session:
            delivery = deliveries.get_delivery_or_raise(
                session, delivery_or_job_id=delivery_id, owner=None
            )
            rows = deliveries.list_attempts(session, delivery_id=delivery.id)
            return webhook_internal_pb2.ListDeliveryAttemptsResponse(
                attempts=[attempt_to_proto(row) for row in rows]
            )

    async def PublishEvent(
        self, request: webhook_internal_pb2.PublishEventRequest, context: Context
    ) -> webhook_pb2.Event:
        """Stores an event and fans it out; idempotent by event id."""
        return await asyncio.to_thread(self._publish_one, request)

    async def PublishEvents(
        self, request: webhook_internal_pb2.PublishEventsRequest, context: Context
    ) -> webhook_internal_pb2.PublishEventsResponse:
        """Stores a batch of events in one transaction; each is published or refused alone."""
        return await asyncio.to_thread(self._publish_many, request)

    async def ListFailedDeliveries(
        self, request: webhook_internal_pb2.ListFailedDeliveriesRequest, context: Context
    ) -> webhook_internal_pb2.ListFailedDeliveriesResponse:
        """Lists dead (and optionally failing) deliveries, newest first."""
        return await asyncio.to_thread(self._list_failed, request)

    async def ReplayDelivery(
        self, request: webhook_internal_pb2.ReplayDeliveryRequest, context: Context
    ) -> webhook_internal_pb2.Delivery:
        """Re-sends one finished delivery, named by delivery id or job id."""
        return await asyncio.to_thread(self._replay, request.id)

    async def ReplayDeliveries(
        self, request: webhook_internal_pb2.ReplayDeliveriesRequest, context: Context
    ) -> webhook_internal_pb2.ReplayDeliveriesResponse:
        """Re-sends every finished delivery matching a filter."""
        return await asyncio.to_thread(self._replay_many, request)

    async def GetDeliveryStats(
        self, request: webhook_internal_pb2.GetDeliveryStatsRequest, context: Context
    ) -> webhook_internal_pb2.GetDeliveryStatsResponse:
        """Counts deliveries by state, of a merchant, a mode and a window if asked."""
        return await asyncio.to_thread(self._stats, request)

    async def ListObjectEvents(
        self, request: webhook_internal_pb2.ListObjectEventsRequest, context: Context
    ) -> webhook_internal_pb2.ListObjectEventsResponse:
        """Lists the events about one object, oldest first."""
        return await asyncio.to_thread(self._object_events, request.object_id)

    async def ListDeliveryAttempts(
        self, request: webhook_internal_pb2.ListDeliveryAttemptsRequest, context: Context
    ) -> webhook_internal_pb2.ListDeliveryAttemptsResponse:
        """Lists a delivery's attempts, oldest first."""
        return await asyncio.to_thread(self._attempts, request.delivery_id)


def build_spec(settings: Settings) -> ServiceSpec:
    """The webhook service's servicers and their auth policies."""
    return spec_for(
        build_runtime(settings, application_name="paymesh-webhook", pool_size=settings.db_pool_size)
    )


def spec_for(runtime: Runtime) -> ServiceSpec:
    """The service spec over an already built runtime."""

    def register(server: grpc.aio.Server) -> None:
        webhook_pb2_grpc.add_WebhookServiceServicer_to_server(WebhookServicer(runtime), server)
        webhook_internal_pb2_grpc.add_WebhookInternalServiceServicer_to_server(
            WebhookInternalServicer(runtime), server
        )

    return ServiceSpec(
        name="webhook",
        register=register,
        service_names=[
            "paymesh.webhook.v1.WebhookService",
            "paymesh.webhook.v1.WebhookInternalService",
        ],
        policies={"paymesh.webhook.v1.WebhookService": AuthPolicy.SECRET_KEY},
        collectors=[pipeline_collector(runtime.sessions, runtime.settings)],
    )


def main() -> None:
    """Runs the webhook service until SIGTERM."""
    run_service("webhook", build_spec, needs_api_keys=True)


if __name__ == "__main__":
    main()
