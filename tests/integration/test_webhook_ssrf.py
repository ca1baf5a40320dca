"""The SSRF policy in the running service, with private networks NOT allowed (the default).

The shared platform allows private networks (its receivers are local), so this module runs its
own webhook service in-process on a fresh database, with the default policy, authenticating
keys through the shared platform's admin service. Attempts run in-process too (the worker's own
`run_batch`), so nothing of the shared platform's worker is involved.
"""

from __future__ import annotations

import asyncio
import ipaddress
import threading
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc
import pytest
from paymesh.webhook.v1 import (
    webhook_internal_pb2_grpc,
    webhook_pb2,
    webhook_pb2_grpc,
)
from sqlalchemy import select

from services.common.auth import ApiKeyAuthenticator
from services.common.clients import aio_channel
from services.common.db import make_engine, make_sessionmaker, transaction
from services.common.migrations import upgrade
from services.common.queue import make_queue, redis_connection
from services.common.server import create_server
from services.runtime.platform import LocalPlatform, settings_from
from services.webhook import addresses, endpoints
from services.webhook.crypto import SecretBox
from services.webhook.deliveries import RetryPolicy
from services.webhook.endpoints import Owner
from services.webhook.jobs import run_batch
from services.webhook.models import Delivery, DeliveryAttempt
from services.webhook.runtime import Runtime
from services.webhook.server import spec_for
from tests.integration.conftest import MerchantKeys, _fresh_database
from tests.integration.webhook_receiver import Receiver, publish

T = TypeVar("T")

REFUSED_URLS = [
    "http://127.0.0.1/hook",
    "http://127.9.9.9:8080/hook",
    "http://0.0.0.0/hook",
    "http://10.0.0.5/hook",
    "http://172.16.0.1/hook",
    "http://192.168.1.10/hook",
    "http://169.254.169.254/latest/meta-data",
    "http://100.64.0.1/hook",
    "http://224.0.0.1/hook",
    "http://255.255.255.255/hook",
    "http://[::1]/hook",
    "http://[::]/hook",
    "http://[::ffff:127.0.0.1]/hook",
    "http://[::ffff:169.254.169.254]/hook",
    "http://[2002:7f00:1::1]/hook",
    "http://[64:ff9b::a9fe:a9fe]/hook",
    "http://[fd00::1]/hook",
    "http://[fe80::1]/hook",
    "http://[ff02::1]/hook",
    "http://localhost:8080/hook",
    "http://2130706433/hook",
    "ftp://hooks.example.com/hook",
]


class _Loop:
    """An asyncio loop on a thread, for an in-process grpc.aio server."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout=30)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)


@dataclass(frozen=True)
class Strict:
    """The in-process webhook service with the default (strict) policy."""

    public: webhook_pb2_grpc.WebhookServiceStub
    internal: webhook_internal_pb2_grpc.WebhookInternalServiceStub
    runtime: Runtime


@pytest.fixture(scope="module")
def strict(platform: LocalPlatform) -> Iterator[Strict]:
    """A webhook service on a fresh database that refuses private destinations."""
    url = _fresh_database(platform.settings.require_database_url())
    upgrade(url, ("webhook",))
    settings = settings_from(
        {
            "PAYMESH_DATABASE_URL": url,
            "PAYMESH_REDIS_URL": platform.settings.require_redis_url(),
            "PAYMESH_SECRET_ENCRYPTION_KEY": "ssrf-test-key",
            "PAYMESH_PAGE_TOKEN_KEY": "ssrf-test-key",
            "PAYMESH_WEBHOOK_ALLOW_PRIVATE_NETWORKS": "false",
            "PAYMESH_WEBHOOK_TIMEOUT_S": "3",
        }
    )
    assert settings.webhook_allow_private_networks is False
    engine = make_engine(url, pool_size=2)
    runtime = Runtime(
        settings=settings,
        sessions=make_sessionmaker(engine),
        # A queue of its own: the shared platform's worker must not see these jobs.
        queue=make_queue("paymesh.webhooks.ssrf-test", redis_connection(settings)),
        box=SecretBox("ssrf-test-key"),
        policy=RetryPolicy(
            delays_s=(1.0,), jitter_ratio=0.1, retry_after_max_s=5, disable_after_failing_s=3600
        ),
    )
    loop = _Loop()

    async def start() -> tuple[grpc.aio.Server, int]:
        authenticator = ApiKeyAuthenticator(
            aio_channel(platform.settings.target("admin")), ttl_s=1, timeout_s=10
        )
        server, port, _ = create_server(spec_for(runtime), port=0, authenticator=authenticator)
        await server.start()
        return server, port

    server, port = loop.run(start())
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        yield Strict(
            webhook_pb2_grpc.WebhookServiceStub(channel),
            webhook_internal_pb2_grpc.WebhookInternalServiceStub(channel),
            runtime,
        )
    loop.run(server.stop(None))
    loop.close()
    runtime.queue.empty()  # type: ignore[no-untyped-call]
    runtime.queue.connection.close()
    engine.dispose()


def _create(strict: Strict, merchant: MerchantKeys, url: str) -> webhook_pb2.WebhookEndpoint:
    return strict.public.CreateWebhookEndpoint(
        webhook_pb2.CreateWebhookEndpointRequest(url=url, enabled_events=["*"]),
        metadata=(("x-api-key", merchant.secret_key),),
        timeout=15,
    )


def _listed(strict: Strict, merchant: MerchantKeys) -> list[webhook_pb2.WebhookEndpoint]:
    return list(
        strict.public.ListWebhookEndpoints(
            webhook_pb2.ListWebhookEndpointsRequest(),
            metadata=(("x-api-key", merchant.secret_key),),
            timeout=15,
        ).webhook_endpoints
    )


@pytest.mark.parametrize("url", REFUSED_URLS)
def test_registration__non_public_destinations_are_refused(
    strict: Strict, merchant: MerchantKeys, url: str
) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        _create(strict, merchant, url)

    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert _listed(strict, merchant) == []


def test_registration__a_public_destination_is_accepted(
    strict: Strict, merchant: MerchantKeys
) -> None:
    created = _create(strict, merchant, "https://93.184.216.34/hook")

    assert created.secret.startswith("whsec_")


def test_update__to_a_non_public_destination_is_refused(
    strict: Strict, merchant: MerchantKeys
) -> None:
    created = _create(strict, merchant, "https://93.184.216.34/hook")

    with pytest.raises(grpc.RpcError) as caught:
        strict.public.UpdateWebhookEndpoint(
            webhook_pb2.UpdateWebhookEndpointRequest(id=created.id, url="http://10.1.1.1/"),
            metadata=(("x-api-key", merchant.secret_key),),
            timeout=15,
        )

    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert [e.url for e in _listed(strict, merchant)] == ["https://93.184.216.34/hook"]


def _attempt_errors(strict: Strict, merchant_id: str) -> list[str]:
    """Runs the first attempt of each of the merchant's deliveries; returns the attempts' errors."""
    with transaction(strict.runtime.sessions) as session:
        delivery_ids = list(
            session.scalars(select(Delivery.id).where(Delivery.merchant_id == merchant_id))
        )
    for delivery_id in delivery_ids:
        assert run_batch(strict.runtime, attempts=[(delivery_id, 1)]) == ["failed"]
    with transaction(strict.runtime.sessions) as session:
        return list(
            session.scalars(
                select(DeliveryAttempt.error).where(DeliveryAttempt.delivery_id.in_(delivery_ids))
            )
        )


def test_connect_time__a_name_rebound_to_loopback_is_refused(
    strict: Strict, merchant: MerchantKeys, monkeypatch: pytest.MonkeyPatch
) -> None:
    with Receiver().running() as receiver:
        answer = [ipaddress.ip_address("93.184.216.34")]
        monkeypatch.setattr(addresses, "resolve", lambda host, port: answer)
        _create(strict, merchant, f"http://rebind.paymesh.test:{receiver.port}/hook")
        answer[0] = ipaddress.ip_address("127.0.0.1")  # the DNS answer changes after the check
        publish(strict.internal, merchant.id)

        errors = _attempt_errors(strict, merchant.id)

        assert len(errors) == 1
        assert errors[0].startswith("destination refused")
        assert "127.0.0.1" in errors[0]
        assert receiver.requests == []


@pytest.mark.parametrize(
    "host",
    ["127.0.0.1", "localhost", "[::ffff:127.0.0.1]", "127.1", "0.0.0.0"],  # noqa: S104
)
def test_connect_time__a_stored_loopback_url_is_refused(
    strict: Strict, merchant: MerchantKeys, host: str
) -> None:
    with Receiver().running() as receiver:
        # As if registered under an older, laxer policy: stored without the registration check.
        with transaction(strict.runtime.sessions) as session:
            endpoints.create_endpoint(
                session,
                owner=Owner(merchant.id, False),
                url=f"http://{host}:{receiver.port}/hook",
                enabled_events=["*"],
                description="",
                box=strict.runtime.box,
                allow_private=True,
            )
        publish(strict.internal, merchant.id)

        errors = _attempt_errors(strict, merchant.id)

        assert len(errors) == 1
        assert errors[0].startswith("destination refused")
        assert receiver.requests == []
