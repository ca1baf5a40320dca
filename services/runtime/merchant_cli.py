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
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import uuid
from collections.abc import Callable
from typing import Any

import httpx
from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential

DEFAULT_URL = "http://localhost:8080"
EVENT_WAIT_S = 30.0
STATUS_WAIT_S = 30.0
POLL_S = 0.25
ATTEMPTS = 4
APPROVED_CARD = "4242424242424242"
DECLINED_CARD = "4000000000000002"


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


# Each event type it can cause: what to create, returning the id of the event's object.
FIXTURES: dict[str, Callable[[Api, Callable[[str], None]], str]] = {
    "payment.processing": _charged,
    "payment.succeeded": _charged,
    "payment.failed": _failed,
    "payment.requires_capture": _requires_capture,
    "payment.canceled": _canceled,
    "refund.succeeded": _refund_succeeded,
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


def add_commands(commands: Any) -> None:
    """Adds `trigger` and `events resend` to the `paymesh` command's subcommands."""
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
