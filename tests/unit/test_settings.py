"""Settings: listen ports outside the kernel's ephemeral range, the public URL, masked secrets."""

from __future__ import annotations

import pytest
from pydantic import SecretStr

from services.common.errors import ConfigurationError
from services.common.ports import FREE_PORT_LOW, ephemeral_port_range
from services.common.settings import SERVICE_NAMES, Settings
from services.runtime.platform import free_port_settings, settings_from


def test_default_listen_ports__lie_below_the_ephemeral_range_with_every_replica() -> None:
    settings = Settings(replicas=8)
    low, _ = ephemeral_port_range()
    ports = [
        settings.http_port,
        settings.envoy_admin_port,
        settings.webapps_port,
        settings.demo_shop_port,
    ] + [
        port
        for service in SERVICE_NAMES
        for pair in settings.replica_ports(service)
        for port in pair
    ]

    assert max(ports) < low
    assert len(set(ports)) == len(ports)


def test_listen_port_in_the_ephemeral_range__is_refused_by_name() -> None:
    low, high = ephemeral_port_range()

    with pytest.raises(ConfigurationError, match=rf"PAYMESH_LEDGER_GRPC_PORT={low}.*{low}-{high}"):
        Settings(ledger_grpc_port=low)


def test_replica_port_shifted_into_the_ephemeral_range__is_refused() -> None:
    low, _ = ephemeral_port_range()

    with pytest.raises(ConfigurationError, match=r"PAYMESH_ADMIN_METRICS_PORT \(copy 2\)"):
        Settings(admin_metrics_port=low - 1, replicas=2)


def test_public_url__follows_the_edge_port() -> None:
    assert Settings(http_port=18080).public_url() == "http://localhost:18080"


def test_public_url__is_the_public_base_url_when_set() -> None:
    settings = Settings(http_port=18080, public_base_url="https://pay.example.com/")

    assert settings.public_url() == "https://pay.example.com"


def test_database_url__prints_masked() -> None:
    url = "postgresql+psycopg://postgres:hunter2-secret@127.0.0.1:20001/paymesh"
    settings = Settings(database_url=SecretStr(url))

    assert "hunter2-secret" not in repr(settings)
    assert "hunter2-secret" not in str(settings)
    assert settings.require_database_url() == url


@pytest.mark.parametrize("replicas", [2, 3, 4])
def test_free_port_settings__every_copy_process_of_a_scaled_platform_accepts_its_ports(
    replicas: int,
) -> None:
    """A copy process gets its shifted port as its own and checks its copies from there.

    The scale-out drill's copies died at start when a picked port plus two steps fell into the
    ephemeral range; the last copy checks ports up to 2 * (replicas - 1) steps above the first,
    and every copy's settings must validate.
    """
    low, _ = ephemeral_port_range()
    # As wide as leaves room: the copies' ports span most of what lies below the range.
    step = (low - FREE_PORT_LOW) // (2 * replicas)
    ports = free_port_settings(replicas=replicas, step=step)
    variables = {
        **ports,
        "PAYMESH_REPLICAS": str(replicas),
        "PAYMESH_REPLICA_PORT_STEP": str(step),
    }
    for service in SERVICE_NAMES:
        prefix = f"PAYMESH_{service.upper()}"
        for kind in ("GRPC", "METRICS"):
            assert int(ports[f"{prefix}_{kind}_PORT"]) + 2 * (replicas - 1) * step < low
        for copy in range(1, replicas):
            shift = copy * step
            copy_variables = {
                **variables,
                f"{prefix}_GRPC_PORT": str(int(ports[f"{prefix}_GRPC_PORT"]) + shift),
                f"{prefix}_METRICS_PORT": str(int(ports[f"{prefix}_METRICS_PORT"]) + shift),
            }
            settings_from(copy_variables)  # raises ConfigurationError if a copy were refused
