"""The outbox relay (`payment-relay`): outbox rows into RQ jobs and webhook events; the sweeper.

Each round takes a batch of due rows with `SELECT ... FOR UPDATE SKIP LOCKED` (several relays
may run side by side) and hands them over by kind, a few calls per batch: every job row to RQ
in one `enqueue_many_once` (two Redis round trips; the job id chosen when the row was written
collapses repeats), every event row to the webhook service in one `PublishEvents` call (one
webhook-service transaction, idempotent by the event ids chosen when the rows were written;
split only to bound a call's size). Rows handed over are marked relayed in the same
transaction. A row that cannot be handed over stays, with its next attempt pushed back
exponentially up to `payment_outbox_retry_delay_max_s`: when its destination is down (Redis
down, the webhook service unavailable or not deployed yet) every row of that kind waits; an
event the webhook service refuses waits alone; a batch call that fails as a whole for another
reason is retried row by row, so one bad row cannot hold up the others. Rows are never
dropped. Delivery is at least once: a relay that dies after handing over but before
committing hands the same rows over again, which the job ids and event ids make harmless.

Every `payment_sweep_interval_s` the relay also runs the sweeper (`services.payment.sweeper`).
"""

from __future__ import annotations

import logging
import random
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from types import FrameType
from typing import Any

import grpc
from opentelemetry.trace import SpanKind
from paymesh.ledger.v1 import ledger_internal_pb2_grpc
from paymesh.webhook.v1 import webhook_internal_pb2, webhook_internal_pb2_grpc
from redis.exceptions import RedisError
from rq import Queue
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from services.common import tracing
from services.common.clients import sync_channel
from services.common.db import make_engine, make_sessionmaker, transaction
from services.common.errors import status_code_name
from services.common.logs import configure_logging
from services.common.metrics import SWEEPS, SWEPT, serve_process_metrics
from services.common.queue import (
    PAYMENTS_QUEUE,
    JobRequest,
    batch_job_id,
    enqueue_many_once,
    make_queue,
    redis_connection,
)
from services.common.settings import Settings
from services.payment import outbox, payout_sweeper, sweeper
from services.payment.metrics import RELAY_ROUNDS, RELAY_ROWS
from services.payment.models import OutboxMessage

logger = logging.getLogger(__name__)

RETRY_DELAY_MIN_S = 0.5
ERROR_LENGTH_MAX = 500
# One PublishEvents call carries at most this many events and about this many bytes (well under
# gRPC's 4 MiB message limit whatever the events' sizes), and may take the gRPC timeout plus
# this much per event: it is one webhook-service transaction for all of them.
EVENTS_PER_CALL_MAX = 100
EVENT_CALL_BYTES_MAX = 1024 * 1024
EVENT_CALL_TIMEOUT_PER_EVENT_S = 0.05
# One payment job drives at most this many payments (a batch's steps are one round trip each).
PAYMENTS_PER_JOB_MAX = 50

# Hands a batch of row payloads over; answers, for each, None (handed over) or why not.
Handler = Callable[[list[dict[str, Any]]], list[str | None]]
# The event rows' handler (`webhook_publisher`); tests pass their own.
Publisher = Handler
# The webhook service is down or not deployed yet (UNIMPLEMENTED while it is being built).
TARGET_DOWN_CODES = (
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.UNIMPLEMENTED,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
)


class TargetDown(Exception):
    """The destination of a row cannot take anything right now; skip its other rows too."""


class EventRefused(Exception):
    """The webhook service refused a whole PublishEvents call; its events go one by one."""


def event_request(payload: dict[str, Any]) -> webhook_internal_pb2.PublishEventRequest:
    """The PublishEvent request for an outbox event row."""
    request = webhook_internal_pb2.PublishEventRequest(
        id=payload["id"],
        merchant_id=payload["merchant_id"],
        type=payload["type"],
        livemode=payload["livemode"],
    )
    request.object.update(payload["object"])
    request.create_time.FromDatetime(datetime.fromisoformat(payload["create_time"]))
    traceparent = payload.get(tracing.TRACEPARENT)
    if traceparent:
        request.traceparent = traceparent
    return request


def event_calls(
    requests: list[webhook_internal_pb2.PublishEventRequest],
) -> Iterator[list[webhook_internal_pb2.PublishEventRequest]]:
    """Splits events, in order, into PublishEvents calls of bounded count and size."""
    call: list[webhook_internal_pb2.PublishEventRequest] = []
    size = 0
    for request in requests:
        request_size = request.ByteSize()
        if call and (
            len(call) == EVENTS_PER_CALL_MAX or size + request_size > EVENT_CALL_BYTES_MAX
        ):
            yield call
            call, size = [], 0
        call.append(request)
        size += request_size
    if call:
        yield call


def webhook_publisher(settings: Settings) -> Publisher:
    """Publishes events to the webhook service; raises TargetDown when it cannot take them."""
    stub = webhook_internal_pb2_grpc.WebhookInternalServiceStub(
        sync_channel(settings.target("webhook"))
    )

    def publish_call(
        requests: list[webhook_internal_pb2.PublishEventRequest],
    ) -> list[str | None]:
        try:
            reply = stub.PublishEvents(
                webhook_internal_pb2.PublishEventsRequest(events=requests),
                timeout=settings.grpc_timeout_s + EVENT_CALL_TIMEOUT_PER_EVENT_S * len(requests),
            )
        except grpc.RpcError as error:
            code = error.code()  # type: ignore[attr-defined]
            message = f"webhook: {code.name}: {error.details()}"  # type: ignore[attr-defined]
            if code in TARGET_DOWN_CODES:
                raise TargetDown(message) from error
            raise EventRefused(message) from error
        if [result.id for result in reply.results] != [request.id for request in requests]:
            raise EventRefused("webhook: PublishEvents answered for other events than sent")
        # A refused event (a bug on one side or the other) waits with backoff; the others go.
        return [
            f"webhook: {status_code_name(result.error.code)}: {result.error.message}"
            if result.HasField("error")
            else None
            for result in reply.results
        ]

    def publish(payloads: list[dict[str, Any]]) -> list[str | None]:
        outcomes: list[str | None] = []
        for call in event_calls([event_request(payload) for payload in payloads]):
            outcomes += publish_call(call)
        return outcomes

    return publish


def job_requests(payloads: list[dict[str, Any]]) -> list[JobRequest]:
    """The RQ jobs for job rows: each row's own, except payment drives, which go in batches.

    The drives of a round (`outbox.PROCESS_PAYMENT`, one payment each) become
    `outbox.PROCESS_PAYMENTS` jobs of up to `PAYMENTS_PER_JOB_MAX` payments, so RQ's
    bookkeeping is paid once per batch; a batch's id is the digest of its rows' job ids, so
    handing the same rows over again collapses into the same job.
    """
    requests: list[JobRequest] = []
    drives: list[dict[str, Any]] = []
    for payload in payloads:
        if payload["func"] == outbox.PROCESS_PAYMENT:
            drives.append(payload)
        else:
            requests.append(
                JobRequest(
                    func=payload["func"],
                    job_id=payload["job_id"],
                    args=tuple(payload["args"]),
                    traceparents=_traced((payload.get(tracing.TRACEPARENT),)),
                )
            )
    for start in range(0, len(drives), PAYMENTS_PER_JOB_MAX):
        batch = drives[start : start + PAYMENTS_PER_JOB_MAX]
        # A payment driven twice in a round (a re-drive) is driven once, in its first context.
        contexts: dict[str, str | None] = {}
        for payload in batch:
            contexts.setdefault(payload["args"][0], payload.get(tracing.TRACEPARENT))
        requests.append(
            JobRequest(
                func=outbox.PROCESS_PAYMENTS,
                job_id=batch_job_id("payments", (payload["job_id"] for payload in batch)),
                args=(list(contexts),),
                traceparents=_traced(tuple(contexts.values())),
            )
        )
    return requests


def _traced(traceparents: tuple[str | None, ...]) -> tuple[str | None, ...]:
    """The items' contexts, or none at all when no item has one (tracing off)."""
    return traceparents if any(traceparents) else ()


def job_enqueuer(queue: Queue) -> Handler:
    """Enqueues job rows' jobs on `queue`; raises TargetDown when Redis cannot take them."""

    def enqueue(payloads: list[dict[str, Any]]) -> list[str | None]:
        try:
            enqueue_many_once(queue, job_requests(payloads))
        except (RedisError, OSError) as error:
            raise TargetDown(f"redis: {error}") from error
        return [None] * len(payloads)

    return enqueue


def retry_delay_s(attempts: int, *, maximum_s: float) -> float:
    """Exponential backoff with jitter for a row's `attempts`-th failure."""
    base: float = min(maximum_s, RETRY_DELAY_MIN_S * 2 ** min(attempts, 30))
    return base * random.uniform(0.8, 1.0)  # noqa: S311 - jitter, not security


def _defer(row: OutboxMessage, error: str, *, now: datetime, maximum_s: float) -> None:
    row.attempts += 1
    row.last_error = error[:ERROR_LENGTH_MAX]
    row.next_attempt_time = now + timedelta(
        seconds=retry_delay_s(row.attempts, maximum_s=maximum_s)
    )


def hand_over(handler: Handler, payloads: list[dict[str, Any]]) -> list[str | None]:
    """`handler(payloads)`; when that fails as a whole, one payload at a time.

    So one bad row cannot hold up the others. TargetDown is not caught: nothing of this kind
    can go now.
    """
    try:
        return handler(payloads)
    except TargetDown:
        raise
    except Exception as error:
        if len(payloads) == 1:
            logger.exception("outbox row failed")
            return [repr(error)]
        logger.warning("outbox batch of %d failed (%r); one at a time", len(payloads), error)
        return [hand_over(handler, [payload])[0] for payload in payloads]


def _hand_over_traced(handler: Handler, kind: str, rows: list[OutboxMessage]) -> list[str | None]:
    """`hand_over` of the rows' payloads in a span continuing their traces (when tracing).

    Each payload handed on carries the trace context its job or event continues from.
    """
    with tracing.batch(
        f"outbox relay {kind}",
        [row.traceparent for row in rows],
        attributes={"paymesh.outbox.kind": kind},
        kind=SpanKind.PRODUCER,
    ) as onward:
        payloads = [
            {**row.payload, tracing.TRACEPARENT: traceparent} if traceparent else row.payload
            for row, traceparent in zip(rows, onward, strict=True)
        ]
        return hand_over(handler, payloads)


def relay_batch(
    sessions: sessionmaker[Session],
    *,
    queue: Queue,
    publish: Publisher,
    batch_size: int,
    retry_delay_max_s: float,
    ids: Sequence[int] | None = None,
) -> int:
    """Relays one batch of due outbox rows (of `ids` only, if given); returns how many it saw.

    The payment worker relays the events it has just written this way (`ids`), so a payment's
    outcome does not wait for the relay's next round; rows another relay holds are skipped.
    """
    now = datetime.now(UTC)
    handlers = {"job": job_enqueuer(queue)}
    due = select(OutboxMessage).where(
        OutboxMessage.relay_time.is_(None), OutboxMessage.next_attempt_time <= now
    )
    if ids is not None:
        due = due.where(OutboxMessage.id.in_(ids))
    with transaction(sessions) as session:
        rows = session.scalars(
            due.order_by(OutboxMessage.id).limit(batch_size).with_for_update(skip_locked=True)
        ).all()
        by_kind: dict[str, list[OutboxMessage]] = {}
        for row in rows:
            by_kind.setdefault(row.kind, []).append(row)
        for kind, group in by_kind.items():
            try:
                outcomes = _hand_over_traced(handlers.get(kind, publish), kind, group)
            except TargetDown as error:
                logger.warning("outbox: %d %s rows deferred: %s", len(group), kind, error)
                for row in group:
                    _defer(row, str(error), now=now, maximum_s=retry_delay_max_s)
                continue
            for row, outcome in zip(group, outcomes, strict=True):
                if outcome is None:
                    row.relay_time = now
                    continue
                logger.warning("outbox %s %s deferred: %s", row.kind, row.id, outcome)
                _defer(row, outcome, now=now, maximum_s=retry_delay_max_s)
    return len(rows)


def run(settings: Settings, stop: threading.Event) -> None:
    """Relays and sweeps until `stop` is set."""
    engine = make_engine(
        settings.require_database_url(), pool_size=2, application_name="paymesh-payment-relay"
    )
    sessions = make_sessionmaker(engine)
    queue = make_queue(PAYMENTS_QUEUE, redis_connection(settings))
    publish = webhook_publisher(settings)
    poll_s = settings.payment_relay_poll_interval_ms / 1000
    next_sweep = 0.0
    ledger_stub = ledger_internal_pb2_grpc.LedgerInternalServiceStub(
        sync_channel(settings.target("ledger"))
    )
    try:
        while not stop.is_set():
            seen = 0
            try:
                seen = relay_batch(
                    sessions,
                    queue=queue,
                    publish=publish,
                    batch_size=settings.payment_relay_batch_size,
                    retry_delay_max_s=settings.payment_outbox_retry_delay_max_s,
                )
                RELAY_ROUNDS.labels("ok").inc()
                RELAY_ROWS.inc(seen)
            except Exception:
                RELAY_ROUNDS.labels("failed").inc()
                logger.exception("outbox relay round failed")
            if time.monotonic() >= next_sweep:
                next_sweep = time.monotonic() + settings.payment_sweep_interval_s
                try:
                    counts = sweeper.sweep(sessions, settings)
                    counts |= payout_sweeper.sweep(sessions, settings, ledger_stub)
                    SWEEPS.labels("payment", "ok").inc()
                    for what, count in counts.items():
                        SWEPT.labels("payment", what).inc(count)
                    if any(counts.values()):
                        logger.info("swept", extra=counts)
                except Exception:
                    SWEEPS.labels("payment", "failed").inc()
                    logger.exception("sweep failed")
            if seen < settings.payment_relay_batch_size:
                stop.wait(poll_s)
    finally:
        engine.dispose()


def main() -> None:
    """Runs the relay until SIGTERM or SIGINT."""
    settings = Settings()
    configure_logging(service="payment-relay", level=settings.log_level, json=settings.log_json)
    serve_process_metrics(settings, "payment-relay")
    tracing.configure(settings.otel_endpoint, service="payment-relay")
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    logger.info("payment relay running")
    run(settings, stop)


if __name__ == "__main__":
    main()
