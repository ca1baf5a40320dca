"""The kernel's ephemeral port range, which no port paymesh listens on may fall in.

The kernel picks the source port of every outgoing connection from this range. A client that
retries a service which is not listening yet can be handed the service's own port as its
source and connect to itself (TCP self-connect), holding the port so that the service cannot
bind it. Ports below the range are only ever taken by a listener.

Exceptions:

    ConfigurationError  - a port lies in the range, or no room is left below it
"""

from __future__ import annotations

import random
import socket
from pathlib import Path

from services.common.errors import ConfigurationError

EPHEMERAL_RANGE_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")
# Without /proc (macOS, the BSDs) the IANA dynamic range, their default.
EPHEMERAL_RANGE_DEFAULT = (49152, 65535)
# Free ports for embedded servers, tests and benchmarks are picked from here up to the
# ephemeral range: above every default port of paymesh (8080-17054 with eight replicas), so a
# picked port never takes one that `make up` will want.
FREE_PORT_LOW = 20000
FREE_PORT_ATTEMPTS_MAX = 200


def ephemeral_port_range(path: Path = EPHEMERAL_RANGE_FILE) -> tuple[int, int]:
    """The kernel's ephemeral port range, both ends included."""
    try:
        low, high = path.read_text().split()
    except FileNotFoundError:
        return EPHEMERAL_RANGE_DEFAULT
    return int(low), int(high)


def check_outside_ephemeral(ports: dict[str, int], *, path: Path = EPHEMERAL_RANGE_FILE) -> None:
    """Raise ConfigurationError naming each port (by its setting) inside the ephemeral range.

    Port 0 (the kernel picks one, as in-process tests do) is allowed.
    """
    low, high = ephemeral_port_range(path)
    inside = [f"{name}={port}" for name, port in ports.items() if low <= port <= high]
    if inside:
        raise ConfigurationError(
            f"{', '.join(inside)}: inside the kernel's ephemeral port range {low}-{high} "
            f"({path}), where an outgoing connection can take a port before paymesh binds it; "
            f"choose ports below {low}"
        )


def free_port(
    host: str = "127.0.0.1", *, room_above: int = 0, path: Path = EPHEMERAL_RANGE_FILE
) -> int:
    """A TCP port free on `host` right now, picked at random below the ephemeral range.

    At random, so that test sessions and platforms starting side by side rarely pick the same.
    `room_above` keeps the port that far below the range, for ports derived from it (the
    shifted ports of replica copies).
    """
    low, _ = ephemeral_port_range(path)
    low -= room_above
    if low <= FREE_PORT_LOW:
        raise ConfigurationError(
            f"the kernel's ephemeral port range starts at {low} ({path}): no room below it "
            f"from {FREE_PORT_LOW} for free ports"
        )
    for _ in range(FREE_PORT_ATTEMPTS_MAX):
        port = random.randrange(FREE_PORT_LOW, low)  # noqa: S311 - not a secret
        if port_is_free(port, host):
            return port
    raise ConfigurationError(
        f"no free port on {host} in {FREE_PORT_LOW}-{low - 1} after {FREE_PORT_ATTEMPTS_MAX} tries"
    )


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """Tell whether a listener could bind `port` on `host` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # As the servers do: a previous run's connections in TIME_WAIT do not hold the port.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True
