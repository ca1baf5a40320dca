"""Every service's migrations go down as well as up: base → head → base → head on a real server.

A downgrade that leaves a table, an index or a column behind fails the second upgrade (the
objects already exist), and one that drops too much fails the downgrade itself.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import column, create_engine, inspect, select, table

from services.common.db import sqlalchemy_url
from services.common.migrations import alembic_config, upgrade
from services.common.settings import SERVICE_NAMES
from services.runtime.embedded import EmbeddedPostgres, start_postgres, stop_postgres


@pytest.fixture(scope="module")
def postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedPostgres]:
    data_dir: Path = tmp_path_factory.mktemp("migrations") / "pg"
    try:
        yield start_postgres(data_dir, password=secrets.token_urlsafe(16))
    finally:
        stop_postgres(data_dir, mode="immediate")


def _tables(url: str) -> dict[str, set[str]]:
    """Each service schema's tables (the version table aside)."""
    engine = create_engine(sqlalchemy_url(url))
    try:
        inspector = inspect(engine)
        return {
            schema: set(inspector.get_table_names(schema=schema)) - {"alembic_version"}
            for schema in (*SERVICE_NAMES, "processor")
            if schema in inspector.get_schema_names()
        }
    finally:
        engine.dispose()


def _revision(url: str, service: str) -> str | None:
    engine = create_engine(sqlalchemy_url(url))
    try:
        with engine.connect() as connection:
            versions = table("alembic_version", column("version_num"), schema=service)
            return connection.execute(select(versions.c.version_num)).scalar_one_or_none()
    finally:
        engine.dispose()


def test_every_service_downgrades_to_base_and_upgrades_again(postgres: EmbeddedPostgres) -> None:
    url = postgres.url()
    upgrade(url)
    at_head = _tables(url)
    assert at_head["payment"] >= {"payments", "refunds", "disputes", "payouts", "payout_accounts"}
    assert at_head["processor"] >= {"charges", "refunds", "disputes", "bank_transfers"}

    for service in reversed(SERVICE_NAMES):
        command.downgrade(alembic_config(service, url), "base")
        assert _revision(url, service) is None, service
    emptied = _tables(url)
    assert all(not tables for tables in emptied.values()), emptied

    upgrade(url)
    assert _tables(url) == at_head
