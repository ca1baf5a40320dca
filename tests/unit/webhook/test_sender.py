"""One HTTP attempt: connect-time SSRF refusal, pinned connections, limits, Retry-After."""

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
    """A local server that records the Host header of every request; 204, or 200 with a body."""

    def __init__(self) -> None:
        self.hosts: list[str] = []
        self.reply_body = b""
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", "0")))
                server.hosts.append(self.headers.get("Host", ""))
                self.send_response(200 if server.reply_body else 204)
                self.send_header("Content-Length", str(len(server.reply_body)))
                self.end_headers()
                self.wfile.write(server.reply_body)

            def log_message(self, format: str, *args: object) -> None:
                """Quiet."""

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
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


def _post(url: str, *, allow_private: bool) -> sender.Outcome:
    return post(url, body=b"{}", headers={}, timeout_s=5, allow_private=allow_private)


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
