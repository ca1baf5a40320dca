"""Per-key rate limits and the throttle of failed authentications, on the hardened platform.

Its limits are tiny (a handful of calls per minute) so a test reaches them on purpose; the
shared platform keeps the generous defaults and is never throttled by these tests.
"""

from __future__ import annotations

import json
import secrets
import signal
import time

import httpx
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from services.admin import merchants
from services.common.api_keys import generate_key
from services.common.db import transaction
from services.payment.models import IdempotencyKey, Payment
from services.runtime.platform import LocalPlatform
from tests.rest_errors import error_code
from tests.security.conftest import AUTH_FAILURES_MAX, KEY_CALLS_MAX, KEY_WINDOW_S

UNBLOCK_TIMEOUT_S = 60.0


def new_merchant(sessions: sessionmaker[Session]) -> tuple[str, str, str]:
    """A merchant with two test-mode secret keys: (merchant id, key, second key)."""
    with transaction(sessions) as session:
        made = merchants.create_merchant(session, name="Limited Shop")
        keys = [
            merchants.create_api_key(session, merchant_id=made.id, mode="test", kind="secret").key
            for _ in range(2)
        ]
        return made.id, keys[0], keys[1]


def calls_until_limited(client: httpx.Client, key: str, *, calls_max: int) -> int:
    """Lists payments until the first 429; returns how many calls succeeded before it."""
    for count in range(calls_max + 1):
        response = client.get("/v1/payments", headers={"X-API-Key": key})
        if response.status_code == 429:
            return count
        assert response.status_code == 200, response.text
    raise AssertionError(f"no 429 after {calls_max + 1} calls")


def test_key_limit__429_with_retry_after_and_nothing_stored(
    client: httpx.Client, limited_sessions: sessionmaker[Session]
) -> None:
    merchant_id, key, other_key = new_merchant(limited_sessions)
    assert calls_until_limited(client, key, calls_max=KEY_CALLS_MAX) == KEY_CALLS_MAX
    idempotency_key = secrets.token_hex(8)
    response = client.post(
        "/v1/payments",
        json={"amount": "1000", "currency": "USD"},
        headers={"X-API-Key": key, "Idempotency-Key": idempotency_key},
    )
    assert response.status_code == 429, response.text
    retry_after = int(response.headers["retry-after"])
    assert 1 <= retry_after <= KEY_WINDOW_S
    assert error_code(response) == "rate_limited"
    with transaction(limited_sessions) as session:
        stored_keys = session.scalar(
            select(func.count())
            .select_from(IdempotencyKey)
            .where(IdempotencyKey.key == idempotency_key)
        )
        payments = session.scalar(
            select(func.count()).select_from(Payment).where(Payment.merchant_id == merchant_id)
        )
    assert (stored_keys, payments) == (0, 0)
    # The limit is per key: the merchant's other key still works.
    assert client.get("/v1/payments", headers={"X-API-Key": other_key}).status_code == 200


def test_key_limit__a_merchant_can_have_its_own_limit(
    client: httpx.Client,
    limited_platform: LocalPlatform,
    limited_sessions: sessionmaker[Session],
) -> None:
    special_id, special_key, _ = new_merchant(limited_sessions)
    _, plain_key, _ = new_merchant(limited_sessions)
    limited_platform.variables["PAYMESH_API_RATE_LIMIT_MERCHANTS"] = json.dumps(
        {special_id: f"2 per {KEY_WINDOW_S} second"}
    )
    limited_platform.kill("payment", signal.SIGTERM)
    limited_platform.start_process("payment")
    limited_platform.wait_healthy(timeout_s=90)
    assert calls_until_limited(client, special_key, calls_max=KEY_CALLS_MAX) == 2
    assert calls_until_limited(client, plain_key, calls_max=KEY_CALLS_MAX) == KEY_CALLS_MAX


def test_auth_failures__repeated_bad_keys_are_throttled_then_let_through_again(
    client: httpx.Client, limited_sessions: sessionmaker[Session]
) -> None:
    _, key, _ = new_merchant(limited_sessions)
    codes = [
        client.get(
            "/v1/payments", headers={"X-API-Key": generate_key(kind="secret", mode="test")}
        ).status_code
        for _ in range(AUTH_FAILURES_MAX + 2)
    ]
    assert 401 in codes
    assert codes[-1] == 429, codes
    refused = client.get("/v1/payments", headers={"X-API-Key": "sk_test_nonsense"})
    assert refused.status_code == 429
    assert error_code(refused) == "auth_failures_rate_limited"
    assert int(refused.headers["retry-after"]) >= 1
    # The block lifts once the window has passed.
    deadline = time.monotonic() + UNBLOCK_TIMEOUT_S
    while client.get("/v1/payments", headers={"X-API-Key": key}).status_code == 429:
        assert time.monotonic() < deadline, "still throttled"
        time.sleep(0.5)
