"""`paymesh trigger` and `paymesh events resend`: the integrator's side of the `paymesh` command.

It talks to any paymesh over its public REST API with a merchant's secret key, as an
integrator's own code would, so it needs nothing but the URL and the key:
`--url` / `PAYMESH_API_URL` (default http://localhost:8080) and `--api-key` /
`PAYMESH_API_KEY`.

`paymesh trigger <event type>` creates the test-mode objects whose changes cause that event,
then waits until the event is published and prints its id. `paymesh events resend EVT_ID
[--endpoint WE_ID]` sends an event again (same webhook-id) to the endpoints it was delivered
to, or to one. Each write carries an Idempotency-Key, so a request repeated after a network
error makes nothing twice.

`paymesh listen --forward-to URL [--events a,b]` opens the merchant's event stream
(`GET /v1/events:stream`, Server-Sent Events through the edge; no public URL needed) and POSTs
each event to URL, signed as real deliveries are (services/webhook/signing.py) with a listen
secret it prints at start: `whsec_...`, derived from the API key and this machine, so it stays
the same across runs. One line per event: time, type, id, and the local answer's status. A
lost stream is reopened (tenacity, backoff with jitter) from the last cursor it got, so the
events stored meanwhile still arrive.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import json
import os
import socket
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from tenacity import (
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    stop_never,
    wait_exponential,
    wait_exponential_jitter,
)

from services.webhook.crypto import SECRET_PREFIX
from services.webhook.signing import signed_headers

DEFAULT_URL = "http://localhost:8080"
EVENT_WAIT_S = 30.0
STATUS_WAIT_S = 30.0
POLL_S = 0.25
ATTEMPTS = 4
APPROVED_CARD = "4242424242424242"
# A stream sends a message at least every 15 s (its keepalive); three missed ones mean it is lost.
STREAM_READ_TIMEOUT_S = 45.0
# A lost stream is reopened after a pause growing from this, with jitter, up to the max.
RECONNECT_WAIT_S = 0.5
RECONNECT_WAIT_MAX_S = 15.0
# How long a forwarded event may take to be answered by the local server.
FORWARD_TIMEOUT_S = 10.0
# Where a machine keeps its stable id (systemd); the host name serves where there is none.
MACHINE_ID_FILE = Path("/etc/machine-id")
DECLINED_CARD = "4000000000000002"
AUTHENTICATION_CARD = "4000002760003184"
# Paid, then disputed as fraudulent by the simulated card network.
DISPUTED_CARD = "4000000000000259"


class CliError(Exception):
    """What the command prints before it exits 1."""


class Api:
    """The REST API with one merchant's secret key."""

    def __init__(self, url: str, key: str, *, timeout_s: float = 30.0) -> None:
        self._client = httpx.Client(
            base_url=url.rstrip("/"),
            headers={"Authorization": f"Bearer {key}", "User-Agent": "paymesh-cli"},
            timeout=timeout_s,
        )

    def __enter__(self) -> Api:
        return self

    def __exit__(self, *_: object) -> None:
        self._client.close()

    def request(
        self, method: str, path: str, body: dict[str, Any] | None = None, **params: Any
    ) -> Any:
        """The JSON answer, or CliError with the API's error message.

        A write carries a fresh Idempotency-Key; a broken connection or a 5xx is retried a few
        times with the same key, so it is applied once.
        """
        headers = {"Idempotency-Key": f"cli-{uuid.uuid4()}"} if method != "GET" else {}
        retrying = Retrying(
            retry=retry_if_exception_type(_Retryable),
            stop=stop_after_attempt(ATTEMPTS),
            wait=wait_exponential(multiplier=0.2, max=2.0),
            reraise=True,
        )
        try:
            response: httpx.Response = retrying(self._send, method, path, body, params, headers)
        except _Retryable as error:
            raise CliError(f"{method} {path}: {error}") from error
        if response.status_code >= 400:
            raise CliError(f"{method} {path}: {response.status_code} {_message(response)}")
        return response.json()

    def _send(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None,
        params: dict[str, Any],
        headers: dict[str, str],
    ) -> httpx.Response:
        try:
            response = self._client.request(
                method, path, json=body, params=params or None, headers=headers
            )
        except httpx.TransportError as error:
            raise _Retryable(str(error)) from error
        if response.status_code >= 500 or response.status_code == 409:
            raise _Retryable(f"{response.status_code} {_message(response)}")
        return response


class _Retryable(Exception):
    """A broken connection or an answer worth repeating (5xx, or 409: key in use)."""


def _message(response: httpx.Response) -> str:
    try:
        return str(response.json()["error"]["message"])
    except (ValueError, KeyError, TypeError):
        return response.text[:200]


def _card(number: str) -> dict[str, Any]:
    return {"card": {"number": number, "exp_month": 12, "exp_year": 2035, "cvc": "123"}}


def _until(what: str, check: Callable[[], Any], timeout_s: float) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        found = check()
        if found:
            return found
        if time.monotonic() >= deadline:
            raise CliError(f"gave up waiting for {what} after {timeout_s:.0f} s")
        time.sleep(POLL_S)


def _payment(
    api: Api, out: Callable[[str], None], *, card: str | None, capture: str = "automatic"
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "amount": 2000,
        "currency": "USD",
        "capture_method": capture,
        "description": "paymesh trigger",
        "metadata": {"paymesh_trigger": "true"},
    }
    if card is not None:
        body["payment_method"] = _card(card)
    payment: dict[str, Any] = api.request("POST", "/v1/payments", body)
    out(f"created payment {payment['id']} ({payment['status']})")
    return payment


def _settled(api: Api, payment: dict[str, Any]) -> dict[str, Any]:
    """The payment once the worker has processed it."""

    def done() -> dict[str, Any] | None:
        current: dict[str, Any] = api.request("GET", f"/v1/payments/{payment['id']}")
        return current if current["status"] != "processing" else None

    settled: dict[str, Any] = _until(f"payment {payment['id']}", done, STATUS_WAIT_S)
    return settled


def _charged(api: Api, out: Callable[[str], None]) -> str:
    # Created with a card it is `processing` at once; the worker then makes it `succeeded`.
    return str(_payment(api, out, card=APPROVED_CARD)["id"])


def _failed(api: Api, out: Callable[[str], None]) -> str:
    return str(_payment(api, out, card=DECLINED_CARD)["id"])


def _requires_capture(api: Api, out: Callable[[str], None]) -> str:
    return str(_payment(api, out, card=APPROVED_CARD, capture="manual")["id"])


def _requires_action(api: Api, out: Callable[[str], None]) -> str:
    # The card asks for 3-D Secure: the payment waits at its next_action.url.
    return str(_payment(api, out, card=AUTHENTICATION_CARD)["id"])


def _canceled(api: Api, out: Callable[[str], None]) -> str:
    payment = _payment(api, out, card=None)
    canceled = api.request("POST", f"/v1/payments/{payment['id']}/cancel", {})
    out(f"canceled payment {canceled['id']}")
    return str(canceled["id"])


def _refund_succeeded(api: Api, out: Callable[[str], None]) -> str:
    payment = _settled(api, _payment(api, out, card=APPROVED_CARD))
    if payment["status"] != "succeeded":
        raise CliError(f"payment {payment['id']} ended {payment['status']}, not succeeded")
    refund = api.request("POST", "/v1/refunds", {"payment_id": payment["id"], "amount": 500})
    out(f"created refund {refund['id']} of payment {payment['id']}")
    return str(refund["id"])


def _disputed(api: Api, out: Callable[[str], None]) -> str:
    """A paid payment's dispute, once the simulated network filed it."""
    payment = _settled(api, _payment(api, out, card=DISPUTED_CARD))
    if payment["status"] != "succeeded":
        raise CliError(f"payment {payment['id']} ended {payment['status']}, not succeeded")

    def filed() -> str | None:
        page = api.request("GET", "/v1/disputes", payment_id=payment["id"])
        disputes = page.get("disputes", [])
        return str(disputes[0]["id"]) if disputes else None

    dispute_id: str = _until(f"a dispute of {payment['id']}", filed, STATUS_WAIT_S)
    out(f"payment {payment['id']} disputed: {dispute_id}")
    return dispute_id


def _dispute_won(api: Api, out: Callable[[str], None]) -> str:
    """A dispute answered with the winning test evidence (updated, closed, reinstated)."""
    dispute_id = _disputed(api, out)
    api.request(
        "POST",
        f"/v1/disputes/{dispute_id}",
        {"evidence": {"uncategorized_text": "winning_evidence"}, "submit": True},
    )
    out(f"submitted winning evidence for {dispute_id}")
    return dispute_id


# Each event type it can cause: what to create, returning the id of the event's object.
FIXTURES: dict[str, Callable[[Api, Callable[[str], None]], str]] = {
    "payment.processing": _charged,
    "payment.succeeded": _charged,
    "payment.failed": _failed,
    "payment.requires_capture": _requires_capture,
    "payment.requires_action": _requires_action,
    "payment.canceled": _canceled,
    "refund.succeeded": _refund_succeeded,
    "dispute.created": _disputed,
    "dispute.funds_withdrawn": _disputed,
    "dispute.updated": _dispute_won,
    "dispute.closed": _dispute_won,
    "dispute.funds_reinstated": _dispute_won,
}


def trigger(api: Api, event_type: str, out: Callable[[str], None]) -> str:
    """Causes one event of `event_type` in the key's mode; returns the event's id."""
    fixture = FIXTURES.get(event_type)
    if fixture is None:
        raise CliError(f"cannot trigger {event_type!r}; one of: {', '.join(sorted(FIXTURES))}")
    object_id = fixture(api, out)

    def published() -> str | None:
        page = api.request("GET", "/v1/events", type=event_type, page_size=20)
        for event in page.get("events", []):
            if event.get("data", {}).get("object", {}).get("id") == object_id:
                return str(event["id"])
        return None

    event_id: str = _until(f"a {event_type} event", published, EVENT_WAIT_S)
    out(f"event {event_id} ({event_type}) published")
    return event_id


def _out(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def _run(
    args: argparse.Namespace, command: str, action: Callable[[Api], object], *, test_only: bool
) -> int:
    """Runs `action` with the API of --url and --api-key; 1 on an API error, 2 on bad usage."""
    key = args.api_key or os.environ.get("PAYMESH_API_KEY", "")
    if not key:
        sys.stderr.write(f"paymesh {command}: no API key (--api-key or PAYMESH_API_KEY)\n")
        return 2
    if not key.startswith("sk_test_" if test_only else "sk_"):
        kind = "a test-mode secret key (sk_test_...)" if test_only else "a secret key (sk_...)"
        sys.stderr.write(f"paymesh {command}: needs {kind}\n")
        return 2
    url = args.url or os.environ.get("PAYMESH_API_URL", DEFAULT_URL)
    try:
        with Api(url, key) as api:
            action(api)
    except CliError as error:
        sys.stderr.write(f"paymesh {command}: {error}\n")
        return 1
    return 0


def cmd_trigger(args: argparse.Namespace) -> int:
    """`paymesh trigger EVENT_TYPE`."""
    return _run(args, "trigger", lambda api: trigger(api, args.event_type, _out), test_only=True)


def resend(api: Api, event_id: str, endpoint_id: str, out: Callable[[str], None]) -> list[str]:
    """Sends the event again; returns the deliveries made due."""
    body = {"endpoint_id": endpoint_id} if endpoint_id else {}
    answer = api.request("POST", f"/v1/events/{event_id}/resend", body)
    delivery_ids: list[str] = list(answer.get("delivery_ids", []))
    if delivery_ids:
        out(f"event {event_id} resent: deliveries {', '.join(delivery_ids)}")
    else:
        out(f"event {event_id}: nothing to resend (no finished delivery to an enabled endpoint)")
    return delivery_ids


def cmd_events_resend(args: argparse.Namespace) -> int:
    """`paymesh events resend EVT_ID [--endpoint WE_ID]`."""
    return _run(
        args,
        "events resend",
        lambda api: resend(api, args.event_id, args.endpoint or "", _out),
        test_only=False,
    )


def listen_secret(api_key: str, *, device: str) -> str:
    """The signing secret of `paymesh listen` for this key on this device (always the same).

    Derived, not stored: whoever holds the key can derive it, but the key itself is worth far
    more than a secret that only signs what this command forwards to a local server.
    """
    digest = hmac.new(api_key.encode(), b"paymesh listen\x00" + device.encode(), hashlib.sha256)
    return SECRET_PREFIX + base64.b64encode(digest.digest()).decode()


def this_device() -> str:
    """A stable name of this machine: its machine id, or its host name."""
    try:
        machine_id = MACHINE_ID_FILE.read_text().strip()
    except OSError:
        machine_id = ""
    return machine_id or socket.gethostname()


class _StreamLost(Exception):
    """The stream could not be opened or broke before it sent anything: try again later."""


def _sse_messages(lines: Iterator[str]) -> Iterator[dict[str, Any]]:
    """The JSON messages of a Server-Sent Events body (`data:` lines, a blank line after each)."""
    data: list[str] = []
    for line in lines:
        if line.startswith("data:"):
            data.append(line[5:].lstrip(" "))
        elif not line and data:
            yield json.loads("\n".join(data))
            data = []
    if data:
        yield json.loads("\n".join(data))


class Listener:
    """`paymesh listen`: the merchant's event stream, each event forwarded signed to a URL."""

    def __init__(
        self,
        *,
        url: str,
        api_key: str,
        forward_to: str,
        events: list[str],
        secret: str,
        out: Callable[[str], None],
    ) -> None:
        self._api = httpx.Client(
            base_url=url.rstrip("/"),
            headers={"Authorization": f"Bearer {api_key}", "User-Agent": "paymesh-cli"},
            timeout=httpx.Timeout(10.0, read=STREAM_READ_TIMEOUT_S),
        )
        self._local = httpx.Client(timeout=FORWARD_TIMEOUT_S, trust_env=False)
        self._forward_to = forward_to
        self._events = events
        self._secret = secret
        self._out = out
        self._cursor = ""
        self._ready = False
        self._stopped = threading.Event()

    def stop(self) -> None:
        """Ends `run` (from another thread) once the stream's next message or timeout comes."""
        self._stopped.set()

    def run(self) -> None:
        """Listens until stopped; CliError when the API refuses the stream (a bad key...)."""
        try:
            while not self._stopped.is_set():
                # A fresh backoff for each stream that opened and ran.
                retrying = Retrying(
                    retry=retry_if_exception_type(_StreamLost),
                    wait=wait_exponential_jitter(
                        multiplier=RECONNECT_WAIT_S, max=RECONNECT_WAIT_MAX_S
                    ),
                    stop=stop_never,
                    before_sleep=lambda state: self._out(
                        f"stream lost ({state.outcome.exception() if state.outcome else ''});"
                        " reconnecting"
                    ),
                    sleep=self._pause,
                )
                retrying(self._stream_once)
        finally:
            self._api.close()
            self._local.close()

    def _pause(self, seconds: float) -> None:
        """Tenacity's sleep, cut short by `stop`."""
        self._stopped.wait(seconds)

    def _stream_once(self) -> None:
        """Reads one stream to its end; _StreamLost when it failed before its first message."""
        if self._stopped.is_set():
            return
        params: dict[str, Any] = {"types": self._events} if self._events else {}
        if self._cursor:
            params["cursor"] = self._cursor
        received = False
        try:
            with self._api.stream(
                "GET",
                "/v1/events:stream",
                params=params,
                headers={"Accept": "text/event-stream"},
            ) as response:
                if response.status_code != 200:
                    response.read()
                    problem = f"{response.status_code} {_message(response)}"
                    if response.status_code >= 500 or response.status_code == 429:
                        raise _StreamLost(problem)
                    raise CliError(f"the stream was refused: {problem}")
                if not self._ready:
                    self._ready = True
                    self._out(
                        f"Ready! Your webhook signing secret is {self._secret} "
                        f"(forwarding to {self._forward_to}; ^C to quit)"
                    )
                for message in _sse_messages(response.iter_lines()):
                    received = True
                    if "error" in message:
                        raise _StreamLost(str(message["error"].get("message", message)))
                    self._cursor = str(message.get("cursor") or self._cursor)
                    if message.get("event"):
                        self._forward(message["event"])
                    if self._stopped.is_set():
                        return
        except (httpx.TransportError, ValueError) as error:
            if not received:
                raise _StreamLost(str(error) or type(error).__name__) from error
            self._out(f"stream lost ({error or type(error).__name__}); reconnecting")

    def _forward(self, event: dict[str, Any]) -> None:
        """POSTs the event to the local URL, signed, and prints one line of what it answered."""
        body = json.dumps(event, separators=(",", ":")).encode()
        event_id = str(event.get("id", ""))
        headers = signed_headers(
            event_id=event_id, timestamp=int(time.time()), body=body, secrets=[self._secret]
        )
        try:
            answer = str(
                self._local.post(self._forward_to, content=body, headers=headers).status_code
            )
        except httpx.HTTPError as error:
            answer = f"error: {error or type(error).__name__}"
        now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S")
        kind = event.get("type", "")
        self._out(f"{now}  --> {kind} [{event_id}]  <-- [{answer}] POST {self._forward_to}")


def cmd_listen(args: argparse.Namespace) -> int:
    """`paymesh listen --forward-to URL [--events a,b]`."""
    key = args.api_key or os.environ.get("PAYMESH_API_KEY", "")
    if not key.startswith("sk_"):
        sys.stderr.write(
            "paymesh listen: needs a secret key (sk_...): --api-key or PAYMESH_API_KEY\n"
        )
        return 2
    secret = listen_secret(key, device=this_device())
    if args.print_secret:
        _out(secret)
        return 0
    if not args.forward_to:
        sys.stderr.write("paymesh listen: --forward-to URL is required\n")
        return 2
    events = [name.strip() for name in (args.events or "").split(",") if name.strip()]
    listener = Listener(
        url=args.url or os.environ.get("PAYMESH_API_URL", DEFAULT_URL),
        api_key=key,
        forward_to=args.forward_to,
        events=events,
        secret=secret,
        out=_out,
    )
    try:
        listener.run()
    except CliError as error:
        sys.stderr.write(f"paymesh listen: {error}\n")
        return 1
    except KeyboardInterrupt:
        return 0
    return 0


def add_commands(commands: Any) -> None:
    """Adds `trigger`, `events resend` and `listen` to the `paymesh` command's subcommands."""
    listen_command = commands.add_parser(
        "listen",
        help="forward the merchant's events, signed, to a local URL (no public URL needed)",
    )
    listen_command.add_argument("--forward-to", help="the local URL to POST each event to")
    listen_command.add_argument("--events", help="only these event types, comma-separated")
    listen_command.add_argument(
        "--print-secret", action="store_true", help="print the listen signing secret and exit"
    )
    listen_command.add_argument("--url", help=f"the paymesh base URL (default {DEFAULT_URL})")
    listen_command.add_argument("--api-key", help="a secret key (or PAYMESH_API_KEY)")
    listen_command.set_defaults(client_func=cmd_listen)

    command = commands.add_parser(
        "trigger",
        help="cause a test-mode event through the API (e.g. payment.succeeded)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    command.add_argument("event_type", help=f"one of: {', '.join(sorted(FIXTURES))}")
    command.add_argument("--url", help=f"the paymesh base URL (default {DEFAULT_URL})")
    command.add_argument("--api-key", help="a test-mode secret key (or PAYMESH_API_KEY)")
    command.set_defaults(client_func=cmd_trigger)

    events = commands.add_parser("events", help="the merchant's events")
    event_commands = events.add_subparsers(dest="events_command", required=True)
    resend_command = event_commands.add_parser(
        "resend", help="send an event again to its endpoints (same webhook-id)"
    )
    resend_command.add_argument("event_id", help="the event (evt_...)")
    resend_command.add_argument("--endpoint", help="only to this endpoint (we_...)")
    resend_command.add_argument("--url", help=f"the paymesh base URL (default {DEFAULT_URL})")
    resend_command.add_argument("--api-key", help="a secret key (or PAYMESH_API_KEY)")
    resend_command.set_defaults(client_func=cmd_events_resend)
