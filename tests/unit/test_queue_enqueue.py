"""Idempotent enqueueing (`enqueue_many_once`, `enqueue_once`) against a real embedded Redis."""

from __future__ import annotations

import secrets
from typing import Any

import pytest
import redis
from redis.connection import Connection
from rq import Queue
from rq.job import Job, JobStatus

from services.common.queue import JobRequest, enqueue_many_once, enqueue_once, make_queue

FUNC = "services.payment.jobs.process_payment"


class CountingConnection(Connection):
    """A Redis connection that counts what it sends: one send per command or pipeline."""

    sends = 0

    def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        """Counts, then sends."""
        CountingConnection.sends += 1
        super().send_packed_command(command, check_health)  # type: ignore[no-untyped-call]


@pytest.fixture
def queue(redis_url: str) -> Queue:
    """A JSON queue of its own, whose Redis version is already known (RQ asks once per queue)."""
    connection = redis.Redis.from_url(redis_url, connection_class=CountingConnection)
    made = make_queue(f"test-{secrets.token_hex(4)}", connection)
    made.get_redis_server_version()
    return made


def _ids(count: int) -> list[str]:
    prefix = secrets.token_hex(4)
    return [f"payment-pay_{prefix}{index}-process-1" for index in range(count)]


def test_enqueue_many_once__enqueues_each_in_order_in_two_round_trips(queue: Queue) -> None:
    ids = _ids(50)
    before = CountingConnection.sends

    jobs = enqueue_many_once(
        queue, [JobRequest(func=FUNC, job_id=job_id, args=(job_id,)) for job_id in ids]
    )

    assert CountingConnection.sends - before == 2
    assert [job.id for job in jobs] == ids
    assert queue.get_job_ids() == ids
    stored = Job.fetch(ids[7], connection=queue.connection, serializer=queue.serializer)
    assert stored.func_name == FUNC
    assert stored.args == [ids[7]]
    assert stored.get_status() == JobStatus.QUEUED
    assert stored.timeout == 60


def test_enqueue_many_once__live_jobs_are_kept_not_enqueued_again(queue: Queue) -> None:
    old, new = _ids(2)
    first = enqueue_once(queue, FUNC, job_id=old, args=("first",))

    jobs = enqueue_many_once(
        queue,
        [
            JobRequest(func=FUNC, job_id=old, args=("second",)),
            JobRequest(func=FUNC, job_id=new, args=("new",)),
        ],
    )

    assert [job.id for job in jobs] == [old, new]
    assert jobs[0].enqueued_at == first.enqueued_at
    assert queue.get_job_ids() == [old, new]
    kept = Job.fetch(old, connection=queue.connection, serializer=queue.serializer)
    assert kept.args == ["first"]


@pytest.mark.parametrize("status", [JobStatus.STARTED, JobStatus.SCHEDULED, JobStatus.DEFERRED])
def test_enqueue_many_once__started_scheduled_or_deferred_jobs_count_as_live(
    queue: Queue, status: JobStatus
) -> None:
    (job_id,) = _ids(1)
    job = enqueue_once(queue, FUNC, job_id=job_id, args=("first",))
    queue.remove(job)
    job.set_status(status)

    (again,) = enqueue_many_once(queue, [JobRequest(func=FUNC, job_id=job_id, args=("again",))])

    assert again.get_status() == status
    assert queue.get_job_ids() == []


@pytest.mark.parametrize("status", [JobStatus.FINISHED, JobStatus.FAILED])
def test_enqueue_many_once__finished_or_failed_jobs_are_replaced(
    queue: Queue, status: JobStatus
) -> None:
    done, fresh = _ids(2)
    job = enqueue_once(queue, FUNC, job_id=done, args=("first",))
    queue.remove(job)
    job.set_status(status)

    jobs = enqueue_many_once(
        queue,
        [
            JobRequest(func=FUNC, job_id=fresh, args=("fresh",)),
            JobRequest(func=FUNC, job_id=done, args=("again",)),
        ],
    )

    assert [job.get_status() for job in jobs] == [JobStatus.QUEUED, JobStatus.QUEUED]
    assert queue.get_job_ids() == [fresh, done]
    replaced = Job.fetch(done, connection=queue.connection, serializer=queue.serializer)
    assert replaced.args == ["again"]
    assert replaced.get_status() == JobStatus.QUEUED


def test_enqueue_many_once__a_repeated_id_is_enqueued_once(queue: Queue) -> None:
    (job_id,) = _ids(1)

    jobs = enqueue_many_once(
        queue,
        [
            JobRequest(func=FUNC, job_id=job_id, args=("first",)),
            JobRequest(func=FUNC, job_id=job_id, args=("second",)),
        ],
    )

    assert [job.id for job in jobs] == [job_id, job_id]
    assert queue.get_job_ids() == [job_id]
    assert Job.fetch(job_id, connection=queue.connection, serializer=queue.serializer).args == [
        "first"
    ]


def test_enqueue_many_once__nothing_to_enqueue_costs_one_round_trip(queue: Queue) -> None:
    ids = _ids(3)
    enqueue_many_once(queue, [JobRequest(func=FUNC, job_id=job_id) for job_id in ids])
    before = CountingConnection.sends

    enqueue_many_once(queue, [JobRequest(func=FUNC, job_id=job_id) for job_id in ids])

    assert CountingConnection.sends - before == 1
    assert queue.get_job_ids() == ids


def test_enqueue_once__same_id_twice_is_one_job(queue: Queue) -> None:
    (job_id,) = _ids(1)

    first = enqueue_once(queue, FUNC, job_id=job_id, args=("a",))
    second = enqueue_once(queue, FUNC, job_id=job_id, args=("b",))

    assert first.id == second.id == job_id
    assert queue.get_job_ids() == [job_id]
