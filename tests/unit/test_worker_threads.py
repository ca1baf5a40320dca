"""One worker process runs `PAYMESH_WORKER_CONCURRENCY` jobs at once and stops gracefully.

Each test starts `run_worker` in a process of its own against an embedded Redis, with jobs
(tests/unit/worker_jobs.py) that note their start and end times in Redis.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psutil
import pytest
from redis import Redis
from rq import Worker
from rq.job import Job, JobStatus
from rq.utils import utcformat
from rq.worker import BaseWorker

from services.common import worker_health
from services.common.queue import (
    DEQUEUE_TIMEOUT_S,
    WORKER_HEARTBEAT_STALE_S,
    WorkerProcess,
    enqueue_once,
    make_queue,
    worker_processes,
)
from services.runtime.embedded import start_redis, stop_redis

ROOT = Path(__file__).resolve().parents[2]
RECORD = "tests.unit.worker_jobs.record"
WAIT_S = 60.0


@pytest.fixture
def redis(redis_url: str) -> Iterator[Redis]:
    """A client of that Redis."""
    client = Redis.from_url(redis_url)
    yield client
    client.close()


class _WorkerProcess:
    """A `run_worker` process on a queue of its own."""

    def __init__(self, redis_url: str, *, concurrency: int, log_path: Path) -> None:
        self.queue_name = f"paymesh.test.{uuid.uuid4().hex[:8]}"
        self.log_key = f"test-log-{self.queue_name}"
        command = (
            "from services.common.queue import run_worker; "
            f"run_worker(name='threads-test-worker', queue_names=['{self.queue_name}'])"
        )
        self.log = log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-c", command],
            cwd=ROOT,
            env={
                **os.environ,
                "PAYMESH_REDIS_URL": redis_url,
                "PAYMESH_WORKER_CONCURRENCY": str(concurrency),
                "PAYMESH_LOG_JSON": "false",
            },
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.log_path = log_path

    def workers(self, redis: Redis) -> list[BaseWorker]:
        """This process's RQ workers registered in Redis."""
        return [w for w in Worker.all(connection=redis) if w.pid == self.process.pid]

    def records(self, redis: Redis) -> list[dict[str, Any]]:
        """What the jobs noted, in order."""
        return [json.loads(raw) for raw in redis.lrange(self.log_key, 0, -1)]

    def stop(self) -> None:
        """Kills the process if a test left it running."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=30)
        self.log.close()


@pytest.fixture
def start_worker(redis_url: str, tmp_path: Path) -> Iterator[Any]:
    """Starts worker processes; kills whatever a test leaves running."""
    started: list[_WorkerProcess] = []

    def start(concurrency: int) -> _WorkerProcess:
        worker = _WorkerProcess(
            redis_url, concurrency=concurrency, log_path=tmp_path / f"worker-{len(started)}.log"
        )
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.stop()


def _wait_until(probe: Any, *, what: str, worker: _WorkerProcess, timeout_s: float = WAIT_S) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = probe()
        if found:
            return found
        if worker.process.poll() is not None:
            break
        time.sleep(0.05)
    pytest.fail(f"{what}; worker log:\n{worker.log_path.read_text()[-4000:]}")


def _enqueue(
    redis: Redis, worker: _WorkerProcess, count: int, *, duration_s: float, timeout_s: int = 60
) -> list[Job]:
    queue = make_queue(worker.queue_name, redis)
    return [
        enqueue_once(
            queue,
            RECORD,
            job_id=f"threads-test-{uuid.uuid4().hex[:8]}-{index}",
            args=(worker.log_key, index, duration_s),
            job_timeout_s=timeout_s,
        )
        for index in range(count)
    ]


def _events(records: list[dict[str, Any]], event: str) -> dict[int, float]:
    return {r["index"]: r["at"] for r in records if r["event"] == event}


def test_one_process_runs_jobs_at_the_same_time(redis: Redis, start_worker: Any) -> None:
    worker = start_worker(4)
    _wait_until(lambda: len(worker.workers(redis)) == 4, what="4 workers", worker=worker)

    _enqueue(redis, worker, 4, duration_s=1.5)
    records = _wait_until(
        lambda: (found := worker.records(redis)) and len(_events(found, "end")) == 4 and found,
        what="4 jobs ended",
        worker=worker,
    )

    starts, ends = _events(records, "start"), _events(records, "end")
    # Every job started before any ended: all four ran at once, on four threads.
    assert max(starts.values()) < min(ends.values())
    assert len({r["thread"] for r in records if r["event"] == "end"}) == 4


def test_sigterm_lets_the_jobs_in_hand_finish_and_takes_no_more(
    redis: Redis, start_worker: Any
) -> None:
    worker = start_worker(3)
    _wait_until(lambda: len(worker.workers(redis)) == 3, what="3 workers", worker=worker)
    jobs = _enqueue(redis, worker, 3, duration_s=2.0)
    _wait_until(
        lambda: len(_events(worker.records(redis), "start")) == 3, what="3 starts", worker=worker
    )
    (queued,) = _enqueue(redis, worker, 1, duration_s=0.1)

    worker.process.send_signal(signal.SIGTERM)
    time.sleep(0.2)
    worker.process.send_signal(signal.SIGTERM)  # the same stop twice (group and supervisor)
    code = worker.process.wait(timeout=WAIT_S)

    records = worker.records(redis)
    assert code == 0
    assert sorted(_events(records, "end")) == [0, 1, 2]
    assert [job.get_status() for job in jobs] == [JobStatus.FINISHED] * 3
    assert queued.get_status() == JobStatus.QUEUED
    assert worker.workers(redis) == []  # every worker deregistered


def test_sigterm_stops_idle_workers_within_a_few_seconds(redis: Redis, start_worker: Any) -> None:
    worker = start_worker(4)
    _wait_until(lambda: len(worker.workers(redis)) == 4, what="4 workers", worker=worker)
    time.sleep(DEQUEUE_TIMEOUT_S / 2)  # mid-wait

    started = time.monotonic()
    worker.process.send_signal(signal.SIGTERM)
    code = worker.process.wait(timeout=WAIT_S)

    assert code == 0
    assert time.monotonic() - started < DEQUEUE_TIMEOUT_S + 8
    assert worker.workers(redis) == []


def test_a_second_signal_ends_the_process_without_waiting_for_the_jobs(
    redis: Redis, start_worker: Any
) -> None:
    worker = start_worker(2)
    _wait_until(lambda: len(worker.workers(redis)) == 2, what="2 workers", worker=worker)
    _enqueue(redis, worker, 2, duration_s=30)
    _wait_until(
        lambda: len(_events(worker.records(redis), "start")) == 2, what="2 starts", worker=worker
    )

    worker.process.send_signal(signal.SIGTERM)
    time.sleep(1.5)  # a repeat within a second counts as the same stop, as in RQ
    worker.process.send_signal(signal.SIGTERM)
    code = worker.process.wait(timeout=15)

    assert code != 0
    assert _events(worker.records(redis), "end") == {}


def test_a_job_over_its_time_limit_fails_on_its_thread(redis: Redis, start_worker: Any) -> None:
    worker = start_worker(2)
    _wait_until(lambda: len(worker.workers(redis)) == 2, what="2 workers", worker=worker)

    slow, quick = (
        *_enqueue(redis, worker, 1, duration_s=30, timeout_s=1),
        *_enqueue(redis, worker, 1, duration_s=0.2),
    )
    _wait_until(
        lambda: slow.get_status() == JobStatus.FAILED, what="slow job failed", worker=worker
    )

    assert quick.get_status() == JobStatus.FINISHED
    assert "JobTimeoutException" in (slow.latest_result().exc_string or "")  # type: ignore[union-attr]
    assert worker.process.poll() is None  # the worker lives on


def _assert_jobs_run(client: Redis, worker: _WorkerProcess) -> None:
    """Two new jobs finish and the worker process is still running (after Redis came back)."""
    jobs = _enqueue(client, worker, 2, duration_s=0.1)
    _wait_until(
        lambda: all(job.get_status() == JobStatus.FINISHED for job in jobs),
        what="jobs finished after the restart",
        worker=worker,
    )
    assert worker.process.poll() is None


def test_workers_carry_on_after_redis_restarts(tmp_path: Path) -> None:
    data_dir = tmp_path / "own-redis"
    server = start_redis(data_dir)
    port = server.port
    client = Redis.from_url(server.url())
    worker = _WorkerProcess(server.url(), concurrency=2, log_path=tmp_path / "worker.log")
    try:
        _wait_until(lambda: len(worker.workers(client)) == 2, what="2 workers", worker=worker)
        stop_redis(data_dir)
        time.sleep(3)  # every worker meets the lost connection
        start_redis(data_dir, port=port)

        _assert_jobs_run(client, worker)
    finally:
        worker.stop()
        client.close()
        stop_redis(data_dir)


def test_a_worker_that_quits_on_a_lost_redis_starts_again(tmp_path: Path) -> None:
    data_dir = tmp_path / "own-redis"
    server = start_redis(data_dir)
    url, port = server.url(), server.port
    stop_redis(data_dir)  # the workers start without Redis: RQ quits at once
    worker = _WorkerProcess(url, concurrency=2, log_path=tmp_path / "worker.log")
    client = Redis.from_url(url)
    try:
        _wait_until(
            lambda: "quit unasked" in worker.log_path.read_text(),
            what="a worker quit unasked",
            worker=worker,
        )
        start_redis(data_dir, port=port)

        _assert_jobs_run(client, worker)
    finally:
        worker.stop()
        client.close()
        stop_redis(data_dir)


def test_a_killed_worker_takes_its_scheduler_child_with_it(redis: Redis, start_worker: Any) -> None:
    worker = start_worker(1)
    process = psutil.Process(worker.process.pid)
    forked = _wait_until(process.children, what="the scheduler child", worker=worker)

    # Only the worker itself, not its process group: the child must end on its own.
    worker.process.send_signal(signal.SIGKILL)
    worker.process.wait(timeout=10)

    _, alive = psutil.wait_procs(forked, timeout=10)
    assert not [p for p in alive if p.status() != psutil.STATUS_ZOMBIE]


def test_worker_processes__a_killed_worker_stays_listed_and_stops_beating(
    redis: Redis, start_worker: Any
) -> None:
    live, killed = start_worker(2), start_worker(1)

    def listed() -> dict[int, WorkerProcess]:
        return {p.pid: p for p in worker_processes(redis) if p.kind == "threads-test-worker"}

    _wait_until(
        lambda: {live.process.pid, killed.process.pid} <= listed().keys(),
        what="both processes registered",
        worker=live,
    )
    killed.process.send_signal(signal.SIGKILL)
    killed.process.wait(timeout=10)
    before = listed()
    time.sleep(DEQUEUE_TIMEOUT_S + 1)
    after = listed()

    # One entry per process, whatever its thread count; the live one beats every few seconds.
    assert (
        after[live.process.pid].last_heartbeat_time > before[live.process.pid].last_heartbeat_time
    )
    dead = after[killed.process.pid]
    assert dead.last_heartbeat_time == before[killed.process.pid].last_heartbeat_time
    assert dead.host == socket.gethostname()
    silent_until = dead.last_heartbeat_time + timedelta(seconds=WORKER_HEARTBEAT_STALE_S)
    assert dead.healthy(at=silent_until)
    assert not dead.healthy(at=silent_until + timedelta(seconds=1))


def test_worker_health_probe__fails_for_a_worker_that_stopped_heartbeating(
    redis: Redis, redis_url: str, start_worker: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PAYMESH_REDIS_URL", redis_url)
    live = start_worker(1)
    _wait_until(lambda: live.workers(redis), what="the worker registered", worker=live)
    # As RQ registers a worker, for a process on this host silent for longer than allowed.
    last_beat = datetime.now(UTC) - timedelta(seconds=WORKER_HEARTBEAT_STALE_S + 1)
    key = f"rq:worker:silent-worker-{os.getpid()}-0-{uuid.uuid4().hex[:8]}"
    for field, value in {
        "hostname": socket.gethostname(),
        "pid": str(os.getpid()),
        "birth": utcformat(last_beat),
        "last_heartbeat": utcformat(last_beat),
    }.items():
        redis.hset(key, field, value)
    redis.sadd("rq:workers", key)

    assert worker_health.main(["threads-test-worker"]) == 0
    assert worker_health.main(["silent-worker"]) == 1
    assert worker_health.main(["absent-worker"]) == 1


def test_worker_health_probe__fails_when_redis_cannot_be_read(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    monkeypatch.setenv("PAYMESH_REDIS_URL", f"redis://127.0.0.1:{closed_port}/0")

    assert worker_health.main(["payment-worker"]) == 1
    assert "unhealthy: Redis cannot be read" in capsys.readouterr().err
