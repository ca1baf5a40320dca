"""The `webhook-sweeper` process: puts due deliveries on the queue, expires old events and keys.

It is what makes retries happen (a failed attempt only writes its next due time) and what makes
Redis loss harmless (a due delivery whose job vanished is simply enqueued again; a job already
queued for the same attempt collapses with it). Several sweepers may run: job ids dedupe them.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from types import FrameType

from redis.exceptions import RedisError
from sqlalchemy.exc import SQLAlchemyError

from services.common import tracing
from services.common.db import transaction
from services.common.logs import configure_logging
from services.common.metrics import SWEEPS, SWEPT, serve_process_metrics
from services.common.settings import Settings
from services.webhook import deliveries, events
from services.webhook.models import KEYS
from services.webhook.runtime import Runtime, build_runtime

logger = logging.getLogger(__name__)

SWEEP_BATCH_MAX = 500
RETENTION_SWEEP_INTERVAL_S = 3600.0


def sweep_due(runtime: Runtime) -> int:
    """Enqueues up to a batch of due, unheld deliveries; returns how many were due."""
    with transaction(runtime.sessions) as session:
        due = deliveries.due_attempts(session, limit=SWEEP_BATCH_MAX)
    runtime.enqueue(due)
    return len(due)


def sweep_expired_events(runtime: Runtime) -> int:
    """Deletes events past the retention, a batch at a time; returns how many."""
    deleted = 0
    while True:
        with transaction(runtime.sessions) as session:
            batch = events.delete_expired_events(
                session, retention_days=runtime.settings.webhook_event_retention_days
            )
        deleted += batch
        if batch == 0:
            return deleted


def sweep_expired_keys(runtime: Runtime) -> int:
    """Deletes expired idempotency keys, a batch at a time; returns how many."""
    deleted = 0
    while True:
        with transaction(runtime.sessions) as session:
            batch = KEYS.sweep_expired(session)
        deleted += batch
        if batch == 0:
            return deleted


def main() -> None:
    """Sweeps every `PAYMESH_WEBHOOK_SWEEP_INTERVAL_S` until SIGTERM."""
    settings = Settings()
    configure_logging(service="webhook-sweeper", level=settings.log_level, json=settings.log_json)
    serve_process_metrics(settings, "webhook-sweeper")
    tracing.configure(settings.otel_endpoint, service="webhook-sweeper")
    runtime = build_runtime(settings, application_name="paymesh-webhook-sweeper", pool_size=1)
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    next_retention = time.monotonic()
    logger.info("webhook sweeper running")
    while not stop.is_set():
        try:
            SWEPT.labels("webhook", "due_attempts").inc(sweep_due(runtime))
            if time.monotonic() >= next_retention:
                deleted = sweep_expired_events(runtime)
                SWEPT.labels("webhook", "expired_events").inc(deleted)
                if deleted:
                    logger.info("expired events deleted", extra={"count": deleted})
                keys = sweep_expired_keys(runtime)
                SWEPT.labels("webhook", "expired_idempotency_keys").inc(keys)
                if keys:
                    logger.info("expired idempotency keys deleted", extra={"count": keys})
                next_retention = time.monotonic() + RETENTION_SWEEP_INTERVAL_S
            SWEEPS.labels("webhook", "ok").inc()
        except (SQLAlchemyError, RedisError):
            # PostgreSQL or Redis is away for a moment: try again next round.
            SWEEPS.labels("webhook", "failed").inc()
            logger.warning("sweep failed; retrying", exc_info=True)
        except Exception:
            SWEEPS.labels("webhook", "failed").inc()
            # Anything else (an RQ internal raising, as its ValueError for a job a dead worker
            # left once did) must not end the process: it alone re-enqueues due deliveries, so
            # exiting would stop every retry.
            logger.exception("sweep failed unexpectedly; retrying")
        stop.wait(settings.webhook_sweep_interval_s)


if __name__ == "__main__":
    main()
