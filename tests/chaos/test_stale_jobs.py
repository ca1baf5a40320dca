"""A job left behind by a worker that died running it is replaced like any finished job.

Found by the fault run (a Redis stall and resets on its proxy while webhook workers ran jobs):
RQ writes an execution record with a TTL and registers it in the job's execution registry
scored 60 s later, so for a minute after a worker dies mid-job, RQ's `Job.delete` (which
`enqueue_once` calls before enqueueing the same id again) raises ValueError. The webhook sweeper
died on it, and with it every webhook retry; now `enqueue_many_once` deletes what is left by key.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis import Redis
from rq.executions import Execution, ExecutionRegistry
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer

from services.common.queue import WEBHOOKS_QUEUE, enqueue_once, make_queue
from services.runtime import embedded
from services.webhook.dispatch import DELIVER_FUNC, DueAttempt, enqueue_attempts
from services.webhook.job_ids import batch_job_id

EXECUTION_TTL_S = 1


@pytest.fixture
def redis_connection(tmp_path: Path) -> Iterator[Redis]:
    """A real Redis of the test's own."""
    server = embedded.start_redis(tmp_path / "redis")
    try:
        with Redis.from_url(server.url()) as connection:
            yield connection
    finally:
        embedded.stop_redis(tmp_path / "redis")


def _left_by_a_dead_worker(connection: Redis, attempt: DueAttempt) -> Job:
    """The job as RQ leaves it once a worker died running it and its cleanup marked it failed."""
    queue = make_queue(WEBHOOKS_QUEUE, connection)
    pair = (attempt.delivery_id, attempt.attempt_number)
    job = enqueue_once(
        queue, DELIVER_FUNC, job_id=batch_job_id(attempt.endpoint_id, [pair]), args=([pair],)
    )
    with connection.pipeline() as pipeline:
        Execution.create(job, ttl=EXECUTION_TTL_S, pipeline=pipeline)
        pipeline.execute()
    job.set_status(JobStatus.FAILED)
    registry = ExecutionRegistry(job_id=job.id, connection=connection)
    deadline = time.monotonic() + 30
    while connection.exists(f"rq:execution:{job.id}:{registry.get_execution_ids()[0]}"):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    return job


def test_enqueue_attempts__a_job_left_by_a_dead_worker_is_replaced_with_the_others(
    redis_connection: Redis,
) -> None:
    stale_attempt = DueAttempt("whd_stale", 1, "we_stale")
    fresh_attempt = DueAttempt("whd_fresh", 1, "we_fresh")
    stale = _left_by_a_dead_worker(redis_connection, stale_attempt)
    with pytest.raises(ValueError):  # RQ's own delete, which enqueue_once must not rely on
        Job.fetch(stale.id, connection=redis_connection, serializer=JSONSerializer).delete()
    queue = make_queue(WEBHOOKS_QUEUE, redis_connection)

    enqueued = enqueue_attempts(queue, [stale_attempt, fresh_attempt], job_timeout_s=10)

    assert enqueued == 2
    ids = [
        batch_job_id(a.endpoint_id, [(a.delivery_id, a.attempt_number)])
        for a in (stale_attempt, fresh_attempt)
    ]
    for one in ids:
        job = Job.fetch(one, connection=redis_connection, serializer=JSONSerializer)
        assert job.get_status() == JobStatus.QUEUED
    assert queue.get_job_ids() == ids
