"""RQ on Redis: queues, idempotent enqueueing, and the worker loop. JSON, never pickle.

Redis is a work queue here, never the system of record: every job stands for a row in
PostgreSQL (an outbox row, a delivery), and a sweeper re-enqueues rows whose job was lost.
Job ids are derived from the work (`payment-pay_123-process-0`; RQ refuses colons in ids), so
enqueueing the same work twice collapses into one job while the first is still queued or running.
"""

from __future__ import annotations

import logging
import signal
import time
from typing import Any

from redis import Redis
from redis.exceptions import RedisError
from rq import Queue, SimpleWorker
from rq.exceptions import NoSuchJobError
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer

from services.common.logs import configure_logging
from services.common.settings import Settings

logger = logging.getLogger(__name__)

# Queue names, in one place.
PAYMENTS_QUEUE = "paymesh.payments"
WEBHOOKS_QUEUE = "paymesh.webhooks"
MAINTENANCE_QUEUE = "paymesh.maintenance"

JOB_TIMEOUT_S = 60
RESULT_TTL_S = 300
FAILURE_TTL_S = 7 * 24 * 3600
# Statuses in which a job still stands for pending work; any other lets the same id be reused.
WORKER_RESTART_DELAY_MIN_S = 1.0
WORKER_RESTART_DELAY_MAX_S = 30.0
_LIVE_STATUSES = {JobStatus.QUEUED, JobStatus.STARTED, JobStatus.SCHEDULED, JobStatus.DEFERRED}


def redis_connection(settings: Settings) -> Redis:
    """A Redis connection from the settings, with bounded timeouts."""
    return Redis.from_url(settings.require_redis_url(), socket_timeout=10, socket_connect_timeout=5)


def make_queue(name: str, connection: Redis) -> Queue:
    """A queue whose jobs are serialized as JSON."""
    return Queue(name, connection=connection, serializer=JSONSerializer)


def enqueue_once(
    queue: Queue,
    func: str,
    *,
    job_id: str,
    args: tuple[Any, ...] = (),
    job_timeout_s: int = JOB_TIMEOUT_S,
) -> Job:
    """Enqueues `func(*args)` (a dotted path) as `job_id` unless a live job with that id exists."""
    try:
        existing = Job.fetch(job_id, connection=queue.connection, serializer=JSONSerializer)
        if existing.get_status(refresh=False) in _LIVE_STATUSES:
            return existing
        existing.delete()
    except NoSuchJobError:
        pass
    return queue.enqueue(
        func,
        args=args,
        job_id=job_id,
        job_timeout=job_timeout_s,
        result_ttl=RESULT_TTL_S,
        failure_ttl=FAILURE_TTL_S,
    )


class _Worker(SimpleWorker):
    """A SimpleWorker that remembers whether a signal asked it to stop."""

    stop_signaled = False

    def request_stop(self, signum: int, frame: Any) -> None:
        """Notes the request, then lets RQ stop as usual."""
        self.stop_signaled = True
        super().request_stop(signum, frame)  # type: ignore[no-untyped-call]


def run_worker(*, name: str, queue_names: list[str]) -> None:
    """Runs an RQ worker on `queue_names` until SIGTERM, without forking per job.

    RQ retries a lost Redis while it waits for a job, but quits when Redis fails at another
    moment (a heartbeat, registering its death). Redis is only a work queue here, so the worker
    starts again after a pause instead of leaving the process dead.
    """
    settings = Settings()
    configure_logging(service=name, level=settings.log_level, json=settings.log_json)
    restart_delay_s = WORKER_RESTART_DELAY_MIN_S
    while True:
        connection = redis_connection(settings)
        queues = [make_queue(queue_name, connection) for queue_name in queue_names]
        worker = _Worker(queues, connection=connection, serializer=JSONSerializer)
        try:
            worker.work(with_scheduler=True, logging_level=settings.log_level)
        except RedisError:
            logger.exception("%s lost Redis", name)
        if worker.stop_signaled:
            return
        # No job runs while it waits, so a SIGTERM now may simply end the process.
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        logger.warning("%s quit unasked; starting again in %.0f s", name, restart_delay_s)
        time.sleep(restart_delay_s)
        restart_delay_s = min(restart_delay_s * 2, WORKER_RESTART_DELAY_MAX_S)
