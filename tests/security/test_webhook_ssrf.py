"""Webhook SSRF against the real delivery worker, on the hardened platform (private refused).

Registration through the edge refuses private, loopback, link-local and metadata addresses. An
endpoint that got past registration anyway (a name that later resolves somewhere private, or a
row written before the policy) is stored directly here: the worker must still refuse to connect,
record a failed attempt, and the local receiver must see nothing.
"""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import httpx
import pytest
from paymesh.webhook.v1 import webhook_internal_pb2_grpc
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from services.admin import merchants
from services.common.db import transaction
from services.runtime.platform import LocalPlatform
from services.webhook import endpoints
from services.webhook.crypto import SecretBox
from services.webhook.models import Delivery, Endpoint
from tests.integration.webhook_receiver import Receiver, publish, wait_until

PRIVATE_URLS = [
    "http://127.0.0.1:8080/hook",
    "http://localhost/hook",
    "http://10.0.0.1/hook",
    "http://192.168.1.1/hook",
    "http://169.254.169.254/latest/meta-data",
    "http://[::1]/hook",
    "http://0.0.0.0/hook",
    "http://2130706433/hook",
]
ATTEMPT_TIMEOUT_S = 120.0


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    """A local receiver the worker must never reach."""
    with Receiver().running() as running:
        yield running


def _merchant(sessions: sessionmaker[Session]) -> tuple[str, str]:
    with transaction(sessions) as session:
        made = merchants.create_merchant(session, name="SSRF Shop")
        key = merchants.create_api_key(session, merchant_id=made.id, mode="test", kind="secret")
        return made.id, key.key


def test_registration__private_addresses_are_refused(
    client: httpx.Client, limited_sessions: sessionmaker[Session]
) -> None:
    merchant_id, key = _merchant(limited_sessions)
    for url in PRIVATE_URLS:
        # A fresh key per call: the hardened platform allows each key only a few a minute.
        with transaction(limited_sessions) as session:
            key = merchants.create_api_key(
                session, merchant_id=merchant_id, mode="test", kind="secret"
            ).key
        response = client.post(
            "/v1/webhook_endpoints",
            json={"url": url, "enabled_events": ["*"]},
            headers={"X-API-Key": key},
        )
        assert response.status_code == 400, (url, response.text)
    with transaction(limited_sessions) as session:
        stored = session.scalar(
            select(func.count()).select_from(Endpoint).where(Endpoint.merchant_id == merchant_id)
        )
    assert stored == 0


def test_worker__refuses_to_connect_to_a_private_address_that_got_stored(
    limited_platform: LocalPlatform,
    limited_sessions: sessionmaker[Session],
    receiver: Receiver,
) -> None:
    merchant_id, _ = _merchant(limited_sessions)
    box = SecretBox(limited_platform.settings.require_secret("secret_encryption_key"))
    with transaction(limited_sessions) as session:
        endpoint, _ = endpoints.create_endpoint(
            session,
            owner=endpoints.Owner(merchant_id, False),
            url=receiver.url("/internal"),
            enabled_events=["*"],
            description="stored before the policy",
            box=box,
            allow_private=True,
        )
        endpoint_id = endpoint.id
    with grpc.insecure_channel(limited_platform.settings.target("webhook")) as channel:
        publish(webhook_internal_pb2_grpc.WebhookInternalServiceStub(channel), merchant_id)

    def attempted() -> list[Delivery] | None:
        with transaction(limited_sessions) as session:
            listed = list(
                session.scalars(select(Delivery).where(Delivery.endpoint_id == endpoint_id))
            )
            session.expunge_all()
        return listed if listed and listed[0].attempt_count >= 1 else None

    (delivery,) = wait_until(attempted, timeout_s=ATTEMPT_TIMEOUT_S)
    assert delivery.status != "delivered"
    assert delivery.last_status_code == 0
    assert delivery.last_error
    assert receiver.received("/internal") == []
