"""Where webhooks may go: http(s) URLs whose every address is globally routable (SSRF policy).

The policy is applied twice: when an endpoint is registered or its URL changed (the URL and, if
its host resolves now, every address it resolves to), and at every attempt, where the host is
resolved once, every answer is checked, and the request goes to that checked address — so a DNS
answer that changes between the check and the connection (rebinding) cannot slip through.
`PAYMESH_WEBHOOK_ALLOW_PRIVATE_NETWORKS=true` turns the address checks off (local demos, tests).
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass

import httpx

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

URL_CHARS_MAX = 2048
SCHEMES = ("http", "https")
_DEFAULT_PORTS = {"http": 80, "https": 443}

# Checked on top of `is_global`, whose table differs between Python versions.
_BLOCKED_NETWORKS = [
    ipaddress.ip_network(network)
    for network in (
        "0.0.0.0/8",  # "this network"; 0.0.0.0 reaches the local host
        "10.0.0.0/8",
        "100.64.0.0/10",  # carrier-grade NAT
        "127.0.0.0/8",
        "169.254.0.0/16",  # link-local, cloud metadata services
        "172.16.0.0/12",
        "192.0.0.0/24",
        "192.168.0.0/16",
        "198.18.0.0/15",
        "224.0.0.0/4",  # multicast
        "240.0.0.0/4",  # reserved, and the broadcast address
        "::/96",  # unspecified, loopback and the deprecated IPv4-compatible form
        "::ffff:0:0/96",  # IPv4-mapped (its IPv4 address is checked too)
        "64:ff9b:1::/48",  # local-use NAT64
        "100::/64",  # discard-only
        "fc00::/7",  # unique local
        "fe80::/10",  # link-local
        "fec0::/10",  # site-local (deprecated)
        "ff00::/8",  # multicast
    )
]
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


class AddressRefused(Exception):
    """A destination is not allowed; the message says why (safe to show the merchant)."""


def embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address stands for (mapped, 6to4, NAT64, Teredo), if any."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    if address.teredo is not None:
        return address.teredo[1]
    return None


def refusal(address: IPAddress) -> str | None:
    """Why `address` is not an allowed destination, or None when it is globally routable."""
    if any(
        address in network for network in _BLOCKED_NETWORKS if network.version == address.version
    ):
        return f"{address} is not a public address"
    if address.is_multicast or not address.is_global:
        return f"{address} is not a public address"
    if isinstance(address, ipaddress.IPv6Address):
        inner = embedded_ipv4(address)
        if inner is not None and refusal(inner) is not None:
            return f"{address} embeds {inner}, which is not a public address"
    return None


@dataclass(frozen=True)
class Target:
    """A parsed destination: scheme, host (no brackets), port."""

    scheme: str
    host: str
    port: int


def parse_url(url: str) -> Target:
    """The destination of an http(s) URL; AddressRefused when it is malformed or not http(s)."""
    if len(url) > URL_CHARS_MAX:
        raise AddressRefused(f"is longer than {URL_CHARS_MAX} characters")
    if any(ch.isspace() or ord(ch) < 0x20 for ch in url):
        raise AddressRefused("must not contain spaces or control characters")
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, ValueError, TypeError) as error:
        raise AddressRefused("is not a valid URL") from error
    if parsed.scheme not in SCHEMES:
        raise AddressRefused("must be an http or https URL")
    if not parsed.host:
        raise AddressRefused("must name a host")
    if parsed.userinfo:
        raise AddressRefused("must not carry a user name or password")
    return Target(parsed.scheme, parsed.host, parsed.port or _DEFAULT_PORTS[parsed.scheme])


def literal_address(host: str) -> IPAddress | None:
    """The address when `host` is an IP literal, else None."""
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def _refuse_special_names(host: str) -> None:
    name = host.rstrip(".").lower()
    if name == "localhost" or name.endswith(".localhost"):
        raise AddressRefused(f"{host} is not a public host")


def resolve(host: str, port: int) -> list[IPAddress]:
    """Every address `host` resolves to now (raises OSError when it does not resolve)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    addresses: list[IPAddress] = []
    for _family, _type, _proto, _name, sockaddr in infos:
        address = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
        if address not in addresses:
            addresses.append(address)
    return addresses


def check_registration(url: str, *, allow_private: bool) -> None:
    """AddressRefused unless `url` is http(s) and, now, points only at public addresses.

    A host that does not resolve yet is accepted: every attempt checks it again.
    """
    target = parse_url(url)
    if allow_private:
        return
    literal = literal_address(target.host)
    if literal is not None:
        reason = refusal(literal)
        if reason is not None:
            raise AddressRefused(reason)
        return
    _refuse_special_names(target.host)
    try:
        addresses = resolve(target.host, target.port)
    except (OSError, UnicodeError):
        return
    for address in addresses:
        reason = refusal(address)
        if reason is not None:
            raise AddressRefused(f"{target.host} resolves to {address}: {reason}")


def pin(target: Target, *, allow_private: bool) -> IPAddress | None:
    """The checked address to connect to for an attempt; None when checks are off.

    Every address the host resolves to must be allowed; a mix is refused, so a rebinding
    answer cannot be picked on a later connection.
    """
    if allow_private:
        return None
    literal = literal_address(target.host)
    if literal is not None:
        addresses = [literal]
    else:
        _refuse_special_names(target.host)
        try:
            addresses = resolve(target.host, target.port)
        except (OSError, UnicodeError) as error:
            raise AddressRefused(f"cannot resolve {target.host}") from error
    if not addresses:
        raise AddressRefused(f"cannot resolve {target.host}")
    for address in addresses:
        reason = refusal(address)
        if reason is not None:
            raise AddressRefused(f"{target.host} resolves to {address}: {reason}")
    return addresses[0]
