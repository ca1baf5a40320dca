"""The operators' overview shows each worker process and whether it still heartbeats, and what
waits in the pipeline (queues, the payment outbox, stuck work), as the metrics report it."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from redis import Redis
from rq.utils import utcformat

from services.common.queue import (
    MAINTENANCE_QUEUE,
    PAYMENTS_QUEUE,
    WEBHOOKS_QUEUE,
    WORKER_HEARTBEAT_STALE_S,
)
from services.runtime.platform import LocalPlatform
from tests.conftest import OperatorLogin
from tests.integration.webhook_receiver import wait_until


@pytest.fixture
def redis(platform: LocalPlatform) -> Iterator[Redis]:
    """A client of the platform's Redis."""
    client = Redis.from_url(platform.settings.require_redis_url())
    yield client
    client.close()


@pytest.fixture
def silent_worker(redis: Redis) -> Iterator[dict[str, str]]:
    """A payment worker registered as RQ registers one, whose heartbeats stopped (killed)."""
    last_beat = datetime.now(UTC) - timedelta(seconds=WORKER_HEARTBEAT_STALE_S + 60)
    worker: dict[str, str] = {
        "hostname": "killed-host",
        "pid": "424242",
        "birth": utcformat(last_beat - timedelta(minutes=5)),
        "last_heartbeat": utcformat(last_beat),
    }
    key = "rq:worker:payment-worker-424242-0-0badf00d"
    for field, value in worker.items():
        redis.hset(key, field, value)
    redis.sadd("rq:workers", key)
    yield worker
    redis.srem("rq:workers", key)
    redis.delete(key)


def _workers(api: httpx.Client, login: OperatorLogin) -> list[dict[str, Any]]:
    response = api.get("/admin/overview", headers=login.headers)
    assert response.status_code == 200, response.text
    workers: list[dict[str, Any]] = response.json()["workers"]
    return workers


def test_overview__lists_live_workers_healthy_and_a_silent_one_unhealthy(
    api: httpx.Client, operator_login: OperatorLogin, silent_worker: dict[str, str]
) -> None:
    def both_kinds_healthy() -> list[dict[str, Any]] | None:
        found = _workers(api, operator_login)
        healthy = {w["kind"] for w in found if w["healthy"]}
        return found if {"payment-worker", "webhook-worker"} <= healthy else None

    workers = wait_until(both_kinds_healthy, timeout_s=30)

    (silent,) = [w for w in workers if w["host"] == "killed-host"]
    assert silent["kind"] == "payment-worker"
    assert silent["pid"] == 424242
    assert silent["healthy"] is False
    assert silent["last_heartbeat_time"].startswith(silent_worker["last_heartbeat"][:19])
    live = [w for w in workers if w["healthy"]]
    # A healthy worker's heartbeat changes every few seconds: it is left out of the overview.
    assert all("last_heartbeat_time" not in w and w["start_time"] for w in live)


def _gauges(platform: LocalPlatform) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    port = platform.settings.metrics_port("payment")
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_overview__shows_the_pipeline_the_metrics_report(
    api: httpx.Client, operator_login: OperatorLogin, platform: LocalPlatform
) -> None:
    response = api.get("/admin/overview", headers=operator_login.headers)
    assert response.status_code == 200, response.text
    pipeline = response.json()["pipeline"]
    queues = {q["queue"]: q for q in pipeline["queues"]}
    assert set(queues) == {PAYMENTS_QUEUE, MAINTENANCE_QUEUE, WEBHOOKS_QUEUE}
    assert all(q["jobs"] >= 0 and q["oldest_job_age_seconds"] >= 0 for q in queues.values())
    assert {o["kind"] for o in pipeline["outbox"]} == {"job", "event"}
    assert all(o["pending"] >= 0 and o["lag_seconds"] >= 0 for o in pipeline["outbox"])
    gauges = _gauges(platform)
    # Nothing is stuck on a healthy platform, as the gauge says too.
    assert pipeline["stuck_payments"] == gauges[("paymesh_payment_stuck", (("object", "payment"),))]
    assert pipeline["stuck_refunds"] == gauges[("paymesh_payment_stuck", (("object", "refund"),))]
    assert pipeline["stuck_payments"] == 0 and pipeline["stuck_refunds"] == 0
