"""Fixtures that run the real platform: embedded PostgreSQL and Redis, Envoy, every service.

Shared by tests/integration and tests/browser, so one session starts one platform; and a lone
embedded Redis for the tests of the queue and the workers.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from psycopg.pq import TransactionStatus
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from services.admin import merchants
from services.common.db import make_engine, make_sessionmaker, transaction
from services.runtime.embedded import start_redis, stop_redis
from services.runtime.platform import LocalPlatform, free_port_settings


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """An embedded Redis of the test module's own (no platform)."""
    data_dir = tmp_path_factory.mktemp("redis")
    server = start_redis(data_dir)
    try:
        yield server.url()
    finally:
        stop_redis(data_dir)


@dataclass(frozen=True)
class MerchantKeys:
    """A merchant made for one test, with test-mode keys."""

    id: str
    secret_key: str
    publishable_key: str


def _fresh_database(url: str) -> str:
    """A new empty database on the server at `url` (tests never share one)."""
    name = f"paymesh_test_{secrets.token_hex(4)}"
    with psycopg.connect(url.replace("+psycopg", ""), autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    base, _, _ = url.rpartition("/")
    return f"{base}/{name}"


def platform_variables(data_dir: Path) -> dict[str, str]:
    """The test platforms' settings: free ports, a data directory, quick retries and sweeps."""
    ports = free_port_settings()
    variables = {
        **ports,
        "PAYMESH_DATA_DIR": str(data_dir),
        # Checkout links in payments point at this platform's edge, as a browser reaches it.
        "PAYMESH_PUBLIC_BASE_URL": f"http://127.0.0.1:{ports['PAYMESH_HTTP_PORT']}",
        "PAYMESH_AUTH_CACHE_TTL_S": "1",
        # Every test calls from 127.0.0.1, and many send bad keys on purpose; the throttle of
        # failed authentications is tested on its own platform (tests/security).
        "PAYMESH_API_AUTH_FAILURES_MAX": "100000",
        "PAYMESH_LOG_LEVEL": "INFO",
        "PAYMESH_WEBHOOK_ALLOW_PRIVATE_NETWORKS": "true",
        # Webhooks: a short retry schedule and timeout so retry and dead-letter tests are quick.
        "PAYMESH_WEBHOOK_RETRY_SCHEDULE": "1,1,1",
        "PAYMESH_WEBHOOK_TIMEOUT_S": "3",
        "PAYMESH_WEBHOOK_LEASE_MARGIN_S": "2",
        "PAYMESH_WEBHOOK_SWEEP_INTERVAL_S": "0.5",
        # Payments: a quick sweeper and short outbox backoff, so re-drives and expiries show
        # up within a test's patience.
        "PAYMESH_PAYMENT_SWEEP_INTERVAL_S": "0.5",
        "PAYMESH_PAYMENT_STUCK_AFTER_S": "5",
        "PAYMESH_PAYMENT_OUTBOX_RETRY_DELAY_MAX_S": "2",
        # Payouts: automatic payouts every second for merchants on that schedule.
        "PAYMESH_PAYOUT_AUTOMATIC_INTERVAL_TEST_S": "1",
    }
    if os.environ.get("PAYMESH_DATABASE_URL"):
        variables["PAYMESH_DATABASE_URL"] = _fresh_database(os.environ["PAYMESH_DATABASE_URL"])
    return variables


@pytest.fixture(scope="session")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalPlatform]:
    """The whole platform, started once per test session on free ports."""
    running = LocalPlatform(platform_variables(tmp_path_factory.mktemp("paymesh")))
    try:
        running.start()
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="session")
def sessions(platform: LocalPlatform):  # type: ignore[no-untyped-def]
    """Direct database sessions, for arranging tests and checking what was stored."""
    engine = make_engine(platform.settings.require_database_url(), pool_size=2)
    yield make_sessionmaker(engine)
    engine.dispose()


@pytest.fixture
def merchant(sessions) -> MerchantKeys:  # type: ignore[no-untyped-def]
    """A fresh merchant with test-mode secret and publishable keys."""
    with transaction(sessions) as session:
        created = merchants.create_merchant(session, name="Test Merchant")
        secret = merchants.create_api_key(
            session, merchant_id=created.id, mode="test", kind="secret"
        )
        publishable = merchants.create_api_key(
            session, merchant_id=created.id, mode="test", kind="publishable"
        )
        return MerchantKeys(created.id, secret.key, publishable.key)


@pytest.fixture
def other_merchant(sessions) -> MerchantKeys:  # type: ignore[no-untyped-def]
    """A second merchant, for tenant-isolation checks."""
    with transaction(sessions) as session:
        created = merchants.create_merchant(session, name="Other Merchant")
        secret = merchants.create_api_key(
            session, merchant_id=created.id, mode="test", kind="secret"
        )
        publishable = merchants.create_api_key(
            session, merchant_id=created.id, mode="test", kind="publishable"
        )
        return MerchantKeys(created.id, secret.key, publishable.key)


@pytest.fixture
def api(platform: LocalPlatform) -> Iterator[httpx.Client]:
    """An HTTP client for the edge."""
    with httpx.Client(base_url=platform.base_url, timeout=30) as client:
        yield client


@dataclass(frozen=True)
class OperatorLogin:
    """An operator made for one test, logged in through the edge."""

    id: str
    email: str
    password: str
    role: str
    token: str

    @property
    def headers(self) -> dict[str, str]:
        """The headers of an admin call made by this operator."""
        return {"Authorization": f"Bearer {self.token}"}


def _operator_login(sessions, api: httpx.Client, role: str) -> OperatorLogin:  # type: ignore[no-untyped-def]
    from services.admin import operators

    email = f"{role}-{secrets.token_hex(6)}@paymesh.test"
    password = secrets.token_urlsafe(12)
    with transaction(sessions) as session:
        operator_id = operators.create_operator(
            session, email=email, password=password, role=role
        ).id
    response = api.post("/admin/login", json={"email": email, "password": password})
    assert response.status_code == 200, response.text
    return OperatorLogin(operator_id, email, password, role, response.json()["session_token"])


@dataclass(frozen=True)
class UserLogin:
    """A merchant user made for one test, signed in through the edge."""

    id: str
    merchant_id: str
    email: str
    password: str
    role: str
    token: str

    def headers(self, mode: str = "test") -> dict[str, str]:
        """The headers of a call made by this user in `mode` (account or merchant API)."""
        return {"Authorization": f"Bearer {self.token}", "Paymesh-Mode": mode}


def user_login(sessions, api: httpx.Client, merchant_id: str, role: str) -> UserLogin:  # type: ignore[no-untyped-def]
    """A new user of the merchant with `role`, signed in through the edge."""
    from services.admin import users

    email = f"{role}-{secrets.token_hex(6)}@merchant.test"
    password = secrets.token_urlsafe(12)
    with transaction(sessions) as session:
        user_id = users.create_user(
            session, merchant_id=merchant_id, email=email, password=password, role=role
        ).id
    response = api.post("/v1/account/sessions", json={"email": email, "password": password})
    assert response.status_code == 200, response.text
    token = response.json()["session_token"]
    return UserLogin(user_id, merchant_id, email, password, role, token)


@pytest.fixture
def operator_login(sessions, api: httpx.Client) -> OperatorLogin:  # type: ignore[no-untyped-def]
    """A fresh operator with the `operator` role and a session."""
    return _operator_login(sessions, api, "operator")


@pytest.fixture
def viewer_login(sessions, api: httpx.Client) -> OperatorLogin:  # type: ignore[no-untyped-def]
    """A fresh operator with the read-only `viewer` role and a session."""
    return _operator_login(sessions, api, "viewer")


@dataclass
class StatementLog:
    """What an event-loop pool's connections sent: (first word, inside a transaction block).

    `LoopPool(..., configure=log.configure)` makes every cursor of its connections record the
    statements it executes (BEGIN and COMMIT of `LoopPool.transaction` are not cursors'; a
    statement inside one is recorded as in a transaction).
    """

    statements: list[tuple[str, bool]] = field(default_factory=list)

    async def configure(self, connection: psycopg.AsyncConnection[Any]) -> None:
        log = self

        class Recording(psycopg.AsyncCursor):  # type: ignore[type-arg]
            def _record(self, query: Any) -> None:
                in_block = self.connection.info.transaction_status != TransactionStatus.IDLE
                log.statements.append((str(query).split(maxsplit=1)[0], in_block))

            async def execute(self, query: Any, *args: Any, **kwargs: Any) -> Any:
                self._record(query)
                return await super().execute(query, *args, **kwargs)

            async def executemany(self, query: Any, *args: Any, **kwargs: Any) -> Any:
                self._record(query)
                return await super().executemany(query, *args, **kwargs)

        connection.cursor_factory = Recording

    def verbs(self) -> list[str]:
        return [verb for verb, _ in self.statements]


# Crash drills: a platform of the test module's own, whose processes the tests kill.

DRILL_VARIABLES = {
    "PAYMESH_AUTH_CACHE_TTL_S": "1",
    # Each processor and bank call takes this long, so a test can catch work mid-way.
    "PAYMESH_PROCESSOR_LATENCY_MS": "1500",
    "PAYMESH_PAYMENT_STUCK_AFTER_S": "4",
    "PAYMESH_PAYMENT_SWEEP_INTERVAL_S": "0.5",
    "PAYMESH_PAYMENT_OUTBOX_RETRY_DELAY_MAX_S": "1",
}


@pytest.fixture(scope="module")
def drill_platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalPlatform]:
    """A platform per test module, with a slow processor and bank and a quick sweeper."""
    running = LocalPlatform(
        {
            **free_port_settings(),
            "PAYMESH_DATA_DIR": str(tmp_path_factory.mktemp("paymesh-drill")),
            **DRILL_VARIABLES,
        }
    )
    try:
        running.start()
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="module")
def drill_engine(drill_platform: LocalPlatform) -> Iterator[Engine]:
    """The drill platform's database: reads, and transactions that hold a step open."""
    engine = make_engine(drill_platform.settings.require_database_url(), pool_size=4)
    yield engine
    engine.dispose()


@pytest.fixture(scope="module")
def drill_sessions(drill_engine: Engine) -> sessionmaker[Session]:
    """Direct database sessions on the drill platform."""
    return make_sessionmaker(drill_engine)


@pytest.fixture
def drill_api(drill_platform: LocalPlatform) -> Iterator[httpx.Client]:
    """An HTTP client for the drill platform's edge."""
    with httpx.Client(base_url=drill_platform.base_url, timeout=30) as client:
        yield client


@pytest.fixture(scope="module")
def catalog(drill_platform: LocalPlatform, drill_sessions: sessionmaker[Session]) -> set[str]:
    """The event types of the drill platform's catalog (GET /v1/event_types)."""
    with transaction(drill_sessions) as session:
        made = merchants.create_merchant(session, name="Catalog Reader")
        reader = merchants.create_api_key(
            session, merchant_id=made.id, mode="test", kind="secret"
        ).key
    with httpx.Client(base_url=drill_platform.base_url, timeout=30) as client:
        listed = client.get("/v1/event_types", headers={"X-API-Key": reader})
    assert listed.status_code == 200, listed.text
    return {item["name"] for item in listed.json()["event_types"]}
