"""The hardened platform: production-like webhook policy and tiny rate limits, for these tests.

It is separate from the shared platform because its limits would throttle everyone else's tests
and its webhook policy refuses the private addresses local receivers listen on.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy.orm import Session, sessionmaker

from services.common.db import make_engine, make_sessionmaker
from services.runtime.platform import LocalPlatform, free_port_settings

KEY_CALLS_MAX = 4
KEY_WINDOW_S = 60
AUTH_FAILURES_MAX = 3
AUTH_FAILURE_WINDOW_S = 5


@pytest.fixture(scope="session")
def limited_platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalPlatform]:
    """A platform whose keys allow KEY_CALLS_MAX calls a minute, refusing private webhooks."""
    data_dir: Path = tmp_path_factory.mktemp("paymesh-hardened")
    running = LocalPlatform(
        {
            **free_port_settings(),
            "PAYMESH_DATA_DIR": str(data_dir),
            "PAYMESH_AUTH_CACHE_TTL_S": "1",
            "PAYMESH_API_RATE_LIMIT": f"{KEY_CALLS_MAX} per {KEY_WINDOW_S} second",
            "PAYMESH_API_AUTH_FAILURES_MAX": str(AUTH_FAILURES_MAX),
            "PAYMESH_API_AUTH_FAILURE_WINDOW_S": str(AUTH_FAILURE_WINDOW_S),
            "PAYMESH_WEBHOOK_ALLOW_PRIVATE_NETWORKS": "false",
            "PAYMESH_WEBHOOK_RETRY_SCHEDULE": "1",
            "PAYMESH_WEBHOOK_TIMEOUT_S": "3",
        }
    )
    try:
        running.start()
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="session")
def limited_sessions(limited_platform: LocalPlatform) -> Iterator[sessionmaker[Session]]:
    """Direct database sessions on the hardened platform."""
    engine = make_engine(limited_platform.settings.require_database_url(), pool_size=2)
    yield make_sessionmaker(engine)
    engine.dispose()


@pytest.fixture
def client(limited_platform: LocalPlatform) -> Iterator[httpx.Client]:
    """An HTTP client for the hardened platform's edge."""
    with httpx.Client(base_url=limited_platform.base_url, timeout=30) as made:
        yield made
