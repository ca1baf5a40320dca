"""The whole platform on one machine: embedded servers, migrations, demo data, processes.

`paymesh up`, the integration tests and the benchmarks all start paymesh from here, so the
process list and their settings exist once.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.common.db import make_engine, make_sessionmaker, transaction
from services.common.migrations import upgrade
from services.common.ports import free_port, port_is_free
from services.common.settings import PROCESS_NAMES, SERVICE_NAMES, ProcessName, Settings
from services.runtime import embedded
from services.runtime.envoy import envoy_binary, render_local

logger = logging.getLogger(__name__)

# Example apps that run beside the platform (the demo shop), outside the installed packages.
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
DEMO_OPERATOR_EMAIL = "demo@paymesh.local"
DEMO_OPERATOR_PASSWORD = "paymesh-demo"  # noqa: S105 - a published demo credential
DEMO_MERCHANT_USER_EMAIL = "merchant@paymesh.local"
DEMO_MERCHANT_USER_PASSWORD = "paymesh-merchant"  # noqa: S105 - a published demo credential
DEMO_MERCHANT_NAME = "Demo Shop"
# Secrets a fresh data directory gets once, so services have them without any setup.
GENERATED_SECRETS = ("card_fingerprint_key", "secret_encryption_key", "page_token_key")
# The embedded PostgreSQL's superuser password, generated beside them; not a setting of its own:
# processes get it inside PAYMESH_DATABASE_URL.
POSTGRES_PASSWORD_SECRET = "postgres_password"  # noqa: S105 - a name, not a value


@dataclass(frozen=True)
class Environment:
    """What every paymesh process of this platform gets in its environment."""

    variables: dict[str, str]
    started_postgres: bool
    started_redis: bool

    def settings(self) -> Settings:
        """The settings the processes will see."""
        return settings_from(self.variables)

    def stop_started(self, data_dir: Path) -> None:
        """Stops the embedded servers this environment started (not ones already running)."""
        if self.started_postgres:
            embedded.stop_postgres(data_dir / "pg")
        if self.started_redis:
            embedded.stop_redis(data_dir / "redis")


def settings_from(variables: dict[str, str]) -> Settings:
    """Settings built from `variables` on top of this process's environment."""
    merged = {**os.environ, **variables}
    saved = dict(os.environ)
    try:
        os.environ.clear()
        os.environ.update(merged)
        return Settings()
    finally:
        os.environ.clear()
        os.environ.update(saved)


def _secrets_file(data_dir: Path) -> dict[str, str]:
    path = data_dir / "secrets.json"
    stored: dict[str, str] = json.loads(path.read_text()) if path.exists() else {}
    # A data directory made before a secret was added gets the new one; kept ones never change.
    names = (*GENERATED_SECRETS, POSTGRES_PASSWORD_SECRET)
    values = {name: secrets.token_urlsafe(32) for name in names} | stored
    if values == stored:
        return stored
    write_private(path, json.dumps(values))
    return values


def write_private(path: Path, text: str) -> None:
    """Writes `text` to a file only its owner can read, from the moment the file exists.

    Opened with mode 0600 rather than written and then chmod-ed, which would leave the secrets
    readable by every local user for a moment.
    """
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        os.fchmod(handle.fileno(), 0o600)  # a file made earlier may have had looser bits
        handle.write(text)


def prepare(settings: Settings) -> Environment:
    """Starts embedded PostgreSQL and Redis where no URL is set; returns the environment."""
    data_dir = settings.data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    generated = _secrets_file(data_dir)
    variables = {
        f"PAYMESH_{name.upper()}": generated[name]
        for name in GENERATED_SECRETS
        if getattr(settings, name) is None
    }
    variables["PAYMESH_DATA_DIR"] = str(data_dir)
    started_postgres = started_redis = False
    if settings.database_url is None:
        started_postgres = not embedded.postgres_running(data_dir / "pg")
        postgres = embedded.start_postgres(
            data_dir / "pg", password=generated[POSTGRES_PASSWORD_SECRET]
        )
        variables["PAYMESH_DATABASE_URL"] = postgres.url()
    if settings.redis_url is None:
        started_redis = not embedded.redis_running(data_dir / "redis")
        redis = embedded.start_redis(data_dir / "redis")
        variables["PAYMESH_REDIS_URL"] = redis.url()
    return Environment(variables, started_postgres, started_redis)


def stop_embedded(settings: Settings) -> None:
    """Stops the embedded servers of this data directory (no-op for external URLs)."""
    data_dir = settings.data_dir.resolve()
    if settings.database_url is None:
        embedded.stop_postgres(data_dir / "pg")
    if settings.redis_url is None:
        embedded.stop_redis(data_dir / "redis")


@contextmanager
def database(settings: Settings) -> Iterator[Settings]:
    """Settings with a database URL, starting (and afterwards stopping) embedded PostgreSQL."""
    environment = prepare(settings)
    try:
        yield environment.settings()
    finally:
        environment.stop_started(settings.data_dir.resolve())


def migrate(settings: Settings) -> None:
    """Brings every service's schema up to date."""
    upgrade(settings.require_database_url())


def ensure_demo_data(settings: Settings) -> dict[str, str]:
    """Creates the demo operator, merchant and merchant user once; returns their credentials.

    A data directory from before merchant users existed gets its demo merchant user added.
    """
    from services.admin import merchants, operators, users  # noqa: PLC0415 - the CLI side only

    path = settings.data_dir.resolve() / "demo.json"
    demo: dict[str, str] = json.loads(path.read_text()) if path.exists() else {}
    if "merchant_user_email" in demo:
        return demo
    engine = make_engine(settings.require_database_url(), pool_size=1)
    try:
        with transaction(make_sessionmaker(engine)) as session:
            if not demo:
                operators.create_operator(
                    session,
                    email=DEMO_OPERATOR_EMAIL,
                    password=DEMO_OPERATOR_PASSWORD,
                    role="operator",
                )
                merchant = merchants.create_merchant(session, name=DEMO_MERCHANT_NAME)
                secret = merchants.create_api_key(
                    session, merchant_id=merchant.id, mode="test", kind="secret"
                )
                publishable = merchants.create_api_key(
                    session, merchant_id=merchant.id, mode="test", kind="publishable"
                )
                demo = {
                    "operator_email": DEMO_OPERATOR_EMAIL,
                    "operator_password": DEMO_OPERATOR_PASSWORD,
                    "merchant_id": merchant.id,
                    "secret_key": secret.key,
                    "publishable_key": publishable.key,
                }
            users.create_user(
                session,
                merchant_id=demo["merchant_id"],
                email=DEMO_MERCHANT_USER_EMAIL,
                password=DEMO_MERCHANT_USER_PASSWORD,
                role="admin",
            )
            demo["merchant_user_email"] = DEMO_MERCHANT_USER_EMAIL
            demo["merchant_user_password"] = DEMO_MERCHANT_USER_PASSWORD
    finally:
        engine.dispose()
    # A local demo's keys, kept so every `make up` can print them; never for real merchants.
    write_private(path, json.dumps(demo, indent=2))
    return demo


def write_envoy_config(settings: Settings) -> Path:
    """Renders the edge configuration into the data directory."""
    path = settings.data_dir.resolve() / "envoy.yaml"
    path.write_text(render_local(settings))
    return path


def processes(settings: Settings) -> dict[str, list[str]]:
    """Every long-running paymesh process, by name, as a command line."""
    python = sys.executable
    commands: dict[str, list[str]] = {
        name: [python, "-m", f"services.{name}.server"] for name in SERVICE_NAMES
    }
    commands["payment-worker"] = [python, "-m", "services.payment.worker"]
    commands["payment-relay"] = [python, "-m", "services.payment.relay"]
    commands["webhook-worker"] = [python, "-m", "services.webhook.worker"]
    commands["webhook-sweeper"] = [python, "-m", "services.webhook.sweeper"]
    commands["envoy"] = [
        envoy_binary(),
        "-c",
        str(settings.data_dir.resolve() / "envoy.yaml"),
        "--log-level",
        "warn",
        "--base-id",
        str(settings.http_port),
        "--concurrency",
        "2",
    ]
    # The built dashboard and checkout behind the edge, and the demo merchant shop.
    commands["webapps"] = [python, "-m", "services.runtime.webapps"]
    commands["demo-shop"] = [python, str(EXAMPLES / "demo_shop" / "shop.py")]
    commands.update(_copies(settings, commands))
    return commands


# The worker kinds `PAYMESH_WORKER_REPLICAS` multiplies; one relay and one sweeper suffice here.
WORKER_KINDS: tuple[ProcessName, ...] = ("payment-worker", "webhook-worker")


def _copies(settings: Settings, commands: dict[str, list[str]]) -> dict[str, list[str]]:
    """Extra local copies: `payment-2`... on shifted ports, `payment-worker-2`..."""
    extra: dict[str, list[str]] = {}
    for service in SERVICE_NAMES:
        ports = settings.replica_ports(service)[1:]
        for copy, (grpc_port, metrics_port) in enumerate(ports, start=2):
            prefix = f"PAYMESH_{service.upper()}"
            extra[f"{service}-{copy}"] = [
                "env",
                f"{prefix}_GRPC_PORT={grpc_port}",
                f"{prefix}_METRICS_PORT={metrics_port}",
                *commands[service],
            ]
    for kind in WORKER_KINDS:
        variable = f"PAYMESH_{kind.replace('-', '_').upper()}_METRICS_PORT"
        for copy in range(2, settings.worker_replicas + 1):
            port = settings.process_metrics_port(kind) + (copy - 1) * settings.replica_port_step
            extra[f"{kind}-{copy}"] = ["env", f"{variable}={port}", *commands[kind]]
    return extra


def free_port_settings(*, replicas: int = 1, step: int = 0) -> dict[str, str]:
    """Environment variables that put every listener of a platform on its own free port.

    Below the kernel's ephemeral range, as the defaults are (services/common/ports.py). With
    `replicas` copies `step` apart, each service port's shifted copies are free too, and the
    ports the last copy checks stay below the range: a copy process is given its shifted port
    as its own and checks its settings' copies from there, up to 2 * (replicas - 1) steps
    above the first copy's.
    """
    names = ["http_port", "envoy_admin_port", "webapps_port", "demo_shop_port"]
    service_names = [
        f"{service}_{kind}_port" for service in SERVICE_NAMES for kind in ("grpc", "metrics")
    ] + [f"{process.replace('-', '_')}_metrics_port" for process in PROCESS_NAMES]
    chosen: set[int] = set()
    while len(chosen) < len(names):
        chosen.add(free_port())
    ports = dict(zip(names, sorted(chosen), strict=True))
    room = 2 * (replicas - 1) * step
    for name in service_names:
        while True:
            port = free_port(room_above=room)
            copies = {port + copy * step for copy in range(replicas)}
            if copies.isdisjoint(chosen) and all(map(port_is_free, copies)):
                break
        chosen |= copies
        ports[name] = port
    return {f"PAYMESH_{name.upper()}": str(port) for name, port in ports.items()}


def wait_healthy(
    settings: Settings, *, timeout_s: float, check: Callable[[], None] = lambda: None
) -> None:
    """Waits until each service answers gRPC health through the edge; `check` may raise."""
    deadline = time.monotonic() + timeout_s
    pending = list(SERVICE_NAMES)
    with grpc.insecure_channel(f"127.0.0.1:{settings.http_port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while pending:
            check()
            service = pending[0]
            try:
                reply = stub.Check(
                    health_pb2.HealthCheckRequest(),
                    metadata=(("x-paymesh-service", service),),
                    timeout=2,
                )
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    pending.pop(0)
                    continue
            except grpc.RpcError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"{service} not healthy through the edge in {timeout_s}s")
            time.sleep(0.2)


class LocalPlatform:
    """Runs the platform's processes as children, for tests, benchmarks and fault drills."""

    def __init__(self, variables: dict[str, str]) -> None:
        self.given_variables = dict(variables)
        self.variables = dict(variables)
        self.settings = settings_from(self.variables)
        self.log_dir = self.settings.data_dir.resolve() / "logs"
        self.environment: Environment | None = None
        self.children: dict[str, subprocess.Popen[bytes]] = {}

    @property
    def base_url(self) -> str:
        """The edge's URL."""
        return f"http://127.0.0.1:{self.settings.http_port}"

    def start(self, *, timeout_s: float = 90.0) -> None:
        """Starts the platform; one failed start is retried on fresh ports.

        Free ports are picked before the processes bind them, so on a busy machine another
        listener can take one in between (Envoy then exits), and a start racing other servers
        can fail: the second attempt stops what the first started and tries again.
        """
        try:
            self._start_once(timeout_s=timeout_s)
        except (embedded.EmbeddedServerError, RuntimeError, TimeoutError):
            logger.warning("the platform did not start; retrying once on fresh ports")
            self.stop()
            self.children = {}
            self.environment = None
            fresh = free_port_settings(
                replicas=self.settings.replicas, step=self.settings.replica_port_step
            )
            self.variables = {
                **self.given_variables,
                **{k: v for k, v in fresh.items() if k in self.given_variables},
            }
            self.settings = settings_from(self.variables)
            self._start_once(timeout_s=timeout_s)

    def _start_once(self, *, timeout_s: float) -> None:
        self.environment = prepare(self.settings)
        self.variables.update(self.environment.variables)
        self.settings = settings_from(self.variables)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        migrate(self.settings)
        write_envoy_config(self.settings)
        for name in processes(self.settings):
            self.start_process(name)
        self.wait_healthy(timeout_s=timeout_s)

    def start_process(self, name: str) -> None:
        """Starts (or restarts) one process by name, logging to `logs/<name>.log`."""
        command = processes(self.settings)[name]
        log = (self.log_dir / f"{name}.log").open("ab")
        self.children[name] = subprocess.Popen(
            command,
            env={**os.environ, **self.variables},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        """Sends `sig` to one process and waits for it to end."""
        child = self.children[name]
        if child.poll() is None:
            child.send_signal(sig)
            child.wait(timeout=30)

    def wait_healthy(self, *, timeout_s: float) -> None:
        """Waits until each service answers gRPC health through the edge."""

        def check_children() -> None:
            for name, child in self.children.items():
                if child.poll() is not None:
                    raise RuntimeError(f"{name} exited: see {self.log_dir / name}.log")

        wait_healthy(self.settings, timeout_s=timeout_s, check=check_children)

    def stop(self) -> None:
        """Stops every process it started, then the embedded servers it started."""
        for child in self.children.values():
            if child.poll() is None:
                child.terminate()
        for child in self.children.values():
            try:
                child.wait(timeout=15)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
        if self.environment is not None:
            self.environment.stop_started(self.settings.data_dir.resolve())
