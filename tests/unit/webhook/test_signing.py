"""Signature headers, checked with the public reference libraries; secrets and their storage."""

from __future__ import annotations

import base64
import time

import pytest
import stripe
from cryptography.exceptions import InvalidTag
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from services.webhook.crypto import SecretBox, new_secret
from services.webhook.signing import signed_headers

BODY = b'{"id":"evt_1","type":"payment.succeeded","data":{"object":{"id":"pay_1"}}}'


def _verify(headers: dict[str, str], body: bytes, secret: str) -> None:
    Webhook(secret).verify(body, headers)
    stripe.WebhookSignature.verify_header(
        body.decode(), headers["Paymesh-Signature"], secret, tolerance=300
    )


def test_signed_headers__verify_with_both_libraries() -> None:
    secret = new_secret()
    headers = signed_headers(
        event_id="evt_1", timestamp=int(time.time()), body=BODY, secrets=[secret]
    )

    _verify(headers, BODY, secret)
    assert headers["webhook-id"] == "evt_1"


def test_signed_headers__every_active_secret_signs() -> None:
    old, new, stranger = new_secret(), new_secret(), new_secret()
    headers = signed_headers(
        event_id="evt_1", timestamp=int(time.time()), body=BODY, secrets=[new, old]
    )

    _verify(headers, BODY, old)
    _verify(headers, BODY, new)
    with pytest.raises(WebhookVerificationError):
        Webhook(stranger).verify(BODY, headers)
    with pytest.raises(stripe.SignatureVerificationError):
        stripe.WebhookSignature.verify_header(
            BODY.decode(), headers["Paymesh-Signature"], stranger, tolerance=300
        )


def test_signed_headers__another_event_id_or_timestamp_does_not_verify() -> None:
    secret = new_secret()
    now = int(time.time())
    headers = signed_headers(event_id="evt_1", timestamp=now, body=BODY, secrets=[secret])

    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(BODY, {**headers, "webhook-id": "evt_2"})
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(BODY, {**headers, "webhook-timestamp": str(now - 1)})


def test_new_secret__is_whsec_and_32_random_bytes() -> None:
    secret = new_secret()

    assert secret.startswith("whsec_")
    assert len(base64.b64decode(secret.removeprefix("whsec_"))) == 32
    assert new_secret() != secret


def test_secret_box__round_trips_and_binds_the_endpoint() -> None:
    box = SecretBox("master-key")
    secret = new_secret()
    blob = box.encrypt(secret, endpoint_id="we_1")

    assert box.decrypt(blob, endpoint_id="we_1") == secret
    assert secret.encode() not in blob
    assert box.encrypt(secret, endpoint_id="we_1") != blob  # a fresh nonce each time
    with pytest.raises(InvalidTag):
        box.decrypt(blob, endpoint_id="we_2")
    with pytest.raises(InvalidTag):
        SecretBox("another-key").decrypt(blob, endpoint_id="we_1")
    assert "master-key" not in repr(box)
