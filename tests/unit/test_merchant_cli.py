"""`paymesh listen`'s pieces that need no platform: its secret and its reading of the stream."""

from __future__ import annotations

import json
import time

from standardwebhooks.webhooks import Webhook

from services.runtime import merchant_cli
from services.webhook.signing import signed_headers


def test_listen_secret__stable_per_key_and_device_and_usable_by_standard_webhooks() -> None:
    secret = merchant_cli.listen_secret("sk_test_a", device="laptop")
    assert secret == merchant_cli.listen_secret("sk_test_a", device="laptop")
    assert secret != merchant_cli.listen_secret("sk_test_a", device="desktop")
    assert secret != merchant_cli.listen_secret("sk_test_b", device="laptop")
    assert secret.startswith("whsec_")
    body = b'{"id":"evt_1"}'
    headers = signed_headers(
        event_id="evt_1", timestamp=int(time.time()), body=body, secrets=[secret]
    )
    assert Webhook(secret).verify(body, headers) == {"id": "evt_1"}


def test_sse_messages__one_json_message_per_data_block() -> None:
    first, second = {"cursor": "a"}, {"event": {"id": "evt_1"}, "cursor": "b"}
    lines = [
        f"data: {json.dumps(first)}",
        "",
        ": a comment",
        f"data: {json.dumps(second)}",
        "",
    ]
    assert list(merchant_cli._sse_messages(iter(lines))) == [first, second]
