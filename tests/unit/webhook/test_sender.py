"""One HTTP attempt: connect-time SSRF refusal, pinned and kept-alive connections, limits."""

from __future__ import annotations

import ipaddress
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from services.webhook import sender
from services.webhook.addresses import IPAddress, Target
from services.webhook.sender import post, retry_after_s


class _Server:
    """A local HTTP/1.1 server that records the Host header, cookie and client port of every
    request; 204, or 200 with a body, optionally setting a cookie."""

    def __init__(self, address: tuple[str, int] = ("127.0.0.1", 0)) -> None:
        self.hosts: list[str] = []
        self.cookies: list[str | None] = []
        self.client_ports: list[int] = []
        self.reply_body = b""
        self.set_cookie = ""
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keeps connections alive

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", "0")))
                server.hosts.append(self.headers.get("Host", ""))
                server.cookies.append(self.headers.get("Cookie"))
                server.client_ports.append(int(self.client_address[1]))
                self.send_response(200 if server.reply_body else 204)
                self.send_header("Content-Length", str(len(server.reply_body)))
                if server.set_cookie:
                    self.send_header("Set-Cookie", server.set_cookie)
                self.end_headers()
                self.wfile.write(server.reply_body)

            def log_message(self, format: str, *args: object) -> None:
                """Quiet."""

        self.httpd = ThreadingHTTPServer(address, Handler)
        self.port = int(self.httpd.server_address[1])


@pytest.fixture
def server() -> Iterator[_Server]:
    """A receiver on 127.0.0.1 for the duration of a test."""
    running = _Server()
    thread = threading.Thread(target=running.httpd.serve_forever, daemon=True)
    thread.start()
    yield running
    running.httpd.shutdown()
    running.httpd.server_close()


@pytest.fixture
def clients() -> Iterator[sender.Clients]:
    """The kept-alive clients of one test."""
    made = sender.Clients(connections_max=4)
    yield made
    made.close()


def _post(
    url: str, *, allow_private: bool, clients: sender.Clients | None = None
) -> sender.Outcome:
    if clients is None:
        clients = sender.Clients()
    return post(
        url, body=b"{}", headers={}, timeout_s=5, allow_private=allow_private, clients=clients
    )


@pytest.mark.parametrize(
    "host",
    ["127.0.0.1", "localhost", "[::ffff:127.0.0.1]", "127.1", "2130706433", "0.0.0.0"],  # noqa: S104,
)
def test_post__a_private_destination_is_refused_at_connect_time(server: _Server, host: str) -> None:
    outcome = _post(f"http://{host}:{server.port}/hook", allow_private=False)

    assert outcome.status_code == 0
    assert outcome.error.startswith("destination refused")
    assert server.hosts == []


def test_post__a_private_destination_is_reached_when_allowed(server: _Server) -> None:
    outcome = _post(f"http://localhost:{server.port}/hook", allow_private=True)

    assert (outcome.status_code, outcome.error, outcome.delivered) == (204, "", True)
    assert server.hosts == [f"localhost:{server.port}"]


def test_post__connects_to_the_checked_address_with_the_original_host_header(
    server: _Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    checked: list[Target] = []

    def fake_pin(target: Target, *, allow_private: bool) -> IPAddress:
        checked.append(target)
        return ipaddress.ip_address("127.0.0.1")

    monkeypatch.setattr(sender, "pin", fake_pin)

    outcome = _post(f"http://hooks.example.test:{server.port}/hook", allow_private=False)

    assert outcome.status_code == 204, outcome.error
    assert checked == [Target("http", "hooks.example.test", server.port)]
    assert server.hosts == [f"hooks.example.test:{server.port}"]


def test_post__a_connection_error_is_an_outcome_not_an_exception() -> None:
    outcome = _post("http://127.0.0.1:9/hook", allow_private=True)

    assert outcome.status_code == 0
    assert outcome.error
    assert not outcome.delivered


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("120", 120.0),
        (" 7 ", 7.0),
        ("Thu, 26 Nov 2026 06:00:30 GMT", 30.0),
        ("Thu, 26 Nov 2026 05:00:00 GMT", 0.0),
        ("soon", None),
        ("-5", None),
        ("", None),
        (None, None),
    ],
)
def test_retry_after__seconds_or_http_date(header: str | None, expected: float | None) -> None:
    now = datetime(2026, 11, 26, 6, 0, 0, tzinfo=UTC)

    assert retry_after_s(header, now=now) == expected


def test_post__a_binary_body_is_stored_as_text_without_nul(server: _Server) -> None:
    server.reply_body = b"\x00\xff" * 4096

    outcome = _post(f"http://127.0.0.1:{server.port}/hook", allow_private=True)

    assert outcome.delivered
    assert "\x00" not in outcome.body
    assert 0 < len(outcome.body.encode()) <= 3 * 2048


def _pin_to_loopback(monkeypatch: pytest.MonkeyPatch) -> list[Target]:
    """Makes every host name "resolve" to 127.0.0.1 and pass the check; returns the checks."""
    checked: list[Target] = []

    def fake_pin(target: Target, *, allow_private: bool) -> IPAddress:
        checked.append(target)
        return ipaddress.ip_address("127.0.0.1")

    monkeypatch.setattr(sender, "pin", fake_pin)
    return checked


def test_post__attempts_to_one_host_reuse_a_kept_alive_connection_and_check_each_time(
    server: _Server, clients: sender.Clients, monkeypatch: pytest.MonkeyPatch
) -> None:
    checked = _pin_to_loopback(monkeypatch)
    url = f"http://hooks.example.test:{server.port}/hook"

    outcomes = [_post(url, allow_private=False, clients=clients) for _ in range(3)]

    assert [o.status_code for o in outcomes] == [204, 204, 204]
    assert len(set(server.client_ports)) == 1  # one connection
    assert len(checked) == 3  # the address is still checked at every attempt


def test_post__host_names_that_share_an_address_never_share_a_connection(
    server: _Server, clients: sender.Clients, monkeypatch: pytest.MonkeyPatch
) -> None:
    _pin_to_loopback(monkeypatch)

    for host in ("a.example.test", "b.example.test", "a.example.test", "b.example.test"):
        assert _post(
            f"http://{host}:{server.port}/", allow_private=False, clients=clients
        ).delivered

    by_port: dict[int, set[str]] = {}
    for port, host in zip(server.client_ports, server.hosts, strict=True):
        by_port.setdefault(port, set()).add(host)
    assert len(by_port) == 2
    assert all(len(hosts) == 1 for hosts in by_port.values())


def test_post__a_new_checked_address_gets_a_new_connection(
    server: _Server, clients: sender.Clients, monkeypatch: pytest.MonkeyPatch
) -> None:
    answers = iter(["127.0.0.1", "127.0.0.2", "127.0.0.1"])

    def changing_pin(target: Target, *, allow_private: bool) -> IPAddress:
        return ipaddress.ip_address(next(answers))

    monkeypatch.setattr(sender, "pin", changing_pin)
    other = _Server(("127.0.0.2", server.port))
    thread = threading.Thread(target=other.httpd.serve_forever, daemon=True)
    thread.start()
    url = f"http://rebinding.example.test:{server.port}/"
    try:
        outcomes = [_post(url, allow_private=False, clients=clients) for _ in range(3)]
    finally:
        other.httpd.shutdown()
        other.httpd.server_close()

    assert [o.status_code for o in outcomes] == [204, 204, 204]
    assert len(other.hosts) == 1  # the second attempt went to its own checked address
    assert len(server.hosts) == 2
    assert len(set(server.client_ports)) == 1  # the first connection, kept for the third


def test_post__cookies_are_never_sent_back(server: _Server, clients: sender.Clients) -> None:
    server.set_cookie = "session=abc; Path=/"

    for _ in range(2):
        assert _post(
            f"http://127.0.0.1:{server.port}/", allow_private=True, clients=clients
        ).delivered

    assert server.cookies == [None, None]
