"""Putting due delivery attempts on the RQ queue, after the transaction that made them commits.

Attempts travel in batches: one job carries up to `BATCH_ATTEMPTS_MAX` attempts due for one
endpoint, so RQ's Redis bookkeeping and the worker's claim and record transactions are paid per
batch, not per delivery, and a slow endpoint's batch holds up no other endpoint's deliveries.

Enqueueing is best effort: when Redis is unreachable the rows are still due in PostgreSQL and
the sweeper enqueues them later, so a failure here is logged and never fails the caller.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from redis.exceptions import RedisError
from rq import Queue

from services.common.queue import JobRequest, enqueue_many_once
from services.webhook.job_ids import batch_job_id

logger = logging.getLogger(__name__)

DELIVER_FUNC = "services.webhook.jobs.deliver"
# Attempts in one job: bounds the claim transaction and how long one batch may take.
BATCH_ATTEMPTS_MAX = 50
# A burst to one endpoint is cut into up to this many batches (of at least
# `BATCH_ATTEMPTS_MIN` attempts each), so several worker threads share it: a batch sends one
# attempt after the other, and one thread alone would be bound by the endpoint's latency.
BATCH_SPREAD = 4
BATCH_ATTEMPTS_MIN = 5


@dataclass(frozen=True)
class DueAttempt:
    """Attempt `attempt_number` of a delivery to `endpoint_id`, due now."""

    delivery_id: str
    attempt_number: int
    endpoint_id: str
    # The trace the attempt continues (its event's), when tracing is on.
    traceparent: str | None = None


def batches(attempts: Sequence[DueAttempt]) -> list[list[DueAttempt]]:
    """The attempts grouped by endpoint (first seen first), each group cut into even batches.

    A group of n attempts makes max(ceil(n / BATCH_ATTEMPTS_MAX), min(BATCH_SPREAD,
    ceil(n / BATCH_ATTEMPTS_MIN))) batches, in order.
    """
    by_endpoint: dict[str, list[DueAttempt]] = {}
    for attempt in attempts:
        by_endpoint.setdefault(attempt.endpoint_id, []).append(attempt)
    cut = []
    for group in by_endpoint.values():
        count = max(
            -(-len(group) // BATCH_ATTEMPTS_MAX),
            min(BATCH_SPREAD, -(-len(group) // BATCH_ATTEMPTS_MIN)),
        )
        size, extra = divmod(len(group), count)
        start = 0
        for index in range(count):
            end = start + size + (1 if index < extra else 0)
            cut.append(group[start:end])
            start = end
    return cut


def enqueue_attempts(queue: Queue, attempts: Sequence[DueAttempt], *, job_timeout_s: int) -> int:
    """Enqueues the attempts in per-endpoint batches, each batch once; returns how many attempts."""
    requests = [
        JobRequest(
            func=DELIVER_FUNC,
            job_id=batch_job_id(
                batch[0].endpoint_id, [(a.delivery_id, a.attempt_number) for a in batch]
            ),
            args=([[a.delivery_id, a.attempt_number] for a in batch],),
            traceparents=(
                tuple(a.traceparent for a in batch) if any(a.traceparent for a in batch) else ()
            ),
        )
        for batch in batches(attempts)
    ]
    try:
        enqueue_many_once(queue, requests, job_timeout_s=job_timeout_s)
    except RedisError:
        logger.warning("cannot enqueue %d deliveries; the sweeper will", len(attempts))
        return 0
    return len(attempts)
