"""RQ job entry points of the webhook worker; each takes ids and is safe to run twice."""

from __future__ import annotations

import logging
import time

from services.common.db import transaction
from services.webhook import deliveries, sender
from services.webhook.runtime import Runtime, worker_runtime
from services.webhook.signing import signed_headers

logger = logging.getLogger(__name__)


def deliver(delivery_id: str, attempt_number: int) -> str:
    """Makes attempt `attempt_number` of a delivery, if it is still the one due."""
    return run_attempt(worker_runtime(), delivery_id=delivery_id, attempt_number=attempt_number)


def run_attempt(runtime: Runtime, *, delivery_id: str, attempt_number: int) -> str:
    """Claims, sends and records one attempt; "not due", "delivered" or "failed"."""
    settings = runtime.settings
    with transaction(runtime.sessions) as session:
        claim = deliveries.claim_attempt(
            session,
            delivery_id=delivery_id,
            attempt_number=attempt_number,
            lease_s=runtime.lease_s,
            policy=runtime.policy,
            box=runtime.box,
        )
    if claim is None:
        return "not due"
    outcome = sender.post(
        claim.url,
        body=claim.body,
        headers=signed_headers(
            event_id=claim.event_id,
            timestamp=int(time.time()),
            body=claim.body,
            secrets=claim.secrets,
        ),
        timeout_s=settings.webhook_timeout_s,
        allow_private=settings.webhook_allow_private_networks,
        clients=runtime.http,
    )
    with transaction(runtime.sessions) as session:
        new_deliveries = deliveries.record_outcome(
            session,
            delivery_id=delivery_id,
            attempt_number=attempt_number,
            outcome=outcome,
            policy=runtime.policy,
            event_bytes_max=settings.webhook_event_bytes_max,
        )
    runtime.enqueue_first(new_deliveries)
    logger.info(
        "webhook attempt",
        extra={
            "delivery_id": delivery_id,
            "attempt": attempt_number,
            "status_code": outcome.status_code,
            "error": outcome.error,
            "duration_ms": outcome.duration_ms,
        },
    )
    return "delivered" if outcome.delivered else "failed"
