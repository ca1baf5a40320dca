"""A fast local webhook receiver for the benchmarks: verifies every signature, records arrivals.

Run as its own process (`python -m bench.receiver --port P`), never inside the process under
test. The endpoint secrets to verify against arrive on stdin, one per line, so they never show
in a process list. `GET /stats` answers what arrived so far as JSON:
`{"received": N, "bad_signature": N, "duplicates": N,
"arrivals": [[received_us, sent_us, type, path]]}`
where `sent_us` is the create request's send time the load generator put in the payment's
metadata (`sent_at_us`), or null for events that carry none.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

BODY_BYTES_MAX = 1024 * 1024


class Ledger:
    """What arrived, shared by the handler threads."""

    def __init__(self, secrets: list[str]) -> None:
        self.verifiers = [Webhook(secret) for secret in secrets]
        self.lock = threading.Lock()
        self.seen: set[str] = set()
        self.arrivals: list[tuple[int, int | None, str, str]] = []
        self.bad_signature = 0
        self.duplicates = 0

    def verified(self, body: bytes, headers: dict[str, str]) -> dict[str, Any] | None:
        """The event if one of the secrets signed it, else None."""
        for verifier in self.verifiers:
            try:
                event: dict[str, Any] = verifier.verify(body, headers)
            except WebhookVerificationError:
                continue
            return event
        return None

    def record(self, event: dict[str, Any], *, path: str, received_us: int) -> None:
        """Counts an event once per endpoint path (a redelivery is a duplicate)."""
        obj = event.get("data", {}).get("object", {})
        sent = obj.get("metadata", {}).get("sent_at_us") if isinstance(obj, dict) else None
        key = f"{event.get('id')}:{path}"
        with self.lock:
            if key in self.seen:
                self.duplicates += 1
                return
            self.seen.add(key)
            self.arrivals.append(
                (received_us, int(sent) if sent else None, str(event.get("type")), path)
            )

    def stats(self) -> dict[str, Any]:
        """Everything recorded so far."""
        with self.lock:
            return {
                "received": len(self.arrivals),
                "bad_signature": self.bad_signature,
                "duplicates": self.duplicates,
                "arrivals": list(self.arrivals),
            }


def make_handler(ledger: Ledger) -> type[BaseHTTPRequestHandler]:
    """A request handler class bound to `ledger`."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # TCP_NODELAY, as a merchant's web server sets it: http.server writes the headers and
        # the body apart, and with Nagle's algorithm the body waited for the sender's delayed
        # ACK of the headers, 40 ms on Linux, so each delivery took 40 ms and one endpoint's
        # rate was bound by the receiver (bench/README.md).
        disable_nagle_algorithm = True

        def log_message(self, format: str, *args: Any) -> None:
            """Quiet: one line per delivery would cost more than the delivery."""

        def _answer(self, status: int, body: bytes = b"") -> None:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self) -> None:
            """A delivery: 200 when signed by a known secret, 400 otherwise."""
            received_us = time.time_ns() // 1000
            length = int(self.headers.get("Content-Length") or 0)
            if length > BODY_BYTES_MAX:
                self._answer(413)
                return
            body = self.rfile.read(length)
            headers = {name.lower(): value for name, value in self.headers.items()}
            event = ledger.verified(body, headers)
            if event is None:
                with ledger.lock:
                    ledger.bad_signature += 1
                self._answer(400)
                return
            ledger.record(event, path=self.path, received_us=received_us)
            self._answer(200, b"{}")

        def do_GET(self) -> None:
            """`/stats`: what arrived."""
            if self.path != "/stats":
                self._answer(404)
                return
            self._answer(200, json.dumps(ledger.stats()).encode())

    return Handler


def serve(port: int, secrets: list[str]) -> None:
    """Serves until killed."""
    server = ThreadingHTTPServer(("127.0.0.1", port), make_handler(Ledger(secrets)))
    server.daemon_threads = True
    print(f"receiver listening on 127.0.0.1:{port}", flush=True)
    server.serve_forever()


def main() -> None:
    """Entry point: `python -m bench.receiver --port P < secrets`."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    secrets = [line.strip() for line in sys.stdin if line.strip()]
    serve(args.port, secrets)


if __name__ == "__main__":
    main()
