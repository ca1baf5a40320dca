"""Fixtures that run the real platform: embedded PostgreSQL and Redis, Envoy, every service."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import psycopg
import pytest

from services.admin import merchants
from services.common.db import make_engine, make_sessionmaker, transaction
from services.runtime.platform import LocalPlatform, free_port_settings


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


@pytest.fixture(scope="session")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalPlatform]:
    """The whole platform, started once per test session on free ports."""
    data_dir: Path = tmp_path_factory.mktemp("paymesh")
    variables = {
        **free_port_settings(),
        "PAYMESH_DATA_DIR": str(data_dir),
        "PAYMESH_AUTH_CACHE_TTL_S": "1",
        "PAYMESH_LOG_LEVEL": "INFO",
        "PAYMESH_WEBHOOK_ALLOW_PRIVATE_NETWORKS": "true",
    }
    if os.environ.get("PAYMESH_DATABASE_URL"):
        variables["PAYMESH_DATABASE_URL"] = _fresh_database(os.environ["PAYMESH_DATABASE_URL"])
    running = LocalPlatform(variables)
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
