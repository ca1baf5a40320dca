"""RQ on Redis: queues, idempotent enqueueing, and the worker loop. JSON, never pickle.

Redis is a work queue here, never the system of record: every job stands for a row in
PostgreSQL (an outbox row, a delivery), and a sweeper re-enqueues rows whose job was lost.
Job ids are derived from the work (`payment-pay_123-process-0`; RQ refuses colons in ids), so
enqueueing the same work twice collapses into one job while the first is still queued or running.
"""

from __future__ import annotations

import hashlib
import logging
import os
import signal
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from types import FrameType
from typing import Any

from redis import Redis
from redis.client import Pipeline
from redis.exceptions import RedisError
from rq import Queue, SimpleWorker, Worker
from rq.defaults import DEFAULT_MAINTENANCE_TASK_INTERVAL
from rq.exceptions import StopRequested
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer
from rq.timeouts import TimerDeathPenalty
from rq.utils import now, utcparse
from rq.worker_registration import get_keys

from services.common import tracing
from services.common.lifetime import die_with_parent
from services.common.logs import configure_logging
from services.common.metrics import JOB_SECONDS, JOBS, serve_process_metrics
from services.common.settings import Settings

logger = logging.getLogger(__name__)

# Queue names, in one place.
PAYMENTS_QUEUE = "paymesh.payments"
WEBHOOKS_QUEUE = "paymesh.webhooks"
MAINTENANCE_QUEUE = "paymesh.maintenance"

JOB_TIMEOUT_S = 60
RESULT_TTL_S = 300
FAILURE_TTL_S = 7 * 24 * 3600
# A worker that quits unasked (Redis lost) starts again after this pause, doubling each time.
WORKER_RESTART_DELAY_MIN_S = 1.0
WORKER_RESTART_DELAY_MAX_S = 30.0
# An idle worker waits for a job this long at a time (RQ's BLPOP), so it sees a stop this soon.
DEQUEUE_TIMEOUT_S = 2
# How often a worker process runs RQ's maintenance (its first worker thread only; the others
# keep RQ's default of 10 minutes, so the cleaning is not repeated by every thread). It frees
# the jobs a killed worker held: those it had taken off the queue but not started (RQ's
# intermediate list, failed after a minute there) and those it had started (failed once their
# time limit passed). Until then they look live, and enqueueing their id again collapses into
# them; RQ's default alone left deliveries waiting that long after a worker was killed (found
# by the fault run).
MAINTENANCE_INTERVAL_S = 30
# After a stop, once no worker has had a job in hand for this long, the process ends even if an
# idle worker has not deregistered yet (it may be retrying a Redis that is down).
STOP_IDLE_GRACE_S = 15.0
# A worker process whose freshest heartbeat is older than this is reported unhealthy. An idle
# worker beats every DEQUEUE_TIMEOUT_S; one in a job beats again when the job ends, within its
# time limit; a process beats as often as its freshest worker thread.
WORKER_HEARTBEAT_STALE_S = JOB_TIMEOUT_S + 30
# A batch job's id carries this many hex digits of its items' digest (96 bits).
_BATCH_DIGEST_CHARS = 24
# The job meta key of its items' trace contexts (`JobRequest.traceparents`).
TRACEPARENTS_META = "traceparents"
# Statuses in which a job still stands for pending work; any other lets the same id be reused.
_LIVE_STATUSES = {JobStatus.QUEUED, JobStatus.STARTED, JobStatus.SCHEDULED, JobStatus.DEFERRED}


def redis_connection(settings: Settings) -> Redis:
    """A Redis connection from the settings, with bounded timeouts."""
    return Redis.from_url(settings.require_redis_url(), socket_timeout=10, socket_connect_timeout=5)


def make_queue(name: str, connection: Redis) -> Queue:
    """A queue whose jobs are serialized as JSON."""
    return Queue(name, connection=connection, serializer=JSONSerializer)


@dataclass(frozen=True)
class JobRequest:
    """One job to enqueue: `func(*args)` (a dotted path) as `job_id`.

    `traceparents`: the trace context of each item the job carries, in order, kept in the job's
    meta when tracing is on (services/common/tracing.py); the worker continues them.
    """

    func: str
    job_id: str
    args: tuple[Any, ...] = ()
    traceparents: tuple[str | None, ...] = ()


def batch_job_id(prefix: str, names: Iterable[str]) -> str:
    """The id of a job carrying a batch of work items: the same items, the same id.

    `<prefix>-batch-<digest of the sorted names>`, so a duplicate enqueue of one batch collapses
    into one job.
    """
    digest = hashlib.sha256("\n".join(sorted(names)).encode()).hexdigest()
    return f"{prefix}-batch-{digest[:_BATCH_DIGEST_CHARS]}"


def enqueue_many_once(
    queue: Queue, requests: Sequence[JobRequest], *, job_timeout_s: int = JOB_TIMEOUT_S
) -> list[Job]:
    """Enqueues each request unless a live job with its id exists; returns each request's job.

    Two Redis round trips whatever the count: one pipeline reads the existing jobs, one
    MULTI/EXEC deletes the finished or failed ones and enqueues the rest (deleting a finished
    job first reads its executions: one more round trip for each such job, and only for those).
    A request whose id repeats an earlier one in `requests` gets the earlier one's job.
    """
    first: dict[str, JobRequest] = {}
    for request in requests:
        first.setdefault(request.job_id, request)
    existing = Job.fetch_many(list(first), connection=queue.connection, serializer=JSONSerializer)
    jobs: dict[str, Job] = {}
    stale: list[Job] = []
    fresh = []
    for request, job in zip(first.values(), existing, strict=True):
        if job is not None and job.get_status(refresh=False) in _LIVE_STATUSES:
            jobs[request.job_id] = job
            continue
        if job is not None:
            stale.append(job)
        fresh.append(
            Queue.prepare_data(
                request.func,
                args=request.args,
                job_id=request.job_id,
                timeout=job_timeout_s,
                result_ttl=RESULT_TTL_S,
                failure_ttl=FAILURE_TTL_S,
                meta=(
                    {TRACEPARENTS_META: list(request.traceparents)}
                    if any(request.traceparents)
                    else None
                ),
            )
        )
    if fresh:
        with queue.connection.pipeline() as pipeline:
            for job in stale:
                _delete_stale(job, pipeline)
            for job in queue.enqueue_many(fresh, pipeline=pipeline):
                jobs[job.id] = job
            pipeline.execute()
    return [jobs[request.job_id] for request in requests]


def _delete_stale(job: Job, pipeline: Pipeline) -> None:
    """Deletes a finished or failed job (in `pipeline`) so its id can be enqueued afresh.

    For up to a minute after a worker died in a job, RQ's `Job.delete` raises ValueError: the
    job's execution record has expired but its execution registry still names it. The record
    is gone, so what is left is deleted by key: the registries' entries (queued by `delete`
    before it raised), the execution registry and the job's own keys.
    """
    try:
        job.delete(pipeline=pipeline)
    except ValueError:
        pipeline.delete(
            job.execution_registry.key, job.key, job.dependents_key, job.dependencies_key
        )


def enqueue_once(
    queue: Queue,
    func: str,
    *,
    job_id: str,
    args: tuple[Any, ...] = (),
    job_timeout_s: int = JOB_TIMEOUT_S,
) -> Job:
    """Enqueues `func(*args)` (a dotted path) as `job_id` unless a live job with that id exists."""
    (job,) = enqueue_many_once(
        queue, [JobRequest(func=func, job_id=job_id, args=args)], job_timeout_s=job_timeout_s
    )
    return job


class _Worker(SimpleWorker):
    """A SimpleWorker that runs on one of a worker process's threads (see `_WorkerThreads`).

    The main thread owns the signals, so this worker installs no handlers and is stopped with
    `request_warm_stop`. Its job time limit is a timer that raises in the job's own thread (RQ's
    default, SIGALRM, reaches only the main thread); like SIGALRM it takes effect between Python
    instructions, and the jobs' own timeouts (HTTP, gRPC, database) bound the blocking calls.
    It waits for a job `DEQUEUE_TIMEOUT_S` at a time, so an idle worker sees a stop that soon.
    """

    death_penalty_class = TimerDeathPenalty
    # Whether a job is in hand; read by the main thread (a plain attribute: the GIL makes the
    # assignment atomic, and a stale read only delays the process's exit by one check).
    running_job = False

    @property
    def dequeue_timeout(self) -> int:
        """Seconds of one BLPOP (RQ's default is the worker TTL, minutes)."""
        return DEQUEUE_TIMEOUT_S

    def _install_signal_handlers(self) -> None:
        """None: the main thread takes the signals and stops every worker of the process."""

    def request_warm_stop(self) -> None:
        """Stops after the job in hand, or at the end of the current wait; from any thread."""
        self._shutdown_requested_date = now()
        self._stop_requested = True

    def dequeue_job_and_maintain_ttl(
        self, timeout: int | None, max_idle_time: int | None = None
    ) -> tuple[Job, Queue] | None:
        """The next job; RQ's loop, ended after each idle `timeout` to check for a stop."""
        if timeout is None or max_idle_time is not None:
            return super().dequeue_job_and_maintain_ttl(timeout, max_idle_time)  # type: ignore[no-any-return]
        while not self._stop_requested:
            # With max_idle_time, an idle wait returns None instead of waiting again.
            result = super().dequeue_job_and_maintain_ttl(timeout, max_idle_time=timeout)
            if result is not None:
                return result  # type: ignore[no-any-return]
        raise StopRequested()

    def execute_job(self, job: Job, queue: Queue) -> None:
        """Runs the job in this thread, noting that one is in hand; in a span when tracing."""
        self.running_job = True
        try:
            with tracing.job(
                f"job {(job.func_name or '').rpartition('.')[2]}",
                job.meta.get(TRACEPARENTS_META) or [],
                attributes={
                    "messaging.system": "rq",
                    "messaging.destination.name": queue.name,
                    "messaging.message.id": job.id,
                },
            ):
                super().execute_job(job, queue)
        finally:
            self.running_job = False

    def perform_job(self, job: Job, queue: Queue) -> bool:
        """RQ's run of the job (it catches the job's errors), timed and counted by outcome."""
        started_s = time.monotonic()
        succeeded = False
        try:
            succeeded = bool(super().perform_job(job, queue))
            return succeeded
        finally:
            name = (job.func_name or "unknown").rsplit(".", 1)[-1]
            JOB_SECONDS.labels(queue.name, name).observe(time.monotonic() - started_s)
            JOBS.labels(queue.name, name, "succeeded" if succeeded else "failed").inc()


def _worker_name(kind: str, index: int) -> str:
    """The RQ name of this process's `index`th worker thread: `<kind>-<pid>-<index>-<random>`.

    Unique per start (RQ refuses a name whose previous worker is still registered); `_kind_of`
    reads the kind back.
    """
    return f"{kind}-{os.getpid()}-{index}-{uuid.uuid4().hex[:8]}"


def _kind_of(worker_key: str) -> str:
    """The kind in an RQ worker key whose name `_worker_name` made."""
    return worker_key.removeprefix(Worker.redis_worker_namespace_prefix).rsplit("-", 3)[0]


class _WorkerThreads:
    """`concurrency` RQ workers in one process, one per thread; the main thread takes signals.

    Each worker has its own name and Redis connection; only the first runs RQ's scheduler (it
    forks a process of its own). SIGTERM or SIGINT asks every worker to stop after the job in
    hand; a second one (a second or more later) ends the process at once, abandoning the jobs in
    hand as a crash would (the sweepers re-drive them from PostgreSQL). A worker that quits
    unasked (Redis lost) starts again on its thread after a pause. A thread that fails otherwise
    stops the whole process (exit status 1), so its supervisor restarts it, as before threads.
    """

    def __init__(self, *, name: str, queue_names: list[str], settings: Settings) -> None:
        self.name = name
        self.queue_names = queue_names
        self.settings = settings
        self.stopping = threading.Event()
        self.workers: list[_Worker | None] = [None] * settings.worker_concurrency
        self.failed = False
        self._stop_time_s: float | None = None

    def run(self) -> None:
        """Starts the workers and returns when they have stopped (SystemExit on a failure)."""
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        threads = [
            threading.Thread(
                target=self._run_slot, args=(index,), name=f"{self.name}-{index}", daemon=True
            )
            for index in range(len(self.workers))
        ]
        for thread in threads:
            thread.start()
        logger.info("%s: %d workers on %s", self.name, len(threads), ",".join(self.queue_names))
        self._wait(threads)
        if self.failed:
            raise SystemExit(1)

    def stop(self) -> None:
        """Asks every worker to stop after the job in hand; from any thread."""
        # First, so a worker made from now on sees it (`_run_slot` checks after publishing one).
        self.stopping.set()
        if self._stop_time_s is None:
            self._stop_time_s = time.monotonic()
        for worker in list(self.workers):
            if worker is not None:
                worker.request_warm_stop()

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if self._stop_time_s is not None and time.monotonic() - self._stop_time_s < 1.0:
            # As RQ does: one stop can arrive twice (the process group and a supervisor).
            return
        if self.stopping.is_set():
            logger.warning("%s: second signal; stopping now, abandoning jobs in hand", self.name)
            self._stop_schedulers()
            raise SystemExit(1)
        logger.info("%s: %s; stopping after the jobs in hand", self.name, signal.strsignal(signum))
        self.stop()

    def _wait(self, threads: list[threading.Thread]) -> None:
        busy_time_s = 0.0
        while True:
            alive = [thread for thread in threads if thread.is_alive()]
            if not alive:
                return
            # Short joins keep the main thread free for signal handlers.
            alive[0].join(timeout=0.5)
            if self._stop_time_s is None:
                continue
            if any(worker is not None and worker.running_job for worker in self.workers):
                busy_time_s = time.monotonic()
            if time.monotonic() - max(busy_time_s, self._stop_time_s) > STOP_IDLE_GRACE_S:
                logger.warning("%s: %d idle workers did not stop; leaving", self.name, len(alive))
                self._stop_schedulers()
                return

    def _stop_schedulers(self) -> None:
        for worker in list(self.workers):
            if worker is not None and worker.scheduler is not None:
                worker.stop_scheduler()  # type: ignore[no-untyped-call]

    def _make_worker(self, index: int) -> _Worker:
        connection = redis_connection(self.settings)
        queues = [make_queue(queue_name, connection) for queue_name in self.queue_names]
        return _Worker(
            queues,
            name=_worker_name(self.name, index),
            connection=connection,
            serializer=JSONSerializer,
            maintenance_interval=(
                MAINTENANCE_INTERVAL_S if index == 0 else DEFAULT_MAINTENANCE_TASK_INTERVAL
            ),
        )

    def _run_slot(self, index: int) -> None:
        try:
            self._work_until_stopped(index)
        except BaseException:
            logger.exception("%s: worker thread %d failed; stopping the process", self.name, index)
            self.failed = True
            self.stop()

    def _work_until_stopped(self, index: int) -> None:
        """Runs a worker; starts another after a pause when one quits unasked (Redis lost).

        RQ retries a lost Redis while it waits for a job, but quits when Redis fails at another
        moment (a heartbeat, registering its death). Redis is only a work queue here, so the
        worker starts again instead of leaving its thread dead.
        """
        restart_delay_s = WORKER_RESTART_DELAY_MIN_S
        while not self.stopping.is_set():
            try:
                worker = self._make_worker(index)
                self.workers[index] = worker
                if self.stopping.is_set():
                    worker.request_warm_stop()
                worker.work(with_scheduler=index == 0, logging_level=self.settings.log_level)
            except RedisError:
                logger.exception("%s lost Redis", self.name)
            if self.stopping.is_set():
                return
            logger.warning(
                "%s: worker %d quit unasked; starting again in %.0f s",
                self.name,
                index,
                restart_delay_s,
            )
            self.stopping.wait(restart_delay_s)
            restart_delay_s = min(restart_delay_s * 2, WORKER_RESTART_DELAY_MAX_S)


@dataclass(frozen=True)
class WorkerProcess:
    """One worker process as its RQ workers registered it in Redis."""

    kind: str
    host: str
    pid: int
    start_time: datetime
    last_heartbeat_time: datetime

    def healthy(self, *, at: datetime) -> bool:
        """Whether it heartbeated within `WORKER_HEARTBEAT_STALE_S` of `at`."""
        return at - self.last_heartbeat_time <= timedelta(seconds=WORKER_HEARTBEAT_STALE_S)


def worker_processes(connection: Redis) -> list[WorkerProcess]:
    """Every worker process registered in Redis, by kind, host and pid; two round trips.

    A process registers one RQ worker per thread, named by `_worker_name`. A worker
    stopped cleanly deregisters; a killed one stays, with its last heartbeat, until its key
    expires (RQ's worker TTL plus a minute), so its death shows for that long.
    """
    keys = sorted(get_keys(connection=connection))
    with connection.pipeline(transaction=False) as pipeline:
        for key in keys:
            pipeline.hmget(key, "hostname", "pid", "birth", "last_heartbeat")
        rows: list[list[bytes | None]] = pipeline.execute()
    found: dict[tuple[str, str, int], WorkerProcess] = {}
    for key, (host, pid, birth, beat) in zip(keys, rows, strict=True):
        if host is None or pid is None or birth is None or beat is None:
            continue  # expired since the set was read, or not fully registered yet
        process = WorkerProcess(
            kind=_kind_of(key),
            host=host.decode(),
            pid=int(pid),
            start_time=utcparse(birth.decode()),
            last_heartbeat_time=utcparse(beat.decode()),
        )
        known = found.setdefault((process.kind, process.host, process.pid), process)
        if process.last_heartbeat_time > known.last_heartbeat_time:
            found[(process.kind, process.host, process.pid)] = process
    return sorted(found.values(), key=lambda p: (p.kind, p.host, p.start_time, p.pid))


def run_worker(
    *, name: str, queue_names: list[str], prepare: Callable[[], object] = lambda: None
) -> None:
    """Runs `PAYMESH_WORKER_CONCURRENCY` RQ workers on `queue_names` in this process until SIGTERM.

    Each worker is a SimpleWorker on a thread of its own (no fork per job): jobs mostly wait on
    the network and on commits, so threads overlap them. `prepare` builds what the jobs share
    (channels, pools), once logging and tracing are set up and before the threads start.
    """
    settings = Settings()
    configure_logging(service=name, level=settings.log_level, json=settings.log_json)
    serve_process_metrics(settings, name)
    tracing.configure(settings.otel_endpoint, service=name)
    prepare()
    # RQ's scheduler is a forked child (of the first worker thread, which lives as long as the
    # process): killed with this process, it must not run on, re-parented, holding its pipes.
    parent_pid = os.getpid()
    os.register_at_fork(
        after_in_child=lambda: die_with_parent(signal.SIGKILL, parent_pid=parent_pid)
    )
    _WorkerThreads(name=name, queue_names=queue_names, settings=settings).run()


def queue_backlog(connection: Redis, names: Iterable[str]) -> dict[str, tuple[int, float]]:
    """Each queue's waiting jobs and the age in seconds of its oldest (0 when empty).

    For the metrics collectors: two round trips whatever the queues hold (RQ appends, so a
    queue's first job id is its oldest; a job that vanished since counts as age 0).
    """
    queues = [make_queue(name, connection) for name in names]
    with connection.pipeline(transaction=False) as pipeline:
        for queue in queues:
            pipeline.llen(queue.key)
            pipeline.lindex(queue.key, 0)
        answers = pipeline.execute()
    oldest = [answers[2 * index + 1] for index in range(len(queues))]
    with connection.pipeline(transaction=False) as pipeline:
        for job_id in oldest:
            pipeline.hget(Job.key_for(job_id.decode() if job_id else "none"), "enqueued_at")
        enqueued: list[bytes | None] = pipeline.execute()
    current = now()
    backlog: dict[str, tuple[int, float]] = {}
    for index, queue in enumerate(queues):
        stamp = enqueued[index] if oldest[index] else None
        age = (current - utcparse(stamp.decode())).total_seconds() if stamp else 0.0
        backlog[queue.name] = (int(answers[2 * index]), max(age, 0.0))
    return backlog
