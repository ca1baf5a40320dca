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
    """Enqueues each (delivery id, attempt number) once; returns how many were handed to Redis.

    One batch (two Redis round trips) for all of them; only when RQ refuses to replace one stale
    job does it go one by one, so that job alone waits for a later sweep.
    """
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
        return len(requests)
    except RedisError:
        logger.warning("cannot enqueue %d deliveries; the sweeper will", len(requests))
        return 0
    except ValueError:
        pass
    enqueued = 0
    for request in requests:
        try:
            enqueue_many_once(queue, [request], job_timeout_s=job_timeout_s)
            enqueued += 1
        except RedisError:
            logger.warning(
                "cannot enqueue a delivery; the sweeper will", extra={"job_id": request.job_id}
            )
            break
        except ValueError:
            # RQ cannot delete a finished job whose execution record expired before its entry
            # in the job's execution registry (for up to a minute after a worker died running
            # it). Only this delivery waits for a later sweep; the others go on.
            logger.warning(
                "cannot replace a stale job; a later sweep will",
                extra={"job_id": request.job_id},
                exc_info=True,
            )
    return enqueued
