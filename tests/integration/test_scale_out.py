"""Scale-out on one machine: two copies of every service behind one Envoy, one killed at a time.

The platform runs as `PAYMESH_REPLICAS=2 PAYMESH_WORKER_REPLICAS=2 make up` does. While clients
keep reading (REST GETs of each merchant-facing service, gRPC health of each service through the
edge), one copy of each service is SIGKILLed in turn, Envoy marks it unhealthy, the copy is
started again and Envoy sends it calls again. No client call may fail: a call that reached the
dead copy is retried by Envoy on the other one (safe methods only; a create is retried by its
client with the same Idempotency-Key). Killing the first copy also cuts the internal calls of
the other services (API-key checks go to admin directly), so those must fail over too.
"""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.admin import merchants
from services.common.db import make_engine, make_sessionmaker, transaction
from services.common.settings import SERVICE_NAMES, ServiceName
from services.runtime.platform import LocalPlatform, free_port_settings
from tests.integration.conftest import _fresh_database

pytestmark = pytest.mark.integration

REPLICAS = 2
PORT_STEP = 1000
CLIENTS = 3
# Calls that must complete after each kill, and after each restart, before the drill moves on.
CALLS_PER_PHASE = 24
PHASE_TIMEOUT_S = 60.0


def _variables(data_dir: Path) -> dict[str, str]:
    """Free ports for the first copies whose shifted ports (second copies) are free too."""
    ports = free_port_settings(replicas=REPLICAS, step=PORT_STEP)
    variables = {
        **ports,
        "PAYMESH_DATA_DIR": str(data_dir),
        "PAYMESH_REPLICAS": str(REPLICAS),
        "PAYMESH_WORKER_REPLICAS": str(REPLICAS),
        "PAYMESH_REPLICA_PORT_STEP": str(PORT_STEP),
        # API keys are re-checked with the admin service every second, so its failover is hit.
        "PAYMESH_AUTH_CACHE_TTL_S": "1",
        "PAYMESH_LOG_LEVEL": "WARNING",
    }
    if os.environ.get("PAYMESH_DATABASE_URL"):
        variables["PAYMESH_DATABASE_URL"] = _fresh_database(os.environ["PAYMESH_DATABASE_URL"])
    return variables


@pytest.fixture(scope="module")
def scaled() -> Iterator[LocalPlatform]:
    """A platform of its own (the drill kills processes), two copies of everything."""
    # Not under pytest's own temporary folder: a pytest session starting meanwhile makes that
    # folder private again, and the embedded PostgreSQL (another user) could no longer stop.
    data_dir = Path(tempfile.mkdtemp(prefix="paymesh-scaled-"))
    platform = LocalPlatform(_variables(data_dir))
    try:
        platform.start()
        for service in SERVICE_NAMES:
            for grpc_port, _ in platform.settings.replica_ports(service):
                _wait_serving(grpc_port)
        _wait_envoy_sees_all_healthy(platform)
        yield platform
    finally:
        platform.stop()
        shutil.rmtree(data_dir, ignore_errors=True)


def _wait_envoy_sees_all_healthy(platform: LocalPlatform, timeout_s: float = 60.0) -> None:
    """Waits until Envoy's active health checks mark every copy healthy (round robin needs it)."""
    wanted = {
        (service, grpc_port)
        for service in SERVICE_NAMES
        for grpc_port, _ in platform.settings.replica_ports(service)
    }
    deadline = time.monotonic() + timeout_s
    while True:
        hosts = _envoy_hosts(platform)
        if all(hosts.get(key) is not None and hosts[key].healthy for key in wanted):
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"Envoy still sees unhealthy copies: {hosts}")
        time.sleep(0.2)


def _wait_serving(port: int, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while True:
            try:
                reply = stub.Check(health_pb2.HealthCheckRequest(), timeout=2)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing serving on {port}")
            time.sleep(0.2)


@dataclass(frozen=True)
class HostView:
    """Envoy's view of one copy of a service."""

    requests: int
    healthy: bool


def _envoy_hosts(platform: LocalPlatform) -> dict[tuple[str, int], HostView]:
    """Envoy's view of each (cluster, port): calls sent there and whether it is healthy."""
    reply = httpx.get(
        f"http://127.0.0.1:{platform.settings.envoy_admin_port}/clusters",
        params={"format": "json"},
        timeout=5,
    )
    reply.raise_for_status()
    hosts: dict[tuple[str, int], HostView] = {}
    for cluster in reply.json()["cluster_statuses"]:
        for host in cluster.get("host_statuses", []):
            port = host["address"]["socket_address"]["port_value"]
            stats = {stat["name"]: int(stat.get("value", 0)) for stat in host["stats"]}
            health = host["health_status"]
            hosts[(cluster["name"], port)] = HostView(
                requests=stats.get("rq_total", 0),
                healthy=not health.get("failed_active_health_check", False)
                and health.get("eds_health_status") == "HEALTHY",
            )
    return hosts


@dataclass
class Traffic:
    """Client calls running in threads until stopped; every outcome is kept."""

    calls: list[Callable[[httpx.Client, grpc.Channel], str | None]]
    base_url: str
    grpc_target: str
    stop: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)
    completed: int = 0
    failures: list[str] = field(default_factory=list)
    threads: list[threading.Thread] = field(default_factory=list)

    def run(self) -> None:
        """Calls every call in turn until stopped; a failure is recorded, never raised."""
        with (
            httpx.Client(base_url=self.base_url, timeout=30) as client,
            grpc.insecure_channel(self.grpc_target) as channel,
        ):
            while not self.stop.is_set():
                for call in self.calls:
                    try:
                        failure = call(client, channel)
                    except (httpx.HTTPError, grpc.RpcError) as error:
                        failure = f"{call.__name__}: {error!r}"
                    with self.lock:
                        self.completed += 1
                        if failure is not None:
                            self.failures.append(failure)

    def start(self, clients: int) -> None:
        """Starts `clients` threads."""
        for _ in range(clients):
            thread = threading.Thread(target=self.run, daemon=True)
            thread.start()
            self.threads.append(thread)

    def finish(self) -> None:
        """Stops the threads and waits for them."""
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=60)

    def wait_for(self, calls: int, *, also: Callable[[], bool] = lambda: True) -> None:
        """Waits until `calls` more calls completed and `also()` holds."""
        start = self.completed
        deadline = time.monotonic() + PHASE_TIMEOUT_S
        while self.completed - start < calls or not also():
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.completed - start} calls; condition {also()}")
            time.sleep(0.1)


def _rest_calls(
    secret_key: str, payment_id: str
) -> list[Callable[[httpx.Client, grpc.Channel], str | None]]:
    headers = {"X-API-Key": secret_key}

    def get_payment(client: httpx.Client, _: grpc.Channel) -> str | None:
        reply = client.get(f"/v1/payments/{payment_id}", headers=headers)
        if reply.status_code != 200 or reply.json()["id"] != payment_id:
            return f"GET payment: {reply.status_code} {reply.text[:200]}"
        return None

    def list_payments(client: httpx.Client, _: grpc.Channel) -> str | None:
        reply = client.get("/v1/payments", params={"page_size": 5}, headers=headers)
        if reply.status_code != 200:
            return f"list payments: {reply.status_code} {reply.text[:200]}"
        return None

    def get_balance(client: httpx.Client, _: grpc.Channel) -> str | None:
        reply = client.get("/v1/balance", headers=headers)
        if reply.status_code != 200:
            return f"GET balance: {reply.status_code} {reply.text[:200]}"
        return None

    def list_endpoints(client: httpx.Client, _: grpc.Channel) -> str | None:
        reply = client.get("/v1/webhook_endpoints", headers=headers)
        if reply.status_code != 200:
            return f"list endpoints: {reply.status_code} {reply.text[:200]}"
        return None

    return [get_payment, list_payments, get_balance, list_endpoints]


def _health_call(service: ServiceName) -> Callable[[httpx.Client, grpc.Channel], str | None]:
    def health(_: httpx.Client, channel: grpc.Channel) -> str | None:
        reply = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(),
            metadata=(("x-paymesh-service", service),),
            timeout=10,
        )
        if reply.status != health_pb2.HealthCheckResponse.SERVING:
            return f"health {service}: {reply.status}"
        return None

    health.__name__ = f"health_{service}"
    return health


def _merchant_with_payment(platform: LocalPlatform) -> tuple[str, str]:
    engine = make_engine(platform.settings.require_database_url(), pool_size=1)
    try:
        with transaction(make_sessionmaker(engine)) as session:
            merchant = merchants.create_merchant(session, name="Scale-out Merchant")
            key = merchants.create_api_key(
                session, merchant_id=merchant.id, mode="test", kind="secret"
            ).key
    finally:
        engine.dispose()
    reply = httpx.post(
        f"{platform.base_url}/v1/payments",
        headers={"X-API-Key": key, "Idempotency-Key": uuid.uuid4().hex},
        json={"amount": 1000, "currency": "USD"},
        timeout=30,
    )
    assert reply.status_code == 200, reply.text
    return key, reply.json()["id"]


def test_processes_include_a_second_copy_of_every_service_and_worker(
    scaled: LocalPlatform,
) -> None:
    names = set(scaled.children)
    assert {f"{service}-2" for service in SERVICE_NAMES} <= names
    assert {"payment-worker-2", "webhook-worker-2"} <= names
    assert all(child.poll() is None for child in scaled.children.values())


def test_killing_one_copy_of_each_service_fails_no_client_call(scaled: LocalPlatform) -> None:
    secret_key, payment_id = _merchant_with_payment(scaled)
    traffic = Traffic(
        calls=[*_rest_calls(secret_key, payment_id), *map(_health_call, SERVICE_NAMES)],
        base_url=scaled.base_url,
        grpc_target=f"127.0.0.1:{scaled.settings.http_port}",
    )
    traffic.start(CLIENTS)
    try:
        # Round robin: every copy of every service serves calls before any is killed. Envoy
        # balances per worker thread, so a copy can sit out the first few calls; wait_for
        # times out (and fails the test) if one never gets any.
        copies = [
            (service, grpc_port)
            for service in SERVICE_NAMES
            for grpc_port, _ in scaled.settings.replica_ports(service)
        ]

        def every_copy_served() -> bool:
            hosts = _envoy_hosts(scaled)
            return all(hosts[copy].requests > 0 for copy in copies)

        traffic.wait_for(CALLS_PER_PHASE, also=every_copy_served)

        for service in SERVICE_NAMES:
            _kill_and_restart_first_copy(scaled, traffic, service)
    finally:
        traffic.finish()
    assert traffic.completed > CALLS_PER_PHASE * (1 + 2 * len(SERVICE_NAMES))
    assert traffic.failures == []


def _kill_and_restart_first_copy(
    platform: LocalPlatform, traffic: Traffic, service: ServiceName
) -> None:
    """SIGKILLs the first copy (the one internal calls reach too), then brings it back."""
    key = (service, platform.settings.grpc_port(service))

    def marked_unhealthy() -> bool:
        return not _envoy_hosts(platform)[key].healthy

    platform.kill(service, signal.SIGKILL)
    traffic.wait_for(CALLS_PER_PHASE, also=marked_unhealthy)
    assert platform.children[service].poll() is not None
    platform.start_process(service)
    _wait_serving(key[1])
    served_before = _envoy_hosts(platform)[key].requests

    def serving_again() -> bool:
        return _envoy_hosts(platform)[key].requests > served_before

    traffic.wait_for(CALLS_PER_PHASE, also=serving_again)
