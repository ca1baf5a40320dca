"""Webhook fault drills on a platform of their own: a worker killed mid-request, Redis lost.

Every event must still reach the receiver at least once (or be dead-lettered): PostgreSQL holds
the deliveries, Redis only the work queue.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from paymesh.webhook.v1 import webhook_internal_pb2_grpc
from redis import Redis
from sqlalchemy.orm import Session, sessionmaker

from services.admin import merchants
from services.common.clients import sync_channel
from services.common.db import make_engine, make_sessionmaker, transaction
from services.runtime import embedded
from services.runtime.platform import LocalPlatform, free_port_settings
from services.webhook.deliveries import LOST_ATTEMPT_ERROR
from tests.integration.webhook_receiver import (
    Receiver,
    Reply,
    create_endpoint,
    publish,
    wait_until,
)

Stub = webhook_internal_pb2_grpc.WebhookInternalServiceStub
DRILL_TIMEOUT_S = 90.0
WORKER = "webhook-worker"


@pytest.fixture(scope="module")
def drill_platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalPlatform]:
    """A platform with a short delivery timeout and lease, for killing things in."""
    data_dir: Path = tmp_path_factory.mktemp("paymesh-webhook-drill")
    running = LocalPlatform(
        {
            **free_port_settings(),
            "PAYMESH_DATA_DIR": str(data_dir),
            "PAYMESH_AUTH_CACHE_TTL_S": "1",
            "PAYMESH_WEBHOOK_ALLOW_PRIVATE_NETWORKS": "true",
            "PAYMESH_WEBHOOK_RETRY_SCHEDULE": "1,1,1",
            "PAYMESH_WEBHOOK_TIMEOUT_S": "4",
            "PAYMESH_WEBHOOK_LEASE_MARGIN_S": "1",
            "PAYMESH_WEBHOOK_SWEEP_INTERVAL_S": "0.5",
        }
    )
    try:
        running.start()
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="module")
def drill_sessions(drill_platform: LocalPlatform) -> Iterator[sessionmaker[Session]]:
    """Direct database sessions on the drill platform."""
    engine = make_engine(drill_platform.settings.require_database_url(), pool_size=2)
    yield make_sessionmaker(engine)
    engine.dispose()


@pytest.fixture
def drill_merchant(drill_sessions: sessionmaker[Session]) -> tuple[str, str]:
    """A fresh merchant on the drill platform: (id, secret key)."""
    with transaction(drill_sessions) as session:
        made = merchants.create_merchant(session, name="Drill Shop")
        key = merchants.create_api_key(session, merchant_id=made.id, mode="test", kind="secret")
        return made.id, key.key


@pytest.fixture(scope="module")
def drill_stub(drill_platform: LocalPlatform) -> Iterator[Stub]:
    """The drill platform's internal webhook service."""
    channel = sync_channel(drill_platform.settings.target("webhook"))
    yield Stub(channel)
    channel.close()


@pytest.fixture
def drill_api(drill_platform: LocalPlatform) -> Iterator[httpx.Client]:
    """An HTTP client for the drill platform's edge."""
    with httpx.Client(base_url=drill_platform.base_url, timeout=30) as client:
        yield client


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    """A local HTTP server the drill platform delivers to."""
    with Receiver().running() as running:
        yield running


def _kill_worker(platform: LocalPlatform) -> None:
    """SIGKILLs the delivery worker and everything it forked (its RQ scheduler)."""
    child = platform.children[WORKER]
    os.killpg(child.pid, signal.SIGKILL)
    child.wait(timeout=30)


def _deliveries(api: httpx.Client, key: str, endpoint_id: Any) -> list[Any]:
    response = api.get(
        f"/v1/webhook_endpoints/{endpoint_id}/deliveries",
        params={"page_size": 100},
        headers={"X-API-Key": key},
    )
    assert response.status_code == 200, response.text
    found: list[Any] = response.json().get("deliveries", [])
    return found


def _all_finished(api: httpx.Client, key: str, endpoint_id: Any, count: int) -> list[Any]:
    def probe() -> list[Any] | None:
        found = _deliveries(api, key, endpoint_id)
        done = [d for d in found if d["status"] in ("delivered", "dead")]
        return found if len(found) == count and len(done) == count else None

    return wait_until(probe, timeout_s=DRILL_TIMEOUT_S)


def test_worker_killed_mid_request__the_event_is_retried_and_delivered(
    drill_platform: LocalPlatform,
    drill_stub: Stub,
    drill_api: httpx.Client,
    drill_merchant: tuple[str, str],
    receiver: Receiver,
) -> None:
    merchant_id, key = drill_merchant
    path = f"/killed/{merchant_id}"
    receiver.script(path, Reply(200, delay_s=3), then=Reply(200))
    endpoint = create_endpoint(drill_api, key, receiver.url(path))
    event = publish(drill_stub, merchant_id)
    receiver.wait_for(path, 1, timeout_s=DRILL_TIMEOUT_S)  # the worker is now mid-request

    _kill_worker(drill_platform)
    drill_platform.start_process(WORKER)

    requests = receiver.wait_for(path, 2, timeout_s=DRILL_TIMEOUT_S)
    (delivery,) = _all_finished(drill_api, key, endpoint["id"], 1)
    attempts = drill_api.get(
        f"/v1/webhook_deliveries/{delivery['id']}/attempts", headers={"X-API-Key": key}
    ).json()["attempts"]

    assert delivery["status"] == "delivered"
    assert {r.headers["webhook-id"] for r in requests} == {event.id}
    assert attempts[0]["error"] == LOST_ATTEMPT_ERROR
    assert attempts[-1]["status_code"] == 200


def test_redis_flushed_with_deliveries_queued__every_event_arrives(
    drill_platform: LocalPlatform,
    drill_stub: Stub,
    drill_api: httpx.Client,
    drill_merchant: tuple[str, str],
    receiver: Receiver,
) -> None:
    merchant_id, key = drill_merchant
    path = f"/flushed/{merchant_id}"
    endpoint = create_endpoint(drill_api, key, receiver.url(path))
    _kill_worker(drill_platform)
    redis = Redis.from_url(drill_platform.settings.require_redis_url())
    try:
        events = {publish(drill_stub, merchant_id).id for _ in range(5)}
        assert redis.llen("rq:queue:paymesh.webhooks") >= 5  # the jobs were queued...
        redis.flushall()  # ...and now they are gone
    finally:
        redis.close()
    drill_platform.start_process(WORKER)

    finished = _all_finished(drill_api, key, endpoint["id"], 5)

    assert {d["status"] for d in finished} == {"delivered"}
    received = {r.headers["webhook-id"] for r in receiver.received(path)}
    assert received == events


def test_redis_restarted_with_deliveries_pending__every_event_arrives(
    drill_platform: LocalPlatform,
    drill_stub: Stub,
    drill_api: httpx.Client,
    drill_merchant: tuple[str, str],
    receiver: Receiver,
) -> None:
    merchant_id, key = drill_merchant
    path = f"/restarted/{merchant_id}"
    endpoint = create_endpoint(drill_api, key, receiver.url(path))
    redis_dir = drill_platform.settings.data_dir.resolve() / "redis"
    port = urlsplit(drill_platform.settings.require_redis_url()).port
    _kill_worker(drill_platform)
    embedded.stop_redis(redis_dir)
    try:
        # Publishing still works: the deliveries are committed, only the enqueue fails.
        events = {publish(drill_stub, merchant_id).id for _ in range(3)}
    finally:
        embedded.start_redis(redis_dir, port=port)
    drill_platform.start_process(WORKER)

    finished = _all_finished(drill_api, key, endpoint["id"], 3)

    assert {d["status"] for d in finished} == {"delivered"}
    assert {r.headers["webhook-id"] for r in receiver.received(path)} == events
