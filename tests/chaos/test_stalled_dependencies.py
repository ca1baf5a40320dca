"""Redis clients of the services give up on a stalled Redis instead of hanging with it.

A stall (the fault proxy forwards nothing and closes nothing, as in a partition or a dropped
NAT entry) never ends on its own here: only a client-side timeout gets the caller out. The
bound asserted is far above each client's timeout, so load cannot make these flake.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis.exceptions import RedisError

from services.admin.access import LoginThrottle
from services.common.queue import redis_connection
from services.common.ratelimit import ApiRateLimiter
from services.runtime import embedded
from services.runtime.platform import settings_from
from tests.chaos.proxy import FaultProxy

GIVE_UP_WITHIN_S = 60.0


@pytest.fixture
def stalled_redis_url(tmp_path: Path) -> Iterator[str]:
    """A URL of a real Redis behind a proxy that is stalled for good."""
    server = embedded.start_redis(tmp_path / "redis")
    try:
        with FaultProxy(embedded.LOCALHOST, server.port, name="redis").running() as proxy:
            proxy.stall()
            yield f"redis://{embedded.LOCALHOST}:{proxy.port}/0"
            proxy.release()
    finally:
        embedded.stop_redis(tmp_path / "redis")


def _ends_within(call: object, timeout_s: float) -> BaseException | None:
    """Runs `call` on a thread; asserts it returned or raised in time; returns what it raised."""
    assert callable(call)
    raised: list[BaseException] = []

    def run() -> None:
        try:
            call()
        except BaseException as error:  # handed back to the test, which asserts on it
            raised.append(error)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout_s)
    assert not thread.is_alive(), f"still waiting on the stalled Redis after {timeout_s}s"
    return raised[0] if raised else None


def test_login_throttle__stalled_redis_fails_the_check_instead_of_hanging(
    stalled_redis_url: str,
) -> None:
    throttle = LoginThrottle(stalled_redis_url, failures_max=5, window_s=900)
    raised = _ends_within(lambda: throttle.check("ops@example.com", "10.0.0.1"), GIVE_UP_WITHIN_S)
    assert isinstance(raised, RedisError), raised


def test_queue_connection__stalled_redis_raises_instead_of_hanging(stalled_redis_url: str) -> None:
    connection = redis_connection(settings_from({"PAYMESH_REDIS_URL": stalled_redis_url}))
    raised = _ends_within(connection.ping, GIVE_UP_WITHIN_S)
    assert isinstance(raised, RedisError), raised


def test_api_rate_limiter__stalled_redis_lets_calls_through_instead_of_hanging(
    stalled_redis_url: str,
) -> None:
    limiter = ApiRateLimiter(
        stalled_redis_url,
        default_limit="1/hour",
        merchant_limits={},
        auth_failures_max=1,
        auth_failure_window_s=3600,
    )

    def twice() -> None:
        # Past the limit of one: only failing open lets the second call through, whether the
        # address is checked alone (a key the admin service resolves) or with the key's call.
        for _ in range(2):
            asyncio.run(limiter.check_failures("10.0.0.1"))
            asyncio.run(limiter.check(address="10.0.0.1", merchant_id="acct_1", key_id="key_1"))

    assert _ends_within(twice, GIVE_UP_WITHIN_S) is None
