"""Settings from `PAYMESH_*` environment variables, built once at start and passed down."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.common.errors import ConfigurationError

ServiceName = Literal["payment", "ledger", "webhook", "admin"]
SERVICE_NAMES: tuple[ServiceName, ...] = ("payment", "ledger", "webhook", "admin")


class Settings(BaseSettings):
    """Every paymesh setting; secrets print masked."""

    model_config = SettingsConfigDict(env_prefix="PAYMESH_", frozen=True, extra="ignore")

    # Where embedded servers keep their data when no URLs are given.
    data_dir: Path = Path(".paymesh")
    database_url: str | None = None
    redis_url: str | None = None

    # The edge.
    http_port: int = 8080
    envoy_admin_port: int = 9901
    public_base_url: str = "http://localhost:8080"

    # Each service listens on its own gRPC port and serves metrics on another.
    services_host: str = "127.0.0.1"
    payment_grpc_port: int = 50051
    ledger_grpc_port: int = 50052
    webhook_grpc_port: int = 50053
    admin_grpc_port: int = 50054
    payment_metrics_port: int = 9101
    ledger_metrics_port: int = 9102
    webhook_metrics_port: int = 9103
    admin_metrics_port: int = 9104
    # Overrides for clients when services live elsewhere, e.g. "ledger:50052".
    payment_target: str | None = None
    ledger_target: str | None = None
    webhook_target: str | None = None
    admin_target: str | None = None

    log_level: str = "INFO"
    log_json: bool = True
    grace_period_s: float = 5.0
    db_pool_size: int = 10
    grpc_timeout_s: float = 10.0

    # API keys resolved by the admin service are cached this long in every other service;
    # it bounds how long a revoked key keeps working.
    auth_cache_ttl_s: float = 5.0

    # Keys for hashing card numbers into fingerprints and encrypting webhook secrets.
    card_fingerprint_key: SecretStr | None = None
    secret_encryption_key: SecretStr | None = None

    def grpc_port(self, service: ServiceName) -> int:
        """The gRPC port a service listens on."""
        port: int = getattr(self, f"{service}_grpc_port")
        return port

    def metrics_port(self, service: ServiceName) -> int:
        """The port a service serves Prometheus metrics on."""
        port: int = getattr(self, f"{service}_metrics_port")
        return port

    def target(self, service: ServiceName) -> str:
        """The address other processes use to reach a service."""
        override: str | None = getattr(self, f"{service}_target")
        return override or f"{self.services_host}:{self.grpc_port(service)}"

    def require_database_url(self) -> str:
        """The database URL, or a clear error when it is missing."""
        if not self.database_url:
            raise ConfigurationError("PAYMESH_DATABASE_URL is not set")
        return self.database_url

    def require_redis_url(self) -> str:
        """The Redis URL, or a clear error when it is missing."""
        if not self.redis_url:
            raise ConfigurationError("PAYMESH_REDIS_URL is not set")
        return self.redis_url

    def require_secret(self, name: str) -> str:
        """A secret setting's value, or a clear error when it is missing."""
        value: SecretStr | None = getattr(self, name)
        if value is None or not value.get_secret_value():
            raise ConfigurationError(f"PAYMESH_{name.upper()} is not set")
        return value.get_secret_value()
