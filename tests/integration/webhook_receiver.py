"""Webhook test support: a real local HTTP receiver scripted per path, and publishing helpers."""

from __future__ import annotations

import secrets
import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TypeVar

import httpx
from google.protobuf import struct_pb2
from paymesh.webhook.v1 import webhook_internal_pb2, webhook_internal_pb2_grpc

from services.common.ids import new_id

T = TypeVar("T")
# How long `create_endpoint` repeats a request the platform could not answer.
CREATE_RETRY_S = 60.0


@dataclass(frozen=True)
class Reply:
    """How the receiver answers one request."""

    status: int = 200
    body: bytes = b"ok"
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0
    # When set, a body of this many bytes is streamed instead of `body`.
    stream_bytes: int = 0


@dataclass(frozen=True)
class Received:
    """One request the receiver got."""

    path: str
    headers: dict[str, str]
    body: bytes
    time: float


class Receiver:
    """Records every request; answers each path from its script, then with 200 by default."""

    def __init__(self) -> None:
        self.requests: list[Received] = []
        self.streamed_bytes: dict[str, int] = {}
        self._scripts: dict[str, deque[Reply]] = defaultdict(deque)
        self._defaults: dict[str, Reply] = {}
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def port(self) -> int:
        """The port it listens on."""
        return int(self._server.server_address[1])

    def url(self, path: str) -> str:
        """The receiver's URL for `path`."""
        return f"http://127.0.0.1:{self.port}{path}"

    def script(self, path: str, *replies: Reply, then: Reply | None = None) -> None:
        """Answers the next requests to `path` with `replies`, afterwards with `then`."""
        with self._lock:
            self._scripts[path].extend(replies)
            if then is not None:
                self._defaults[path] = then

    def received(self, path: str) -> list[Received]:
        """Requests to `path` so far."""
        with self._lock:
            return [r for r in self.requests if r.path == path]

    def wait_for(self, path: str, count: int, *, timeout_s: float = 30.0) -> list[Received]:
        """Waits until `path` got at least `count` requests; returns them."""
        return wait_until(lambda: _at_least(self.received(path), count), timeout_s=timeout_s)

    def _reply_for(self, path: str) -> Reply:
        with self._lock:
            script = self._scripts[path]
            return script.popleft() if script else self._defaults.get(path, Reply())

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # TCP_NODELAY, as bench/receiver.py: else each answer's body waits 40 ms for the
            # sender's delayed ACK of its headers.
            disable_nagle_algorithm = True

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length)
                with receiver._lock:
                    receiver.requests.append(
                        Received(
                            self.path,
                            {k.lower(): v for k, v in self.headers.items()},
                            body,
                            time.monotonic(),
                        )
                    )
                reply = receiver._reply_for(self.path)
                if reply.delay_s:
                    time.sleep(reply.delay_s)
                with suppress(BrokenPipeError, ConnectionResetError):
                    self._answer(reply)

            def _answer(self, reply: Reply) -> None:
                self.send_response(reply.status)
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                length = reply.stream_bytes or len(reply.body)
                self.send_header("Content-Length", str(length))
                self.end_headers()
                if not reply.stream_bytes:
                    self.wfile.write(reply.body)
                    return
                chunk = b"x" * 65536
                sent = 0
                try:
                    while sent < reply.stream_bytes:
                        self.wfile.write(chunk)
                        sent += len(chunk)
                finally:
                    with receiver._lock:
                        receiver.streamed_bytes[self.path] = sent

            def log_message(self, format: str, *args: object) -> None:
                """Quiet: tests assert on what was received, not on logs."""

        return Handler

    @contextmanager
    def running(self) -> Iterator[Receiver]:
        """Serves in a thread until the block ends."""
        self._thread.start()
        try:
            yield self
        finally:
            self._server.shutdown()
            self._server.server_close()


def _at_least(items: list[Received], count: int) -> list[Received] | None:
    return items if len(items) >= count else None


def wait_until(probe: Callable[[], T | None], *, timeout_s: float = 30.0) -> T:
    """Polls `probe` until it returns something truthy, or fails after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout_s}s")
        time.sleep(0.1)


def publish(
    stub: webhook_internal_pb2_grpc.WebhookInternalServiceStub,
    merchant_id: str,
    *,
    event_type: str = "payment.succeeded",
    obj: dict[str, Any] | None = None,
    event_id: str | None = None,
    livemode: bool = False,
) -> webhook_internal_pb2.PublishEventRequest:
    """Publishes one event through the internal RPC and returns the request."""
    body = struct_pb2.Struct()
    body.update(obj if obj is not None else {"id": new_id("pay"), "amount": "100"})
    request = webhook_internal_pb2.PublishEventRequest(
        id=event_id or new_id("evt"),
        merchant_id=merchant_id,
        type=event_type,
        livemode=livemode,
        object=body,
    )
    stub.PublishEvent(request, timeout=15)
    return request


def create_endpoint(
    api: httpx.Client, secret_key: str, url: str, events: list[str] | None = None
) -> dict[str, object]:
    """Registers an endpoint through the edge; returns its JSON (with the secret).

    As a careful merchant does, it repeats the request with the same Idempotency-Key while
    the platform answers 5xx or the connection breaks (e.g. just after `paymesh up` started,
    under load), and gets the one endpoint that was made.
    """
    key = f"endpoint-{secrets.token_hex(8)}"
    deadline = time.monotonic() + CREATE_RETRY_S
    while True:
        try:
            response = api.post(
                "/v1/webhook_endpoints",
                headers={"X-API-Key": secret_key, "Idempotency-Key": key},
                json={"url": url, "enabled_events": events or ["*"]},
            )
            if response.status_code < 500 and response.status_code != 409:
                break
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, "the endpoint could not be created"
        time.sleep(0.5)
    assert response.status_code == 200, response.text
    created: dict[str, object] = response.json()
    return created
