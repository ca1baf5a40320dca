"""Local scale-out: copies of each service on shifted ports, and who finds them (Envoy, clients)."""

from __future__ import annotations

from typing import Any

import pydantic
import pytest
import yaml

from services.common.settings import SERVICE_NAMES, Settings
from services.runtime.envoy import (
    RETRY_ON_ANY,
    RETRY_ON_SAFE,
    render_local,
    safe_methods,
)
from services.runtime.platform import WORKER_KINDS, processes, settings_from


def _settings(**variables: str) -> Settings:
    """Settings from these values over the defaults, whatever this shell exports."""
    defaults = {
        "replicas": "1",
        "worker_replicas": "1",
        "replica_port_step": "1000",
        "services_host": "127.0.0.1",
    }
    merged = defaults | variables
    return settings_from({f"PAYMESH_{name.upper()}": value for name, value in merged.items()})


def test_copies_listen_on_ports_shifted_by_the_step() -> None:
    settings = _settings(replicas="3", replica_port_step="100", payment_grpc_port="20000")
    assert settings.replica_ports("payment") == [
        (20000, settings.payment_metrics_port),
        (20100, settings.payment_metrics_port + 100),
        (20200, settings.payment_metrics_port + 200),
    ]


@pytest.mark.parametrize("replicas", ["0", "9", "two"])
def test_replicas_out_of_range_are_refused(replicas: str) -> None:
    with pytest.raises(pydantic.ValidationError):
        _settings(replicas=replicas)


def test_one_copy_is_reached_at_its_own_address() -> None:
    settings = _settings(ledger_grpc_port="20002")
    assert settings.target("ledger") == "127.0.0.1:20002"


def test_several_copies_are_all_listed_for_the_clients() -> None:
    settings = _settings(replicas="2", ledger_grpc_port="20002")
    assert settings.target("ledger") == "ipv4:127.0.0.1:20002,127.0.0.1:21002"


def test_an_explicit_target_wins_over_the_copies() -> None:
    settings = _settings(replicas="2", ledger_target="ledger:10052")
    assert settings.target("ledger") == "ledger:10052"


def test_a_host_name_gets_its_first_copy_only() -> None:
    # gRPC's ipv4: target takes addresses only; a name resolves by DNS, which lists its own.
    settings = _settings(replicas="2", services_host="paymesh.internal")
    assert settings.target("admin") == f"paymesh.internal:{settings.admin_grpc_port}"


def test_processes_gain_a_copy_of_each_service_and_worker_kind() -> None:
    one = processes(_settings())
    many = processes(_settings(replicas="2", worker_replicas="3"))
    settings = _settings(replicas="2")
    for service in SERVICE_NAMES:
        [(grpc_port, metrics_port)] = settings.replica_ports(service)[1:]
        prefix = f"PAYMESH_{service.upper()}"
        assert many[f"{service}-2"] == [
            "env",
            f"{prefix}_GRPC_PORT={grpc_port}",
            f"{prefix}_METRICS_PORT={metrics_port}",
            *one[service],
        ]
        assert f"{service}-3" not in many
    workers = _settings(worker_replicas="3")
    for kind in WORKER_KINDS:
        variable = f"PAYMESH_{kind.replace('-', '_').upper()}_METRICS_PORT"
        base = workers.process_metrics_port(kind)
        # Each copy runs the same command, serving its metrics on its own port.
        for copy in (2, 3):
            port = base + (copy - 1) * workers.replica_port_step
            assert many[f"{kind}-{copy}"] == ["env", f"{variable}={port}", *one[kind]]
    extra = set(many) - set(one)
    assert len(extra) == len(SERVICE_NAMES) + 2 * len(WORKER_KINDS)


def _config(settings: Settings) -> dict[str, Any]:
    config: dict[str, Any] = yaml.safe_load(render_local(settings))
    return config


def test_envoy_balances_over_every_copy() -> None:
    settings = _settings(replicas="2")
    clusters = {c["name"]: c for c in _config(settings)["static_resources"]["clusters"]}
    for service in SERVICE_NAMES:
        [group] = clusters[service]["load_assignment"]["endpoints"]
        ports = [
            e["endpoint"]["address"]["socket_address"]["port_value"] for e in group["lb_endpoints"]
        ]
        assert ports == [grpc_port for grpc_port, _ in settings.replica_ports(service)]
        assert clusters[service]["lb_policy"] == "ROUND_ROBIN"
        assert clusters[service]["health_checks"]
        assert clusters[service]["outlier_detection"]


def _route_for(routes: list[dict[str, Any]], path: str, headers: dict[str, str]) -> dict[str, Any]:
    """The first route Envoy would pick for a gRPC call to `path`."""
    for route in routes:
        match = route["match"]
        wanted = {h["name"]: h["string_match"]["exact"] for h in match.get("headers", [])}
        if any(headers.get(name) != value for name, value in wanted.items()):
            continue
        if match.get("path") == path or path.startswith(match.get("prefix", "\0")):
            return route
    raise LookupError(path)


def test_safe_calls_are_retried_on_unavailable_and_others_only_when_never_delivered() -> None:
    [listener] = _config(_settings())["static_resources"]["listeners"]
    manager = listener["filter_chains"][0]["filters"][0]["typed_config"]
    [host] = manager["route_config"]["virtual_hosts"]
    routes = host["routes"]

    def retry_on(path: str, headers: dict[str, str] | None = None) -> str:
        policy = _route_for(routes, path, headers or {})["route"]["retry_policy"]
        return str(policy["retry_on"])

    assert retry_on("/paymesh.payment.v1.PaymentService/GetPayment") == RETRY_ON_SAFE
    assert retry_on("/paymesh.payment.v1.PaymentService/ListPayments") == RETRY_ON_SAFE
    assert retry_on("/paymesh.payment.v1.PaymentService/CreatePayment") == RETRY_ON_ANY
    assert retry_on("/paymesh.payment.v1.PaymentService/CapturePayment") == RETRY_ON_ANY
    assert retry_on("/paymesh.webhook.v1.WebhookService/DeleteWebhookEndpoint") == RETRY_ON_ANY
    health = "/grpc.health.v1.Health/Check"
    assert retry_on(health, {"x-paymesh-service": "ledger"}) == RETRY_ON_SAFE
    assert "unavailable" not in RETRY_ON_ANY
    assert "reset" not in RETRY_ON_ANY


def test_safe_methods_are_the_public_http_gets_only() -> None:
    paths = safe_methods()
    assert "/paymesh.payment.v1.PaymentService/GetPayment" in paths
    assert "/paymesh.ledger.v1.LedgerService/GetBalance" in paths
    assert not [path for path in paths if "/Create" in path or "Internal" in path]
    # Server streams are never retried: they are no single answer to repeat.
    assert "/paymesh.admin.v1.AdminService/WatchOverview" not in paths
