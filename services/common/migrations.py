"""Alembic migrations, one history per service, each in its own PostgreSQL schema.

Every service keeps its revisions in `services/<name>/migrations/`; they share one `env.py`
(here, in `alembic/`) that pins the version table and the search path to the service's schema.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

from services.common.db import sqlalchemy_url
from services.common.settings import SERVICE_NAMES, ServiceName

SERVICES_DIR = Path(__file__).resolve().parent.parent


def alembic_config(service: ServiceName, database_url: str) -> Config:
    """The Alembic configuration of one service's migrations."""
    config = Config()
    config.set_main_option("script_location", str(Path(__file__).parent / "alembic"))
    config.set_main_option("version_locations", str(SERVICES_DIR / service / "migrations"))
    config.set_main_option("path_separator", "os")
    config.attributes["schema"] = service
    config.attributes["url"] = sqlalchemy_url(database_url)
    return config


def upgrade(database_url: str, services: tuple[ServiceName, ...] = SERVICE_NAMES) -> None:
    """Brings each service's schema to its newest revision."""
    for service in services:
        command.upgrade(alembic_config(service, database_url), "head")
