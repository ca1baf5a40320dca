"""`paymesh trigger` and `paymesh events resend` against the live platform, as an integrator runs
them (issue 15, point 5)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from services.runtime import cli, merchant_cli
from services.runtime.platform import LocalPlatform
from tests.integration.conftest import MerchantKeys
from tests.integration.webhook_receiver import Receiver, create_endpoint, wait_until


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
