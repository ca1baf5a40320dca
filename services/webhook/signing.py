"""Signature headers of a webhook request: Standard Webhooks and a Stripe-style header.

- `webhook-signature: v1,<base64 HMAC-SHA256 over "{id}.{timestamp}.{body}">`, keyed with the
  base64-decoded part of the secret after `whsec_` (the Standard Webhooks scheme);
- `Paymesh-Signature: t=<timestamp>,v1=<hex HMAC-SHA256 over "{timestamp}.{body}">`, keyed with
  the secret string itself (the scheme Stripe's libraries verify).

While a rotation overlaps, every active secret signs: one `v1` entry per secret in each header.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

from services.webhook.crypto import SECRET_PREFIX

USER_AGENT = "paymesh-webhooks/1.0"


def standard_signature(*, secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    """`v1,<base64 signature>` in the Standard Webhooks scheme."""
    key = base64.b64decode(secret.removeprefix(SECRET_PREFIX))
    digest = hmac.new(key, f"{message_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def stripe_signature(*, secret: str, timestamp: int, body: bytes) -> str:
    """The hex signature of the Stripe-style scheme."""
    return hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


def signed_headers(
    *, event_id: str, timestamp: int, body: bytes, secrets: list[str]
) -> dict[str, str]:
    """Every header of a webhook request; `secrets` are the endpoint's active secrets."""
    assert secrets, "an endpoint always has a current secret"
    standard = " ".join(
        standard_signature(secret=s, message_id=event_id, timestamp=timestamp, body=body)
        for s in secrets
    )
    stripe_style = ",".join(
        [f"t={timestamp}"]
        + [f"v1={stripe_signature(secret=s, timestamp=timestamp, body=body)}" for s in secrets]
    )
    return {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        "webhook-id": event_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": standard,
        "Paymesh-Signature": stripe_style,
    }
