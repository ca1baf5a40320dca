"""Delivery to a real local receiver: signatures, retries, dead letters, replay, limits."""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import standardwebhooks.webhooks
import stripe
from paymesh.webhook.v1 import webhook_internal_pb2, webhook_internal_pb2_grpc
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from services.common.clients import sync_channel
from services.runtime.platform import LocalPlatform
from tests.integration.conftest import MerchantKeys
from tests.integration.webhook_receiver import (
    Received,
    Receiver,
    Reply,
    create_endpoint,
    publish,
    wait_until,
)
from tests.rest_errors import error_code

Stub = webhook_internal_pb2_grpc.WebhookInternalServiceStub
SCHEDULE_ATTEMPTS = 4  # conftest's "1,1,1": the first attempt and three retries


@pytest.fixture(scope="module")
def internal(platform: LocalPlatform) -> Iterator[Stub]:
    """A stub of the internal webhook service."""
    channel = sync_channel(platform.settings.target("webhook"))
    yield Stub(channel)
    channel.close()


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    """A local HTTP server the platform delivers to."""
    with Receiver().running() as running:
        yield running


def _auth(merchant: MerchantKeys) -> dict[str, str]:
    return {"X-API-Key": merchant.secret_key}


def _path(name: str, merchant: MerchantKeys) -> str:
    return f"/{name}/{merchant.id}"


def _deliveries(api: httpx.Client, merchant: MerchantKeys, endpoint_id: Any) -> list[Any]:
    response = api.get(f"/v1/webhook_endpoints/{endpoint_id}/deliveries", headers=_auth(merchant))
    assert response.status_code == 200, response.text
    deliveries: list[Any] = response.json().get("deliveries", [])
    return deliveries


def _wait_delivery(
    api: httpx.Client, merchant: MerchantKeys, endpoint_id: Any, status: str
) -> dict[str, Any]:
    def probe() -> dict[str, Any] | None:
        found = _deliveries(api, merchant, endpoint_id)
        return found[0] if found and found[0]["status"] == status else None

    return wait_until(probe, timeout_s=60)


def _attempts(api: httpx.Client, merchant: MerchantKeys, delivery_id: str) -> list[Any]:
    response = api.get(f"/v1/webhook_deliveries/{delivery_id}/attempts", headers=_auth(merchant))
    assert response.status_code == 200, response.text
    attempts: list[Any] = response.json().get("attempts", [])
    return attempts


def _verify_both(request: Received, secret: str) -> None:
    """Raises unless both reference libraries accept the request."""
    Webhook(secret).verify(request.body, request.headers)
    stripe.WebhookSignature.verify_header(
        request.body.decode(), request.headers["paymesh-signature"], secret, tolerance=300
    )


def test_delivery__signed_for_both_reference_libraries(
    internal: Stub, receiver: Receiver, api: httpx.Client, merchant: MerchantKeys
) -> None:
    path = _path("signed", merchant)
    endpoint = create_endpoint(api, merchant.secret_key, receiver.url(path))
    event = publish(internal, merchant.id, obj={"id": "pay_signed", "amount": "250", "quantity": 2})

    (request,) = receiver.wait_for(path, 1)

    _verify_both(request, str(endpoint["secret"]))
    payload = json.loads(request.body)
    assert request.headers["webhook-id"] == event.id
    assert payload["id"] == event.id
    assert payload["type"] == "payment.succeeded"
    assert payload["data"]["object"] == {"id": "pay_signed", "amount": "250", "quantity": 2}
    assert isinstance(payload["data"]["object"]["quantity"], int)
    assert request.headers["content-type"] == "application/json"
    delivered = _wait_delivery(api, merchant, endpoint["id"], "delivered")
    assert delivered["event_id"] == event.id
    assert int(delivered["attempt_count"]) == 1


def test_delivery__tampered_body_fails_verification(
    internal: Stub, receiver: Receiver, api: httpx.Client, merchant: MerchantKeys
) -> None:
    path = _path("tampered", merchant)
    secret = str(create_endpoint(api, merchant.secret_key, receiver.url(path))["secret"])
    publish(internal, merchant.id, obj={"id": "pay_t", "amount": "100"})
    (request,) = receiver.wait_for(path, 1)
    tampered = request.body.replace(b'"100"', b'"999"')
    assert tampered != request.body

    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(tampered, request.headers)
    with pytest.raises(stripe.SignatureVerificationError):
        stripe.WebhookSignature.verify_header(
            tampered.decode(), request.headers["paymesh-signature"], secret, tolerance=300
        )
    with pytest.raises(WebhookVerificationError):
        Webhook("whsec_" + "A" * 43 + "=").verify(request.body, request.headers)


def test_delivery__stale_timestamp_fails_verification(
    internal: Stub,
    receiver: Receiver,
    api: httpx.Client,
    merchant: MerchantKeys,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    path = _path("stale", merchant)
    secret = str(create_endpoint(api, merchant.secret_key, receiver.url(path))["secret"])
    publish(internal, merchant.id)
    (request,) = receiver.wait_for(path, 1)
    _verify_both(request, secret)
    later = time.time() + 600

    class Later(datetime):
        @classmethod
        def now(cls, tz: Any = None) -> Later:
            return cls.fromtimestamp(later, tz=tz)

    class LaterClock:
        @staticmethod
        def time() -> float:
            return later

    # Ten minutes on, both libraries' five-minute tolerance has run out.
    monkeypatch.setattr(standardwebhooks.webhooks, "datetime", Later)
    monkeypatch.setattr(stripe._webhook, "time", LaterClock)
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(request.body, request.headers)
    with pytest.raises(stripe.SignatureVerificationError):
        stripe.WebhookSignature.verify_header(
            request.body.decode(), request.headers["paymesh-signature"], secret, tolerance=300
        )


def test_rotation__both_secrets_sign_during_the_overlap(
    internal: Stub, receiver: Receiver, api: httpx.Client, merchant: MerchantKeys
) -> None:
    path = _path("rotated", merchant)
    endpoint = create_endpoint(api, merchant.secret_key, receiver.url(path))
    rotated = api.post(
        f"/v1/webhook_endpoints/{endpoint['id']}/rotate_secret", headers=_auth(merchant), json={}
    )
    assert rotated.status_code == 200, rotated.text
    old_secret, new_secret = str(endpoint["secret"]), rotated.json()["secret"]
    assert new_secret.startswith("whsec_") and new_secret != old_secret

    publish(internal, merchant.id)
    (request,) = receiver.wait_for(path, 1)

    _verify_both(request, old_secret)
    _verify_both(request, new_secret)
    assert len(request.headers["webhook-signature"].split(" ")) == 2
    assert request.headers["paymesh-signature"].count("v1=") == 2


def test_rotation__twice_stops_the_oldest_secret(
    internal: Stub, receiver: Receiver, api: httpx.Client, merchant: MerchantKeys
) -> None:
    path = _path("rotated-twice", merchant)
    endpoint = create_endpoint(api, merchant.secret_key, receiver.url(path))
    rotate = f"/v1/webhook_endpoints/{endpoint['id']}/rotate_secret"
    second = api.post(rotate, headers=_auth(merchant), json={}).json()["secret"]
    third = api.post(rotate, headers=_auth(merchant), json={}).json()["secret"]

    publish(internal, merchant.id)
    (request,) = receiver.wait_for(path, 1)

    _verify_both(request, second)
    _verify_both(request, third)
    with pytest.raises(WebhookVerificationError):
        Webhook(str(endpoint["secret"])).verify(request.body, request.headers)
    assert len(request.headers["webhook-signature"].split(" ")) == 2


def test_retries__follow_the_schedule_until_delivered(
    internal: Stub, receiver: Receiver, api: httpx.Client, merchant: MerchantKeys
) -> None:
    path = _path("flaky", merchant)
    receiver.script(path, Reply(500, b"boom"), Reply(502), then=Reply(200, b"thanks"))
    endpoint = create_endpoint(api, merchant.secret_key, receiver.url(path))
    event = publish(internal, merchant.id)

    requests = receiver.wait_for(path, 3)
    delivered = _wait_delivery(api, merchant, endpoint["id"], "delivered")

    assert {r.headers["webhook-id"] for r in requests} == {event.id}
    # The schedule says 1 s between attempts, with at most 10% jitter either way.
    gaps = [b.time - a.time for a, b in itertools.pairwise(requests)]
    assert all(gap >= 0.85 for gap in gaps), gaps
    attempts = _attempts(api, merchant, delivered["id"])
    assert [a["status_code"] for a in attempts] == [500, 502, 200]
    assert attempts[0]["response_body"] == "boom"
    assert attempts[0]["error"] == "HTTP 500"
    assert [a["attempt_number"] for a in attempts] == [1, 2, 3]


def test_retries__dead_letter_after_the_last_attempt(
    internal: Stub, receiver: Receiver, api: httpx.Client, merchant: MerchantKeys
) -> None:
    path = _path("down", merchant)
    receiver.script(path, then=Reply(500))
    endpoint = create_endpoint(api, merchant.secret_key, receiver.url(path))
    event = publish(internal, merchant.id)

    dead = _wait_delivery(api, merchant, endpoint["id"], "dead")
    failed = internal.ListFailedDeliveries(
        webhook_internal_pb2.ListFailedDeliveriesRequest(merchant_id=merchant.id), timeout=10
    )

    assert int(dead["attempt_count"]) == SCHEDULE_ATTEMPTS
    assert len(receiver.received(path)) == SCHEDULE_ATTEMPTS
    assert [(d.id, d.event_id, d.status) for d in failed.deliveries] == [
        (dead["id"], event.id, "dead")
    ]
    assert failed.deliveries[0].job_id.startswith(dead["id"])
    stats = internal.GetDeliveryStats(
        webhook_internal_pb2.GetDeliveryStatsRequest(merchant_id=merchant.id), timeout=10
    )
    assert (stats.dead, stats.delivered, stats.pending, stats.failing) == (1, 0, 0, 0)
    # The admin overview's window and mode reach the counts: the dead delivery is a test-mode
    # one created before now.
    now = datetime.now(UTC)
    for window, dead_count in (
        ({"end_time": now}, 1),
        ({"start_time": now}, 0),
        ({"livemode": True}, 0),
        ({"livemode": False, "start_time": now - timedelta(hours=1)}, 1),
    ):
        request = webhook_internal_pb2.GetDeliveryStatsRequest(merchant_id=merchant.id)
        for name, value in window.items():
            if isinstance(value, datetime):
                getattr(request, name).FromDatetime(value)
            else:
                setattr(request, name, value)
        assert internal.GetDeliveryStats(request, timeout=10).dead == dead_count, window
    attempts = internal.ListDeliveryAttempts(
        webhook_internal_pb2.ListDeliveryAttemptsRequest(delivery_id=dead["id"]), timeout=10
    ).attempts
    assert [(a.attempt_number, a.status_code) for a in attempts] == [
        (n, 500) for n in range(1, SCHEDULE_ATTEMPTS + 1)
    ]


def test_replay__bulk_by_operators_for_a_merchant(
    internal: Stub, receiver: Receiver, api: httpx.Client, merchant: MerchantKeys
) -> None:
    path = _path("operator-bulk", merchant)
    receiver.script(path, *[Reply(500)] * SCHEDULE_ATTEMPTS, then=Reply(200))
    endpoint = create_endpoint(api, merchant.secret_key, receiver.url(path))
    event = publish(internal, merchant.id)
    dead = _wait_delivery(api, merchant, endpoint["id"], "dead")

    replayed = internal.ReplayDeliveries(
        webhook_internal_pb2.ReplayDeliveriesRequest(merchant_id=merchant.id), timeout=10
    )

    assert list(replayed.delivery_ids) == [dead["id"]]
    last = receiver.wait_for(path, SCHEDULE_ATTEMPTS + 1)[-1]
    assert last.headers["webhook-id"] == event.id
    _wait_delivery(api, merchant, endpoint["id"], "delivered")


def test_replay__by_merchant_and_by_job_id_keeps_the_webhook_id(
    internal: Stub, receiver: Receiver, api: httpx.Client, merchant: MerchantKeys
) -> None:
    path = _path("replay", merchant)
    receiver.script(path, *[Reply(500)] * SCHEDULE_ATTEMPTS, then=Reply(200))
    endpoint = create_endpoint(api, merchant.secret_key, receiver.url(path))
    secret = str(endpoint["secret"])
    event = publish(internal, merchant.id)
    dead = _wait_delivery(api, merchant, endpoint["id"], "dead")
    first = receiver.received(path)[0]

    replayed = api.post(f"/v1/webhook_deliveries/{dead['id']}/replay", headers=_auth(merchant))
    assert replayed.status_code == 200, replayed.text
    by_merchant = receiver.wait_for(path, SCHEDULE_ATTEMPTS + 1)[-1]
    _wait_delivery(api, merchant, endpoint["id"], "delivered")
    job = internal.ReplayDelivery(
        webhook_internal_pb2.ReplayDeliveryRequest(id=f"{dead['id']}-attempt-1"), timeout=10
    )
    by_operator = receiver.wait_for(path, SCHEDULE_ATTEMPTS + 2)[-1]

    assert job.id == dead["id"]
    for request in (by_merchant, by_operator):
        assert request.headers["webhook-id"] == event.id
        assert int(request.headers["webhook-timestamp"]) >= int(first.headers["webhook-timestamp"])
        assert request.body == first.body
        _verify_both(request, secret)


def test_replay__of_a_delivery_in_progress_or_of_another_merchant_is_refused(
    internal: Stub,
    receiver: Receiver,
    api: httpx.Client,
    merchant: MerchantKeys,
    other_merchant: MerchantKeys,
) -> None:
    path = _path("inprogress", merchant)
    # Two slow failures keep the delivery in progress for several seconds.
    receiver.script(path, Reply(500, delay_s=2), Reply(500, delay_s=2), then=Reply(200))
    endpoint = create_endpoint(api, merchant.secret_key, receiver.url(path))
    publish(internal, merchant.id)
    pending = wait_until(lambda: _deliveries(api, merchant, endpoint["id"]))[0]

    busy = api.post(f"/v1/webhook_deliveries/{pending['id']}/replay", headers=_auth(merchant))
    foreign = api.post(
        f"/v1/webhook_deliveries/{pending['id']}/replay", headers=_auth(other_merchant)
    )
    unknown = api.post("/v1/webhook_deliveries/whd_nope/replay", headers=_auth(merchant))

    assert busy.status_code == 400
    assert error_code(busy) == "webhook_delivery_in_progress"
    assert foreign.status_code == 404
    assert unknown.status_code == 404


def test_replay__bulk_for_an_endpoint_since_a_time(
    internal: Stub, receiver: Receiver, api: httpx.Client, merchant: MerchantKeys
) -> None:
    path = _path("bulk", merchant)
    receiver.script(path, *[Reply(500)] * (2 * SCHEDULE_ATTEMPTS), then=Reply(200))
    endpoint = create_endpoint(api, merchant.secret_key, receiver.url(path))
    since = (datetime.now(UTC) - timedelta(seconds=5)).isoformat().replace("+00:00", "Z")
    events = {publish(internal, merchant.id).id for _ in range(2)}
    wait_until(
        lambda: (
            [d["status"] for d in _deliveries(api, merchant, endpoint["id"])] == ["dead", "dead"]
        ),
        timeout_s=60,
    )

    replayed = api.post(
        f"/v1/webhook_endpoints/{endpoint['id']}/replay",
        headers=_auth(merchant),
        json={"since": since},
    )
    missing_since = api.post(
        f"/v1/webhook_endpoints/{endpoint['id']}/replay", headers=_auth(merchant), json={}
    )

    assert replayed.status_code == 200, replayed.text
    assert len(replayed.json()["delivery_ids"]) == 2
    requests = receiver.wait_for(path, 2 * SCHEDULE_ATTEMPTS + 2)
    assert {r.headers["webhook-id"] for r in requests[-2:]} == events
    assert missing_since.status_code == 400


def test_gone__410_disables_the_endpoint_and_tells_the_merchant(
    internal: Stub, receiver: Receiver, api: httpx.Client, merchant: MerchantKeys
) -> None:
    path = _path("gone", merchant)
    receiver.script(path, then=Reply(410))
    endpoint = create_endpoint(api, merchant.secret_key, receiver.url(path))
    publish(internal, merchant.id)

    dead = _wait_delivery(api, merchant, endpoint["id"], "dead")
    shown = api.get(f"/v1/webhook_endpoints/{endpoint['id']}", headers=_auth(merchant)).json()
    notices = api.get(
        "/v1/events", params={"type": "webhook_endpoint.disabled"}, headers=_auth(merchant)
    ).json()["events"]
    publish(internal, merchant.id)

    assert int(dead["attempt_count"]) == 1
    assert (shown["status"], shown["disabled_reason"]) == ("disabled", "gone")
    assert [n["data"]["object"]["id"] for n in notices] == [endpoint["id"]]
    assert len(_deliveries(api, merchant, endpoint["id"])) == 1
    assert len(receiver.received(path)) == 1


def test_redirect__is_a_failed_attempt_and_is_not_followed(
    internal: Stub, receiver: Receiver, api: httpx.Client, merchant: MerchantKeys
) -> None:
    path, elsewhere = _path("redirect", merchant), _path("elsewhere", merchant)
    receiver.script(path, Reply(302, headers={"Location": elsewhere}), then=Reply(200))
    endpoint = create_endpoint(api, merchant.secret_key, receiver.url(path))
    publish(internal, merchant.id)

    delivered = _wait_delivery(api, merchant, endpoint["id"], "delivered")
    attempts = _attempts(api, merchant, delivered["id"])

    assert [a["status_code"] for a in attempts] == [302, 200]
    assert "redirect" in attempts[0]["error"]
    assert receiver.received(elsewhere) == []


def test_slow_receiver__times_out_and_is_retried(
    internal: Stub, receiver: Receiver, api: httpx.Client, merchant: MerchantKeys
) -> None:
    path = _path("slow", merchant)
    # The shared platform's timeout is 3 s.
    receiver.script(path, Reply(200, delay_s=6), then=Reply(200))
    endpoint = create_endpoint(api, merchant.secret_key, receiver.url(path))
    publish(internal, merchant.id)

    delivered = _wait_delivery(api, merchant, endpoint["id"], "delivered")
    attempts = _attempts(api, merchant, delivered["id"])

    assert [a["status_code"] for a in attempts] == [0, 200]
    assert attempts[0]["error"].startswith("timed out")


def test_huge_response__only_the_first_2_kib_is_read(
    internal: Stub, receiver: Receiver, api: httpx.Client, merchant: MerchantKeys
) -> None:
    path = _path("huge", merchant)
    total = 512 * 1024 * 1024
    receiver.script(path, Reply(200, stream_bytes=total))
    endpoint = create_endpoint(api, merchant.secret_key, receiver.url(path))
    publish(internal, merchant.id)

    delivered = _wait_delivery(api, merchant, endpoint["id"], "delivered")
    (attempt,) = _attempts(api, merchant, delivered["id"])
    streamed = wait_until(lambda: receiver.streamed_bytes.get(path))

    assert attempt["response_body"] == "x" * 2048
    # The worker hung up long before half a gigabyte went out.
    assert streamed < total // 8


def test_retry_after__on_503_is_honoured(
    internal: Stub, receiver: Receiver, api: httpx.Client, merchant: MerchantKeys
) -> None:
    path = _path("busy", merchant)
    receiver.script(path, Reply(503, headers={"Retry-After": "3"}), then=Reply(200))
    endpoint = create_endpoint(api, merchant.secret_key, receiver.url(path))
    publish(internal, merchant.id)

    first, second = receiver.wait_for(path, 2)
    _wait_delivery(api, merchant, endpoint["id"], "delivered")

    # The schedule alone would retry after about 1 s.
    assert second.time - first.time >= 2.9


def test_subscriptions__each_endpoint_gets_only_its_event_types(
    internal: Stub,
    receiver: Receiver,
    api: httpx.Client,
    merchant: MerchantKeys,
    other_merchant: MerchantKeys,
) -> None:
    payments, everything = _path("payments", merchant), _path("everything", merchant)
    theirs = _path("theirs", other_merchant)
    create_endpoint(api, merchant.secret_key, receiver.url(payments), ["payment.succeeded"])
    create_endpoint(api, merchant.secret_key, receiver.url(everything), ["*"])
    create_endpoint(api, other_merchant.secret_key, receiver.url(theirs), ["*"])

    refund = publish(internal, merchant.id, event_type="refund.succeeded")
    payment = publish(internal, merchant.id, event_type="payment.succeeded")
    live = publish(internal, merchant.id, livemode=True)
    received = receiver.wait_for(everything, 2)
    receiver.wait_for(payments, 1)

    assert [r.headers["webhook-id"] for r in receiver.received(payments)] == [payment.id]
    assert {r.headers["webhook-id"] for r in received} == {refund.id, payment.id}
    assert live.id not in {r.headers["webhook-id"] for r in receiver.requests}
    assert receiver.received(theirs) == []


def test_disabled_endpoint__gets_nothing_and_replay_needs_it_enabled(
    internal: Stub, receiver: Receiver, api: httpx.Client, merchant: MerchantKeys
) -> None:
    path = _path("paused", merchant)
    endpoint = create_endpoint(api, merchant.secret_key, receiver.url(path))
    publish(internal, merchant.id)
    delivered = _wait_delivery(api, merchant, endpoint["id"], "delivered")
    disabled = api.patch(
        f"/v1/webhook_endpoints/{endpoint['id']}", headers=_auth(merchant), json={"enabled": False}
    )

    publish(internal, merchant.id)
    refused = api.post(f"/v1/webhook_deliveries/{delivered['id']}/replay", headers=_auth(merchant))

    assert disabled.json()["status"] == "disabled"
    assert refused.status_code == 400
    assert error_code(refused) == "webhook_endpoint_not_enabled"
    assert len(_deliveries(api, merchant, endpoint["id"])) == 1
    assert len(receiver.received(path)) == 1


def test_end_to_end__a_card_payment_reaches_the_merchant_signed(
    receiver: Receiver, api: httpx.Client, merchant: MerchantKeys
) -> None:
    path = _path("payments-e2e", merchant)
    endpoint = create_endpoint(api, merchant.secret_key, receiver.url(path), ["payment.succeeded"])
    card = {
        "number": "4242424242424242",
        "exp_month": 12,
        "exp_year": datetime.now(UTC).year + 3,
        "cvc": "123",
    }
    created = api.post(
        "/v1/payments",
        headers={**_auth(merchant), "Idempotency-Key": f"e2e-{merchant.id}"},
        json={"amount": 1000, "currency": "USD", "payment_method": {"card": card}},
    )
    assert created.status_code == 200, created.text

    (request,) = receiver.wait_for(path, 1, timeout_s=60)

    _verify_both(request, str(endpoint["secret"]))
    payload = json.loads(request.body)
    assert payload["type"] == "payment.succeeded"
    assert payload["data"]["object"]["id"] == created.json()["id"]
    assert "4242424242424242" not in request.body.decode()
