"""The outbox relay (`payment-relay`): outbox rows into RQ jobs and webhook events; the sweeper.

Each round takes a batch of due rows with `SELECT ... FOR UPDATE SKIP LOCKED` (several relays
may run side by side), hands each to RQ (`enqueue_once`, the job id chosen when the row was
written) or to the webhook service (`PublishEvent`, idempotent by the event id chosen when the
row was written), and marks it relayed in the same transaction. A row that cannot be handed
over (Redis down, the webhook service unavailable or not deployed yet) stays, with its next
attempt pushed back exponentially up to `payment_outbox_retry_delay_max_s`: rows are never
dropped. Delivery is at least once: a relay that dies after enqueueing but before committing
hands the same row over again, which the job id and event id make harmless.

Every `payment_sweep_interval_s` the relay also runs the sweeper (`services.payment.sweeper`).
"""

from __future__ import annotations

import logging
import random
import signal
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from types import FrameType
from typing import Any

import grpc
from paymesh.webhook.v1 import webhook_internal_pb2, webhook_internal_pb2_grpc
from redis.exceptions import RedisError
from rq import Queue
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from services.common.clients import sync_channel
from services.common.db import make_engine, make_sessionmaker, transaction
from services.common.logs import configure_logging
from services.common.queue import PAYMENTS_QUEUE, enqueue_once, make_queue, redis_connection
from services.common.settings import Settings
from services.payment import sweeper
from services.payment.models import OutboxMessage

logger = logging.getLogger(__name__)

RETRY_DELAY_MIN_S = 0.5
ERROR_LENGTH_MAX = 500

Publisher = Callable[[dict[str, Any]], None]
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
    """The webhook service refused one event; other events may still go through."""


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
    return request


def webhook_publisher(settings: Settings) -> Publisher:
    """Publishes events to the webhook service; raises TargetDown when it cannot take them."""
    stub = webhook_internal_pb2_grpc.WebhookInternalServiceStub(
        sync_channel(settings.target("webhook"))
    )

    def publish(payload: dict[str, Any]) -> None:
        try:
            stub.PublishEvent(event_request(payload), timeout=settings.grpc_timeout_s)
        except grpc.RpcError as error:
            code = error.code()  # type: ignore[attr-defined]
            message = f"webhook: {code.name}: {error.details()}"  # type: ignore[attr-defined]
            if code in TARGET_DOWN_CODES:
                raise TargetDown(message) from error
            # This event was refused (a bug on one side or the other): keep it, retry it
            # with backoff, and let the other events through meanwhile.
            raise EventRefused(message) from error

    return publish


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


def relay_batch(
    sessions: sessionmaker[Session],
    *,
    queue: Queue,
    publish: Publisher,
    batch_size: int,
    retry_delay_max_s: float,
) -> int:
    """Relays one batch of due outbox rows; returns how many rows it looked at."""
    now = datetime.now(UTC)
    down: dict[str, str] = {}
    with transaction(sessions) as session:
        rows = session.scalars(
            select(OutboxMessage)
            .where(OutboxMessage.relay_time.is_(None))
            .where(OutboxMessage.next_attempt_time <= now)
            .order_by(OutboxMessage.id)
            .limit(batch_size)
            .with_for_update(skip_locked=True)
        ).all()
        for row in rows:
            if row.kind in down:
                _defer(row, down[row.kind], now=now, maximum_s=retry_delay_max_s)
                continue
            try:
                if row.kind == "job":
                    _enqueue(queue, row.payload)
                else:
                    publish(row.payload)
            except TargetDown as error:
                down[row.kind] = str(error)
                logger.warning("outbox %s %s deferred: %s", row.kind, row.id, error)
                _defer(row, str(error), now=now, maximum_s=retry_delay_max_s)
                continue
            except Exception as error:  # one bad row must not hold up the others
                logger.exception("outbox %s %s failed", row.kind, row.id)
                _defer(row, repr(error), now=now, maximum_s=retry_delay_max_s)
                continue
            row.relay_time = now
    return len(rows)


def _enqueue(queue: Queue, payload: dict[str, Any]) -> None:
    try:
        enqueue_once(queue, payload["func"], job_id=payload["job_id"], args=tuple(payload["args"]))
    except (RedisError, OSError) as error:
        raise TargetDown(f"redis: {error}") from error


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
            except Exception:
                logger.exception("outbox relay round failed")
            if time.monotonic() >= next_sweep:
                next_sweep = time.monotonic() + settings.payment_sweep_interval_s
                try:
                    counts = sweeper.sweep(sessions, settings)
                    if any(counts.values()):
                        logger.info("swept", extra=counts)
                except Exception:
                    logger.exception("sweep failed")
            if seen < settings.payment_relay_batch_size:
                stop.wait(poll_s)
    finally:
        engine.dispose()


def main() -> None:
    """Runs the relay until SIGTERM or SIGINT."""
    settings = Settings()
    configure_logging(service="payment-relay", level=settings.log_level, json=settings.log_json)
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    logger.info("payment relay running")
    run(settings, stop)


if __name__ == "__main__":
    main()
