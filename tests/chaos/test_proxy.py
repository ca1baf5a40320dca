"""The fault proxy on its own, in front of a trivial echo server.

No assertion here waits for something to be fast: a stall is proved by data that has not come
back while the stall holds (it cannot, however loaded the machine), latency by a lower bound on
time and by the proxy's own count of delayed chunks.
"""

from __future__ import annotations

import os
import socket
import socketserver
import threading
import time
from collections.abc import Iterator

import pytest

from tests.chaos.proxy import FaultProxy

RECV_TIMEOUT_S = 30.0
# How long to look for bytes that a stall must hold back; any value proves the same thing.
HELD_CHECK_S = 0.3


class _Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        with self.request as sock:
            while data := sock.recv(65536):
                sock.sendall(data)


@pytest.fixture
def echo_port() -> Iterator[int]:
    """A threaded TCP echo server on 127.0.0.1."""
    socketserver.ThreadingTCPServer.allow_reuse_address = True
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Echo)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def proxy(echo_port: int) -> Iterator[FaultProxy]:
    """A proxy in front of the echo server."""
    with FaultProxy("127.0.0.1", echo_port, name="test-proxy").running() as running:
        yield running


def _connect(proxy: FaultProxy) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", proxy.port), timeout=RECV_TIMEOUT_S)
    sock.settimeout(RECV_TIMEOUT_S)
    return sock


def _recv_exactly(sock: socket.socket, count: int) -> bytes:
    received = bytearray()
    while len(received) < count:
        chunk = sock.recv(count - len(received))
        assert chunk, f"connection closed after {len(received)} of {count} bytes"
        received += chunk
    return bytes(received)


def _wait_for(probe: object, *, timeout_s: float = RECV_TIMEOUT_S) -> None:
    assert callable(probe)
    deadline = time.monotonic() + timeout_s
    while not probe():
        assert time.monotonic() < deadline, "condition not met"
        time.sleep(0.01)


def test_no_fault__bytes_pass_intact_both_ways(proxy: FaultProxy) -> None:
    payload = os.urandom(1 << 20)
    with _connect(proxy) as sock:
        sender = threading.Thread(target=sock.sendall, args=(payload,))
        sender.start()
        echoed = _recv_exactly(sock, len(payload))
        sender.join()
    assert echoed == payload
    stats = proxy.stats()
    assert stats.connections == 1
    assert stats.bytes == 2 * len(payload)
    assert stats.delayed_chunks == stats.held_chunks == stats.reset_connections == 0


def test_latency__every_chunk_delayed_order_and_bytes_kept(proxy: FaultProxy) -> None:
    proxy.latency(delay_ms=20, jitter_ms=20)
    messages = [f"message {index:03d};".encode() for index in range(10)]
    started = time.monotonic()
    with _connect(proxy) as sock:
        # One at a time: each round trip crosses the proxy twice, each crossing >= 20 ms.
        for message in messages:
            sock.sendall(message)
            assert _recv_exactly(sock, len(message)) == message
        elapsed_s = time.monotonic() - started
        # Many at once: jitter must not reorder chunks within a direction.
        burst = b"".join(messages) * 50
        sock.sendall(burst)
        assert _recv_exactly(sock, len(burst)) == burst
    assert elapsed_s >= len(messages) * 2 * 0.020
    assert proxy.stats().delayed_chunks >= 2 * len(messages)
    assert proxy.stats().latency_bursts == 1


def test_latency__ends_after_its_duration(proxy: FaultProxy) -> None:
    proxy.latency(delay_ms=10, duration_s=0.0)
    time.sleep(0.05)
    with _connect(proxy) as sock:
        sock.sendall(b"quick")
        assert _recv_exactly(sock, 5) == b"quick"
    assert proxy.stats().delayed_chunks == 0


def test_stall__holds_data_without_closing_until_released(proxy: FaultProxy) -> None:
    with _connect(proxy) as sock:
        sock.sendall(b"before")
        assert _recv_exactly(sock, 6) == b"before"
        proxy.stall()
        sock.sendall(b"during")
        sock.settimeout(HELD_CHECK_S)
        with pytest.raises(TimeoutError):
            sock.recv(64)  # held: neither data nor a close comes back
        # A connection opened during the stall is accepted and held as well.
        with _connect(proxy) as late:
            late.sendall(b"late")
            late.settimeout(HELD_CHECK_S)
            with pytest.raises(TimeoutError):
                late.recv(64)
            assert proxy.stats().live == 2
            proxy.release()
            late.settimeout(RECV_TIMEOUT_S)
            assert _recv_exactly(late, 4) == b"late"
        sock.settimeout(RECV_TIMEOUT_S)
        assert _recv_exactly(sock, 6) == b"during"
    assert proxy.stats().stalls == 1
    assert proxy.stats().reset_connections == 0


def test_stall__with_a_duration_releases_itself(proxy: FaultProxy) -> None:
    with _connect(proxy) as sock:
        proxy.stall(duration_s=0.2)
        sock.sendall(b"held")
        assert _recv_exactly(sock, 4) == b"held"


def test_reset__cuts_every_live_connection_with_rst(proxy: FaultProxy) -> None:
    first, second = _connect(proxy), _connect(proxy)
    with first, second:
        for sock in (first, second):
            sock.sendall(b"hi")
            assert _recv_exactly(sock, 2) == b"hi"
        assert proxy.reset() == 2
        for sock in (first, second):
            with pytest.raises(ConnectionResetError):
                sock.recv(64)  # an RST, not an orderly end of stream (b"")
    _wait_for(lambda: proxy.stats().live == 0)
    with _connect(proxy) as again:  # no refusing asked: new connections work at once
        again.sendall(b"back")
        assert _recv_exactly(again, 4) == b"back"
    stats = proxy.stats()
    assert (stats.resets, stats.reset_connections, stats.connections) == (1, 2, 3)


def _reset_on_arrival(proxy: FaultProxy) -> None:
    """Connects, sends and reads; the RST may already come back to connect() on loopback."""
    with pytest.raises(ConnectionResetError), _connect(proxy) as sock:
        sock.sendall(b"anyone?")
        sock.recv(64)


def test_reset__refuses_new_connections_until_cleared(proxy: FaultProxy) -> None:
    proxy.reset(refuse_s=3600)
    _reset_on_arrival(proxy)
    proxy.clear()
    with _connect(proxy) as sock:
        sock.sendall(b"ok")
        assert _recv_exactly(sock, 2) == b"ok"
    stats = proxy.stats()
    assert (stats.refused, stats.connections) == (1, 1)


def test_upstream_down__client_is_reset() -> None:
    with socket.socket() as placeholder:
        placeholder.bind(("127.0.0.1", 0))
        closed_port = placeholder.getsockname()[1]  # bound, never listening: refuses
        with FaultProxy("127.0.0.1", closed_port, name="down").running() as proxy:
            _reset_on_arrival(proxy)
            assert proxy.stats().refused == 1


def test_half_close__end_of_stream_passes_through(proxy: FaultProxy) -> None:
    with _connect(proxy) as sock:
        sock.sendall(b"last words")
        sock.shutdown(socket.SHUT_WR)
        assert _recv_exactly(sock, 10) == b"last words"
        assert sock.recv(64) == b""  # the echo server saw our end and closed its side
    _wait_for(lambda: proxy.stats().live == 0)
