"""Settings from `PAYMESH_*` environment variables, built once at start and passed down."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.common.errors import ConfigurationError
from services.common.ports import check_outside_ephemeral

ServiceName = Literal["payment", "ledger", "webhook", "admin"]
SERVICE_NAMES: tuple[ServiceName, ...] = ("payment", "ledger", "webhook", "admin")
# The processes that serve no RPC but metrics of their own.
ProcessName = Literal["payment-worker", "payment-relay", "webhook-worker", "webhook-sweeper"]
PROCESS_NAMES: tuple[ProcessName, ...] = (
    "payment-worker",
    "payment-relay",
    "webhook-worker",
    "webhook-sweeper",
)


def _is_ipv4(host: str) -> bool:
    try:
        ipaddress.IPv4Address(host)
    except ValueError:
        return False
    return True


class Settings(BaseSettings):
    """Every paymesh setting; secrets print masked."""

    model_config = SettingsConfigDict(env_prefix="PAYMESH_", frozen=True, extra="ignore")

    # Where embedded servers keep their data when no URLs are given.
    data_dir: Path = Path(".paymesh")
    # Secret: the embedded server's URL carries its password.
    database_url: SecretStr | None = None
    redis_url: str | None = None

    # Every port paymesh listens on lies below the kernel's ephemeral range (checked at start,
    # services/common/ports.py), so that no outgoing connection can take it first.
    # The edge.
    http_port: int = 8080
    envoy_admin_port: int = 9901
    # Where browsers reach the edge, for links such as `checkout_url`; unset, the edge's own
    # port on localhost (public_url()).
    public_base_url: str | None = None
    # The built web apps (dashboard, checkout) are served on this port behind the edge, and the
    # demo merchant shop that `make up` runs listens on its own.
    webapps_port: int = 8081
    demo_shop_port: int = 8090

    # Each service listens on its own gRPC port and serves metrics on another.
    services_host: str = "127.0.0.1"
    # The address services listen on (gRPC and metrics); 0.0.0.0 in containers, where the
    # kubelet's probes and other pods reach them through the pod's own IP.
    bind_host: str = "127.0.0.1"
    payment_grpc_port: int = 10051
    ledger_grpc_port: int = 10052
    webhook_grpc_port: int = 10053
    admin_grpc_port: int = 10054
    payment_metrics_port: int = 9101
    ledger_metrics_port: int = 9102
    webhook_metrics_port: int = 9103
    admin_metrics_port: int = 9104
    # Prometheus metrics of the processes that serve no RPC; copy k of a worker kind on its port
    # + (k - 1) * replica_port_step, as services' copies.
    payment_worker_metrics_port: int = 9111
    payment_relay_metrics_port: int = 9112
    webhook_worker_metrics_port: int = 9113
    webhook_sweeper_metrics_port: int = 9114
    # Local scale-out (`PAYMESH_REPLICAS=2 make up`, LocalPlatform): copies of each gRPC service
    # and of each worker kind. Copy k (from 1) of a service listens on its own ports shifted by
    # (k - 1) * replica_port_step; Envoy and the other services balance over every copy.
    replicas: int = Field(default=1, ge=1, le=8)
    worker_replicas: int = Field(default=1, ge=1, le=8)
    replica_port_step: int = 1000
    # Jobs one worker process runs at once, each on its own thread: jobs mostly wait (the
    # processor, the ledger, fsynced commits, merchants' endpoints), so threads overlap them.
    worker_concurrency: int = Field(default=8, ge=1, le=64)
    # Overrides for clients when services live elsewhere, e.g. "ledger:10052".
    payment_target: str | None = None
    ledger_target: str | None = None
    webhook_target: str | None = None
    admin_target: str | None = None

    log_level: str = "INFO"
    log_json: bool = True
    # OpenTelemetry: where every process (and the edge) sends its spans over OTLP/gRPC, as
    # "http://host:4317" or "host:4317". Unset, nothing is traced (services/common/tracing.py).
    otel_endpoint: str | None = None
    grace_period_s: float = 5.0
    db_pool_size: int = 10
    grpc_timeout_s: float = 10.0

    # API keys resolved by the admin service are cached this long in every other service;
    # it bounds how long a revoked key keeps working.
    auth_cache_ttl_s: float = 5.0
    # Per-API-key rate limit in `limits` notation ("1000/second", "50 per 10 seconds"), counted
    # per key in Redis; empty turns it off. A merchant may get its own limit: a JSON object of
    # merchant id -> limit (PAYMESH_API_RATE_LIMIT_MERCHANTS='{"mer_x": "10/second"}').
    api_rate_limit: str = "1000/second"
    api_rate_limit_merchants: dict[str, str] = Field(default_factory=dict)
    # Failed API-key authentications allowed per client address within the window before 429.
    api_auth_failures_max: int = 100
    api_auth_failure_window_s: int = 60

    # Keys for hashing card numbers into fingerprints, and for encrypting webhook secrets and
    # the stored responses of idempotent writes that show a secret (webhook and admin).
    card_fingerprint_key: SecretStr | None = None
    secret_encryption_key: SecretStr | None = None
    # Key that seals page tokens, so a client can neither read nor forge a list position.
    page_token_key: SecretStr | None = None

    # Payments: the processor simulator, the outbox relay and its sweeper.
    processor_latency_ms: int = 20
    payment_relay_poll_interval_ms: int = 200
    payment_relay_batch_size: int = 100
    payment_outbox_retry_delay_max_s: float = 30.0
    payment_sweep_interval_s: float = 5.0
    # Payouts: how long captured funds stay pending before they become available, per mode
    # (a merchant's payout account may set its own), and how often automatic payouts run.
    payout_settlement_delay_live_s: float = 2 * 24 * 3600.0
    payout_settlement_delay_test_s: float = 3.0
    payout_automatic_interval_live_s: float = 24 * 3600.0
    payout_automatic_interval_test_s: float = 10.0
    # A `processing` payment (or pending refund) untouched this long is re-driven.
    payment_stuck_after_s: float = 60.0
    # Manual-capture payments not captured within this window are canceled.
    payment_capture_window_s: float = 7 * 24 * 3600.0
    # Payments waiting for their customer's 3-D Secure authentication this long are canceled.
    payment_authentication_window_s: float = 3600.0
    # How long a merchant has to answer a dispute (evidence_details.due_by) before it is lost.
    payment_dispute_response_window_s: float = 7 * 24 * 3600.0
    # Idempotency keys are kept at least this long (the API promises 24 hours).
    idempotency_key_ttl_s: float = 24 * 3600.0
    # A claimed key whose request died is released after this long.
    idempotency_lock_timeout_s: float = 60.0

    # Webhooks: delivery HTTP limits, retries, SSRF policy, retention (services/webhook).
    webhook_timeout_s: float = 15.0
    # Comma-separated delays in seconds between attempts; its length + 1 attempts in all.
    webhook_retry_schedule: str = "5,300,1800,7200,18000,36000,36000"
    # Each delay is scaled by a random factor in [1 - ratio, 1 + ratio].
    webhook_retry_jitter_ratio: float = 0.1
    webhook_retry_after_max_s: float = 3600.0
    webhook_allow_private_networks: bool = False
    webhook_secret_overlap_s: float = 24 * 3600.0
    webhook_disable_after_failing_s: float = 5 * 24 * 3600.0
    webhook_event_bytes_max: int = 256 * 1024
    webhook_event_retention_days: float = 30.0
    webhook_sweep_interval_s: float = 1.0
    # A claimed attempt whose worker vanished is retried after timeout + this margin.
    webhook_lease_margin_s: float = 10.0

    # Admin: operator sessions, stream tokens, login throttling, the live overview stream.
    admin_session_ttl_s: float = 12 * 3600.0
    # A stream token only opens the overview stream; the stream then lives as its session does.
    admin_stream_token_ttl_s: float = 60.0
    # Failed logins allowed per email and client IP within the window before 429.
    admin_login_failures_max: int = 5
    admin_login_failure_window_s: int = 900
    # How often the overview stream re-reads the figures, and re-sends them even unchanged.
    admin_watch_poll_interval_s: float = 0.5
    admin_watch_keepalive_s: float = 30.0

    # Merchant users (the merchant dashboard): sessions, invitations, self sign-up. Failed
    # sign-ins are throttled as operators' logins are.
    merchant_session_ttl_s: float = 12 * 3600.0
    merchant_invite_ttl_s: float = 7 * 24 * 3600.0
    # Whether anyone may create a merchant (test mode only until an operator enables live).
    merchant_signup: bool = False

    # Ledger: the platform's accounts (fees, receivable) are touched by every payment; their
    # stored balance is spread over this many rows so postings do not queue on one row lock
    # (measured in bench/README.md). Applies to accounts created after a change.
    ledger_hot_account_shards: int = 16
    # Reconciliation also reads movements and processor records this far past the range's
    # edges, to match items that straddle them (the processor acts, then the ledger posts,
    # then the payment settles).
    ledger_reconcile_grace_s: float = 300.0

    @model_validator(mode="after")
    def _listen_ports_outside_ephemeral_range(self) -> Settings:
        listen = {
            "PAYMESH_HTTP_PORT": self.http_port,
            "PAYMESH_ENVOY_ADMIN_PORT": self.envoy_admin_port,
            "PAYMESH_WEBAPPS_PORT": self.webapps_port,
            "PAYMESH_DEMO_SHOP_PORT": self.demo_shop_port,
        }
        for service in SERVICE_NAMES:
            for copy, (grpc, metrics) in enumerate(self.replica_ports(service), start=1):
                suffix = "" if copy == 1 else f" (copy {copy})"
                listen[f"PAYMESH_{service.upper()}_GRPC_PORT{suffix}"] = grpc
                listen[f"PAYMESH_{service.upper()}_METRICS_PORT{suffix}"] = metrics
        for process in PROCESS_NAMES:
            name = f"PAYMESH_{process.replace('-', '_').upper()}_METRICS_PORT"
            for copy in range(self.worker_replicas):
                suffix = "" if copy == 0 else f" (copy {copy + 1})"
                shift = copy * self.replica_port_step
                listen[f"{name}{suffix}"] = self.process_metrics_port(process) + shift
        check_outside_ephemeral(listen)
        return self

    def public_url(self) -> str:
        """The edge's URL as browsers reach it: PAYMESH_PUBLIC_BASE_URL, else localhost."""
        return (self.public_base_url or f"http://localhost:{self.http_port}").rstrip("/")

    def grpc_port(self, service: ServiceName) -> int:
        """The gRPC port a service listens on."""
        port: int = getattr(self, f"{service}_grpc_port")
        return port

    def metrics_port(self, service: ServiceName) -> int:
        """The port a service serves Prometheus metrics on."""
        port: int = getattr(self, f"{service}_metrics_port")
        return port

    def process_metrics_port(self, process: str) -> int:
        """The port a worker, relay or sweeper process serves Prometheus metrics on (0: none,
        as for a process not in PROCESS_NAMES, such as the benchmarks' no-op worker)."""
        port: int = getattr(self, f"{process.replace('-', '_')}_metrics_port", 0)
        return port

    def replica_ports(self, service: ServiceName) -> list[tuple[int, int]]:
        """(gRPC, metrics) ports of each local copy of a service; the first is its own."""
        shifts = [copy * self.replica_port_step for copy in range(self.replicas)]
        return [
            (self.grpc_port(service) + shift, self.metrics_port(service) + shift)
            for shift in shifts
        ]

    def target(self, service: ServiceName) -> str:
        """The address other processes use to reach a service."""
        override: str | None = getattr(self, f"{service}_target")
        if override:
            return override
        if self.replicas == 1 or not _is_ipv4(self.services_host):
            return f"{self.services_host}:{self.grpc_port(service)}"
        # Every local copy: gRPC's ipv4 resolver lists them, round_robin spreads the calls.
        ports = [grpc for grpc, _ in self.replica_ports(service)]
        return "ipv4:" + ",".join(f"{self.services_host}:{port}" for port in ports)

    def require_database_url(self) -> str:
        """The database URL, or a clear error when it is missing."""
        if self.database_url is None or not self.database_url.get_secret_value():
            raise ConfigurationError("PAYMESH_DATABASE_URL is not set")
        return self.database_url.get_secret_value()

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
