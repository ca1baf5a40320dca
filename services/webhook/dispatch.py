"""Putting due delivery attempts on the RQ queue, after the transaction that made them commits.

Enqueueing is best effort: when Redis is unreachable the rows are still due in PostgreSQL and
the sweeper enqueues them later, so a failure here is logged and never fails the caller.
"""

from __future__ import annotations

import logging

from redis.exceptions import RedisError
from rq import Queue

from services.common.queue import JobRequest, enqueue_many_once
from services.webhook.job_ids import job_id

logger = logging.getLogger(__name__)

DELIVER_FUNC = "services.webhook.jobs.deliver"


def enqueue_attempts(queue: Queue, attempts: list[tuple[str, int]], *, job_timeout_s: int) -> int:
    """Enqueues each (delivery id, attempt number) once, in one batch; returns how many."""
    requests = [
        JobRequest(
            func=DELIVER_FUNC,
            job_id=job_id(delivery_id, attempt_number),
            args=(delivery_id, attempt_number),
        )
        for delivery_id, attempt_number in attempts
    ]
    try:
        enqueue_many_once(queue, requests, job_timeout_s=job_timeout_s)
    except RedisError:
        logger.warning("cannot enqueue %d deliveries; the sweeper will", len(requests))
        return 0
    return len(requests)
