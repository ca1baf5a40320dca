"""`paymesh trigger` and `paymesh events resend` against the live platform, as an integrator runs
them (issue 15, point 5)."""

from __future__ import annotations

import json
import re
import socket
import threading
from collections.abc import Iterator
from contextlib import suppress
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from standardwebhooks.webhooks import Webhook

from services.runtime import cli, merchant_cli
from services.runtime.platform import LocalPlatform
from tests.integration.conftest import MerchantKeys
from tests.integration.test_payments import card, created, wait_for
from tests.integration.webhook_receiver import Received, Receiver, create_endpoint, wait_until


def _trigger(
    capsys: pytest.CaptureFixture[str], platform: LocalPlatform, key: str, event_type: str
) -> tuple[int, str, str]:
    code = cli.main(["trigger", event_type, "--url", platform.base_url, "--api-key", key])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize("event_type", sorted(merchant_cli.FIXTURES))
def test_trigger__causes_the_event_and_prints_its_id(
    event_type: str,
    capsys: pytest.CaptureFixture[str],
    platform: LocalPlatform,
    api: httpx.Client,
    merchant: MerchantKeys,
) -> None:
    code, out, err = _trigger(capsys, platform, merchant.secret_key, event_type)
    assert code == 0, err
    match = re.search(rf"event (evt_\w+) \({re.escape(event_type)}\) published", out)
    assert match, out
    event = api.get(f"/v1/events/{match[1]}", headers={"X-API-Key": merchant.secret_key})
    assert event.status_code == 200, event.text
    assert event.json()["type"] == event_type
    assert event.json()["livemode"] is False
    # The object it made is the merchant's, in test mode, and named in the output.
    assert event.json()["data"]["object"]["id"] in out


def test_trigger__refuses_what_it_cannot_do_and_writes_nothing(
    capsys: pytest.CaptureFixture[str],
    platform: LocalPlatform,
    api: httpx.Client,
    merchant: MerchantKeys,
) -> None:
    headers = {"X-API-Key": merchant.secret_key}
    code, _, err = _trigger(capsys, platform, merchant.secret_key, "payment.exploded")
    assert code == 1 and "cannot trigger 'payment.exploded'" in err
    code, _, err = _trigger(capsys, platform, "sk_test_" + "x" * 32, "payment.succeeded")
    assert code == 1 and "401" in err, err
    # A publishable key, or a live one, is refused before any call.
    code, _, err = _trigger(capsys, platform, merchant.publishable_key, "payment.succeeded")
    assert code == 2 and "test-mode secret key" in err
    code = cli.main(["trigger", "payment.succeeded", "--url", "http://127.0.0.1:9"])
    assert code == 2
    assert api.get("/v1/payments", headers=headers).json().get("payments", []) == []


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver().running() as running:
        yield running


def _delivered(api: httpx.Client, merchant: MerchantKeys, endpoint_id: str) -> Any:
    def probe() -> Any:
        listed = api.get(
            f"/v1/webhook_endpoints/{endpoint_id}/deliveries",
            headers={"X-API-Key": merchant.secret_key},
        ).json()["deliveries"]
        return listed if listed and all(d["status"] == "delivered" for d in listed) else None

    return wait_until(probe)


def test_events_resend__sends_the_event_again_with_its_webhook_id(
    *,
    capsys: pytest.CaptureFixture[str],
    platform: LocalPlatform,
    api: httpx.Client,
    merchant: MerchantKeys,
    other_merchant: MerchantKeys,
    receiver: Receiver,
) -> None:
    path = f"/resend/{merchant.id}"
    endpoint = create_endpoint(api, merchant.secret_key, receiver.url(path), ["payment.failed"])
    other = create_endpoint(
        api, merchant.secret_key, receiver.url(path + "/other"), ["refund.succeeded"]
    )
    code, out, err = _trigger(capsys, platform, merchant.secret_key, "payment.failed")
    assert code == 0, err
    event_id = re.search(r"event (evt_\w+)", out)[1]  # type: ignore[index]
    [first] = receiver.wait_for(path, 1)
    [delivery] = _delivered(api, merchant, str(endpoint["id"]))
    base = ["--url", platform.base_url, "--api-key", merchant.secret_key]

    assert cli.main(["events", "resend", event_id, *base]) == 0
    assert f"event {event_id} resent: deliveries {delivery['id']}" in capsys.readouterr().out
    again = receiver.wait_for(path, 2)[-1]
    assert again.headers["webhook-id"] == first.headers["webhook-id"] == event_id
    assert again.body == first.body
    _delivered(api, merchant, str(endpoint["id"]))

    # To one endpoint: the one it went to works; one it never went to is a 404.
    assert cli.main(["events", "resend", event_id, "--endpoint", str(endpoint["id"]), *base]) == 0
    capsys.readouterr()
    assert receiver.wait_for(path, 3)
    code = cli.main(["events", "resend", event_id, "--endpoint", str(other["id"]), *base])
    assert code == 1 and "404" in capsys.readouterr().err
    # Unknown events and other merchants' events are not found; nothing is sent.
    for key, event in ((merchant.secret_key, "evt_unknown"), (other_merchant.secret_key, event_id)):
        code = cli.main(["events", "resend", event, "--url", platform.base_url, "--api-key", key])
        assert code == 1 and "404" in capsys.readouterr().err
    _delivered(api, merchant, str(endpoint["id"]))
    assert len(receiver.received(path)) == 3
    assert receiver.received(path + "/other") == []


def test_resend_over_rest__is_idempotent_under_a_key(
    api: httpx.Client, merchant: MerchantKeys, receiver: Receiver
) -> None:
    path = f"/resend-keyed/{merchant.id}"
    endpoint = create_endpoint(api, merchant.secret_key, receiver.url(path), ["payment.canceled"])
    headers = {"X-API-Key": merchant.secret_key}
    created = api.post("/v1/payments", json={"amount": 100, "currency": "USD"}, headers=headers)
    canceled = api.post(f"/v1/payments/{created.json()['id']}/cancel", json={}, headers=headers)
    assert canceled.status_code == 200, canceled.text
    [first] = receiver.wait_for(path, 1)
    event_id = first.headers["webhook-id"]
    _delivered(api, merchant, str(endpoint["id"]))
    keyed = {**headers, "Idempotency-Key": f"resend-{event_id}"}

    once = api.post(f"/v1/events/{event_id}/resend", json={}, headers=keyed)
    assert once.status_code == 200, once.text
    assert len(once.json()["delivery_ids"]) == 1
    replayed = api.post(f"/v1/events/{event_id}/resend", json={}, headers=keyed)
    assert replayed.headers.get("idempotent-replayed") == "true"
    assert replayed.json() == once.json()
    receiver.wait_for(path, 2)
    _delivered(api, merchant, str(endpoint["id"]))
    assert len(receiver.received(path)) == 2
    # Bad input: an unknown member is refused before anything runs.
    bad = api.post(f"/v1/events/{event_id}/resend", json={"endpoint": "we_x"}, headers=headers)
    assert bad.status_code == 400, bad.text


@dataclass(frozen=True)
class LocalPlatformUrl:
    """Where a listener reaches the API (the platform's edge, or a proxy in front of it)."""

    base_url: str


def _at_least(items: list[Received], count: int) -> list[Received] | None:
    return items if len(items) >= count else None


class _Listening:
    """`paymesh listen` run in a thread, its printed lines collected."""

    def __init__(
        self, platform: LocalPlatform | LocalPlatformUrl, key: str, forward_to: str, events: str
    ) -> None:
        self.lines: list[str] = []
        self.secret = merchant_cli.listen_secret(key, device=merchant_cli.this_device())
        self.listener = merchant_cli.Listener(
            url=platform.base_url,
            api_key=key,
            forward_to=forward_to,
            events=[name for name in events.split(",") if name],
            secret=self.secret,
            out=self.lines.append,
        )
        self.thread = threading.Thread(target=self.listener.run, daemon=True)

    def __enter__(self) -> _Listening:
        self.thread.start()
        wait_until(lambda: any(line.startswith("Ready!") for line in self.lines))
        return self

    def __exit__(self, *_: object) -> None:
        self.listener.stop()
        # It ends at the stream's next message: a keepalive comes every 15 s.
        self.thread.join(timeout=30)
        assert not self.thread.is_alive()


def _payment_events(receiver: Receiver, path: str, payment_id: str) -> list[Received]:
    return [
        received
        for received in receiver.received(path)
        if json.loads(received.body)["data"]["object"]["id"] == payment_id
    ]


def test_listen__forwards_a_real_payments_events_signed_with_the_printed_secret(
    *,
    capsys: pytest.CaptureFixture[str],
    platform: LocalPlatform,
    api: httpx.Client,
    merchant: MerchantKeys,
    receiver: Receiver,
) -> None:
    everything, succeeded = f"/listen/{merchant.id}/all", f"/listen/{merchant.id}/succeeded"
    with (
        _Listening(platform, merchant.secret_key, receiver.url(everything), "") as listening,
        _Listening(
            platform, merchant.secret_key, receiver.url(succeeded), "payment.succeeded"
        ) as filtered,
    ):
        # The secret it prints is the one --print-secret prints: stable for this key and device.
        assert f"Ready! Your webhook signing secret is {listening.secret} " in listening.lines[0]
        code = cli.main(["listen", "--print-secret", "--api-key", merchant.secret_key])
        assert code == 0 and capsys.readouterr().out.strip() == listening.secret
        assert listening.secret.startswith("whsec_")

        # A real payment through the edge: created, then confirmed with a card.
        headers = {"X-API-Key": merchant.secret_key}
        payment = created(api, merchant.secret_key, amount=1500, currency="EUR")
        confirmed = api.post(
            f"/v1/payments/{payment['id']}/confirm",
            headers=headers,
            json={"payment_method": {"card": card()}},
        )
        assert confirmed.status_code == 200, confirmed.text
        wait_for(api, merchant.secret_key, payment["id"], {"succeeded"})

        forwarded = wait_until(
            lambda: _at_least_types(
                _payment_events(receiver, everything, payment["id"]),
                {"payment.processing", "payment.succeeded"},
            )
        )
        for received in forwarded:
            event = Webhook(listening.secret).verify(received.body, received.headers)
            assert received.headers["webhook-id"] == event["id"]
            assert event["data"]["object"]["id"] == payment["id"]
            stored = api.get(f"/v1/events/{event['id']}", headers=headers).json()
            assert stored == event
            # One status line per event: its type, id, and the local server's answer.
            assert any(
                f"{event['type']} [{event['id']}]" in line and "[200]" in line
                for line in listening.lines
            ), listening.lines

        # The filtered listener forwards payment.succeeded only.
        [only] = wait_until(lambda: _payment_events(receiver, succeeded, payment["id"]))
        assert json.loads(only.body)["type"] == "payment.succeeded"
        Webhook(filtered.secret).verify(only.body, only.headers)
    assert [json.loads(r.body)["type"] for r in receiver.received(succeeded)] == [
        "payment.succeeded"
    ]


def _at_least_types(received: list[Received], types: set[str]) -> list[Received] | None:
    found = {json.loads(r.body)["type"] for r in received}
    return received if types <= found else None


def _stream_messages(
    api: httpx.Client, key: str, *, count: int, **params: Any
) -> list[dict[str, Any]]:
    """The first `count` messages of an event stream opened through the edge."""
    messages: list[dict[str, Any]] = []
    with api.stream(
        "GET", "/v1/events:stream", params=params, headers={"X-API-Key": key}, timeout=30
    ) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if line.startswith("data:"):
                messages.append(json.loads(line[5:]))
                if len(messages) == count:
                    break
    return messages


def test_event_stream__resumes_from_a_cursor_with_what_was_stored_meanwhile(
    api: httpx.Client, merchant: MerchantKeys, other_merchant: MerchantKeys, receiver: Receiver
) -> None:
    headers = {"X-API-Key": merchant.secret_key}
    # Opened, it says so at once with a message without an event, and its cursor.
    [hello] = _stream_messages(api, merchant.secret_key, count=1)
    assert "event" not in hello or not hello["event"]
    assert hello["cursor"]
    # While no stream is open, two events are stored.
    endpoint = create_endpoint(api, merchant.secret_key, receiver.url(f"/stream/{merchant.id}"))
    sent = [
        api.post(
            f"/v1/webhook_endpoints/{endpoint['id']}/test", headers=headers, json={"type": kind}
        ).json()["event_id"]
        for kind in ("payment.failed", "refund.succeeded")
    ]
    # Reopened from the cursor, the stream starts with them, in order.
    resumed = _stream_messages(api, merchant.secret_key, count=2, cursor=hello["cursor"])
    assert [m["event"]["id"] for m in resumed] == sent
    # Filtered by type, it skips the other.
    [only] = _stream_messages(
        api, merchant.secret_key, count=1, cursor=hello["cursor"], types="refund.succeeded"
    )
    assert only["event"]["id"] == sent[1]
    # Another merchant cannot use the cursor, and an unknown type is refused.
    with api.stream(
        "GET",
        "/v1/events:stream",
        params={"cursor": hello["cursor"]},
        headers={"X-API-Key": other_merchant.secret_key},
    ) as response:
        response.read()
        assert response.status_code == 400, response.text
        assert response.json()["error"]["param"] == "cursor"
    with api.stream(
        "GET", "/v1/events:stream", params={"types": "payment.exploded"}, headers=headers
    ) as response:
        response.read()
        assert response.status_code == 400 and response.json()["error"]["param"] == "types"


def test_listen__refuses_bad_and_publishable_keys(
    capsys: pytest.CaptureFixture[str],
    platform: LocalPlatform,
    api: httpx.Client,
    merchant: MerchantKeys,
) -> None:
    forward = ["--forward-to", "http://127.0.0.1:9/hooks", "--url", platform.base_url]
    code = cli.main(["listen", *forward, "--api-key", "sk_test_" + "x" * 32])
    assert code == 1 and "401" in capsys.readouterr().err
    code = cli.main(["listen", *forward, "--api-key", merchant.publishable_key])
    assert code == 2 and "secret key" in capsys.readouterr().err
    # The edge refuses the stream to a publishable key, and to no key, before it opens.
    for headers in ({"X-API-Key": merchant.publishable_key}, {}):
        with api.stream("GET", "/v1/events:stream", headers=headers) as response:
            response.read()
            assert response.status_code in (401, 403), response.text


class _CuttableProxy:
    """A TCP proxy to the edge whose connections the test can cut, and which can stay down."""

    def __init__(self, target_port: int) -> None:
        self._target_port = target_port
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = self._server.getsockname()[1]
        self._up = threading.Event()
        self._up.set()
        self._open: list[socket.socket] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            if not self._up.is_set():
                client.close()  # down: the connection is refused as soon as it is made
                continue
            upstream = socket.create_connection(("127.0.0.1", self._target_port))
            with self._lock:
                self._open += [client, upstream]
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        with suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        with suppress(OSError):
            sink.shutdown(socket.SHUT_WR)

    def down(self) -> None:
        """Cuts every open connection and refuses new ones until `up`."""
        self._up.clear()
        with self._lock:
            for connection in self._open:
                with suppress(OSError):
                    connection.shutdown(socket.SHUT_RDWR)
                connection.close()
            self._open.clear()

    def up(self) -> None:
        """Takes connections again."""
        self._up.set()

    def close(self) -> None:
        """Stops it."""
        self.down()
        self._server.close()


def test_listen__reconnects_and_forwards_what_was_stored_while_it_was_cut_off(
    platform: LocalPlatform, api: httpx.Client, merchant: MerchantKeys, receiver: Receiver
) -> None:
    path = f"/listen-resume/{merchant.id}"
    proxy = _CuttableProxy(httpx.URL(platform.base_url).port or 80)
    proxied = LocalPlatformUrl(f"http://127.0.0.1:{proxy.port}")
    endpoint = create_endpoint(api, merchant.secret_key, receiver.url(f"{path}/endpoint"))
    headers = {"X-API-Key": merchant.secret_key}
    try:
        with _Listening(proxied, merchant.secret_key, receiver.url(path), "") as listening:
            proxy.down()
            sent = [
                api.post(
                    f"/v1/webhook_endpoints/{endpoint['id']}/test",
                    headers=headers,
                    json={"type": kind},
                ).json()["event_id"]
                for kind in ("payment.canceled", "refund.failed")
            ]
            wait_until(lambda: any("reconnecting" in line for line in listening.lines))
            proxy.up()
            forwarded = wait_until(lambda: _at_least(receiver.received(path), 2))
            assert [r.headers["webhook-id"] for r in forwarded] == sent
            for received in forwarded:
                Webhook(listening.secret).verify(received.body, received.headers)
    finally:
        proxy.close()
