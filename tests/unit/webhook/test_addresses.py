"""The SSRF policy: which destinations are refused, at registration and at connect time."""

from __future__ import annotations

import ipaddress

import pytest

from services.webhook import addresses
from services.webhook.addresses import AddressRefused, Target, check_registration, pin, refusal

BLOCKED = [
    "127.0.0.1",  # loopback
    "127.255.255.254",
    "0.0.0.0",  # noqa: S104 - "this host", as a destination
    "10.0.0.1",  # private
    "172.16.5.4",
    "192.168.1.1",
    "169.254.169.254",  # link-local: cloud metadata
    "100.64.0.1",  # CGNAT
    "100.127.255.254",
    "192.0.0.8",  # IETF protocol assignments
    "198.18.0.1",  # benchmarking
    "224.0.0.1",  # multicast
    "239.255.255.250",
    "240.0.0.1",  # reserved
    "255.255.255.255",  # broadcast
    "::",  # unspecified
    "::1",  # loopback
    "::7f00:1",  # IPv4-compatible 127.0.0.1
    "::ffff:127.0.0.1",  # IPv4-mapped
    "::ffff:10.0.0.1",
    "::ffff:169.254.169.254",
    "2002:7f00:1::1",  # 6to4 of 127.0.0.1
    "2002:a00:1::1",  # 6to4 of 10.0.0.1
    "2002:a9fe:a9fe::1",  # 6to4 of 169.254.169.254
    "64:ff9b::7f00:1",  # NAT64 of 127.0.0.1
    "64:ff9b::a9fe:a9fe",  # NAT64 of 169.254.169.254
    "64:ff9b:1::a00:1",  # local-use NAT64
    "2001:0:4136:e378:8000:63bf:3fff:fdd2",  # Teredo
    "fc00::1",  # unique local
    "fd12:3456::1",
    "fe80::1",  # link-local
    "fec0::1",  # site-local
    "ff02::1",  # multicast
    "ff0e::1",
    "2001:db8::1",  # documentation
    "100::1",  # discard-only
]
ALLOWED = ["8.8.8.8", "1.1.1.1", "93.184.216.34", "2606:4700:4700::1111", "2002:808:808::1"]


@pytest.mark.parametrize("address", BLOCKED)
def test_refusal__non_public_addresses_are_refused(address: str) -> None:
    assert refusal(ipaddress.ip_address(address)) is not None


@pytest.mark.parametrize("address", ALLOWED)
def test_refusal__public_addresses_are_allowed(address: str) -> None:
    assert refusal(ipaddress.ip_address(address)) is None


@pytest.mark.parametrize("address", BLOCKED)
def test_registration__literal_non_public_addresses_are_refused(address: str) -> None:
    host = f"[{address}]" if ":" in address else address

    with pytest.raises(AddressRefused):
        check_registration(f"https://{host}:8443/hook", allow_private=False)


@pytest.mark.parametrize(
    "url",
    [
        "http://localhost/hook",
        "http://LOCALHOST./hook",
        "http://api.localhost/hook",
        "http://2130706433/hook",  # 127.0.0.1 as one number
        "http://0x7f.1/hook",  # hexadecimal, short form
        "http://127.1/hook",
    ],
)
def test_registration__names_and_odd_forms_of_loopback_are_refused(url: str) -> None:
    with pytest.raises(AddressRefused):
        check_registration(url, allow_private=False)


def test_registration__a_name_resolving_to_a_private_address_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    answers = [ipaddress.ip_address("8.8.8.8"), ipaddress.ip_address("10.1.2.3")]
    monkeypatch.setattr(addresses, "resolve", lambda host, port: answers)

    with pytest.raises(AddressRefused, match=r"10\.1\.2\.3"):
        check_registration("https://mixed.example.com/hook", allow_private=False)


def test_registration__an_unresolvable_name_is_accepted_for_a_later_check(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def fail(host: str, port: int) -> list[addresses.IPAddress]:
        raise OSError("no such name")

    monkeypatch.setattr(addresses, "resolve", fail)

    check_registration("https://not-yet.example.com/hook", allow_private=False)


@pytest.mark.parametrize(
    "url",
    [
        "ftp://hooks.example.com/x",
        "file:///etc/passwd",
        "javascript:alert(1)",
        "hooks.example.com/no-scheme",
        "https:///no-host",
        "https://user:password@hooks.example.com/",
        "https://hooks.example.com/with space",
        "https://hooks.example.com/\x00",
        "https://hooks.example.com/" + "a" * 2048,
        "http://[::1/unclosed",
    ],
)
def test_registration__malformed_or_non_http_urls_are_refused_even_when_private_is_allowed(
    url: str,
) -> None:
    with pytest.raises(AddressRefused):
        check_registration(url, allow_private=True)


def test_registration__private_addresses_pass_when_allowed() -> None:
    check_registration("http://127.0.0.1:9999/hook", allow_private=True)
    check_registration("http://localhost/hook", allow_private=True)


def test_pin__dns_rebinding_to_a_private_address_is_refused_at_connect_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    answers = iter([[ipaddress.ip_address("8.8.8.8")], [ipaddress.ip_address("127.0.0.1")]])
    monkeypatch.setattr(addresses, "resolve", lambda host, port: next(answers))
    check_registration("https://rebind.example.com/hook", allow_private=False)

    with pytest.raises(AddressRefused, match=r"127\.0\.0\.1"):
        pin(Target("https", "rebind.example.com", 443), allow_private=False)


def test_pin__returns_the_checked_address(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        addresses, "resolve", lambda host, port: [ipaddress.ip_address("93.184.216.34")]
    )

    assert pin(Target("https", "hooks.example.com", 443), allow_private=False) == (
        ipaddress.ip_address("93.184.216.34")
    )
    assert pin(Target("https", "hooks.example.com", 443), allow_private=True) is None


def test_pin__an_unresolvable_name_is_refused_at_connect_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def fail(host: str, port: int) -> list[addresses.IPAddress]:
        raise OSError("no such name")

    monkeypatch.setattr(addresses, "resolve", fail)

    with pytest.raises(AddressRefused, match="cannot resolve"):
        pin(Target("https", "gone.example.com", 443), allow_private=False)
