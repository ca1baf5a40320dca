"""Tenant isolation, generated from the descriptors: every id-taking method, every object kind.

Merchant A makes one object of every kind (payment, refund, webhook endpoint, delivery, event);
merchant B then calls every public method that takes an id with A's ids, over REST and over
gRPC through the edge, and gets "not found"; A's objects read the same before and after. The
same holds for A's own test-mode key against A's live-mode objects, and for merchant users'
sessions (the merchant dashboard's credential): B's admin, and A's admin in test mode. A new
id-taking method whose object kind has no factory here fails
`test_every_id_taking_method_has_an_object_to_aim_at`. The event stream
(`GET /v1/events:stream`) takes no id: it carries only its key's merchant's events of its key's
mode, and a cursor opens nothing for another merchant or mode.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from contextlib import suppress
from dataclasses import dataclass
from typing import Any

import grpc
import httpx
import pytest
from google.protobuf import json_format
from sqlalchemy.orm import Session, sessionmaker

from services.admin import merchants
from services.common.auth import USER_SESSION_TOKEN_PREFIX
from services.common.db import transaction
from services.runtime.platform import LocalPlatform
from tests.conftest import user_login
from tests.integration.test_payments import card, created, wait_for
from tests.integration.webhook_receiver import Receiver, create_endpoint, wait_until
from tests.security.contracts import CLIENT_SECRET_METHODS, RestMethod, merchant_methods

SETTLE_TIMEOUT_S = 120.0
# Paid, then the cardholder's bank opens an inquiry (a dispute that moves no money).
INQUIRY_CARD = "4000000000001976"
PAYOUT_AMOUNT = 100
# The collection a path's `{id}` sits in, or the `<kind>_id` field name, -> the object kind.
KIND_OF = {
    "payments": "payment",
    "checkout": "payment",
    "payment": "payment",
    "refunds": "refund",
    "refund": "refund",
    "webhook_endpoints": "endpoint",
    "endpoint": "endpoint",
    "webhook_deliveries": "delivery",
    "delivery": "delivery",
    "events": "event",
    "event": "event",
    "customers": "customer",
    "customer": "customer",
    "payment_methods": "payment_method",
    "payment_method": "payment_method",
    "disputes": "dispute",
    "dispute": "dispute",
    "payouts": "payout",
    "payout": "payout",
}
# How the owner reads each kind, to compare before and after the attacks.
READS = {
    "payment": ["/v1/payments/{id}", "/v1/refunds?payment_id={id}"],
    "refund": ["/v1/refunds/{id}"],
    # Not its deliveries: events of the refund may still be arriving while the attacks run.
    "endpoint": ["/v1/webhook_endpoints/{id}"],
    "delivery": ["/v1/webhook_deliveries/{id}", "/v1/webhook_deliveries/{id}/attempts"],
    "event": ["/v1/events/{id}"],
    "customer": ["/v1/customers/{id}", "/v1/payment_methods?customer={id}"],
    "payment_method": ["/v1/payment_methods/{id}"],
    "dispute": ["/v1/disputes/{id}"],
    "payout": ["/v1/payouts/{id}"],
}
# Fields a body needs besides the id so that validation cannot answer before the lookup.
BODY_EXTRAS: dict[str, dict[str, Any]] = {
    "UpdateWebhookEndpoint": {"description": "taken over"},
    "CreateRefund": {"amount": "1"},
    "CapturePayment": {"amount_to_capture": "1"},
    "ConfirmPayment": {"payment_method": {"card": card()}},
    "AuthenticatePayment": {"result": "complete"},
    "ReplayWebhookDeliveries": {"since": "2020-01-01T00:00:00Z"},
    "AttachSavedPaymentMethod": {"customer": "cus_doesnotexist"},
    "UpdateDispute": {"evidence": {"uncategorized_text": "winning_evidence"}, "submit": True},
}


def kind_of(method: RestMethod, field: str) -> str | None:
    """The kind of object an id field names, or None when it is not known here."""
    if field == "id":
        segments = method.path.split("/")
        collection = segments[segments.index("{id}") - 1]
        return KIND_OF.get(collection)
    return KIND_OF.get(field.removesuffix("_id"))


def id_taking_methods() -> list[tuple[RestMethod, str, str]]:
    """(method, field, where) for every public merchant method that takes an object id."""
    return [
        (method, field, where)
        for method in merchant_methods()
        for field, where in method.id_fields()
    ]


@dataclass(frozen=True)
class World:
    """One object of every kind, owned by `key`'s merchant and mode."""

    key: str
    ids: dict[str, str]


def _get(api: httpx.Client, key: str, path: str) -> dict[str, Any]:
    response = api.get(path, headers={"X-API-Key": key})
    assert response.status_code == 200, (path, response.text)
    body: dict[str, Any] = response.json()
    return body


def _available_usd(api: httpx.Client, key: str) -> int:
    """The merchant's available balance in USD."""
    balances = _get(api, key, "/v1/balance").get("available", [])
    return sum(int(item["available"]) for item in balances if item["currency"] == "USD")


def _delivered(api: httpx.Client, key: str, endpoint_id: str) -> list[dict[str, Any]] | None:
    """The endpoint's deliveries once there are some and every one is delivered."""
    deliveries = _get(api, key, f"/v1/webhook_endpoints/{endpoint_id}/deliveries?page_size=100")
    listed: list[dict[str, Any]] = deliveries["deliveries"]
    if not listed or any(delivery["status"] != "delivered" for delivery in listed):
        return None
    return listed


def build_world(api: httpx.Client, key: str, receiver: Receiver) -> World:
    """Makes a payment (held for capture), a refund, an endpoint, its deliveries and events, a
    customer and its saved payment method, a dispute and a paid payout."""
    endpoint = create_endpoint(api, key, receiver.url("/tenancy"), ["*"])
    # Funds available at once (live mode's delay is days), paid out to a bank account that pays.
    settings = api.post(
        "/v1/account/payout_settings",
        json={"bank_account_number": "000123456789", "settlement_delay_s": 0},
        headers=_auth(key),
    )
    assert settings.status_code == 200, settings.text
    customer = api.post("/v1/customers", json={"email": "a@example.com"}, headers=_auth(key))
    assert customer.status_code == 200, customer.text
    customer_id = customer.json()["id"]
    saving = created(
        api,
        key,
        customer=customer_id,
        setup_future_usage="off_session",
        payment_method={"card": card()},
    )
    wait_for(api, key, saving["id"], {"succeeded"}, timeout_s=SETTLE_TIMEOUT_S)
    held = created(api, key, capture_method="manual", payment_method={"card": card()})
    wait_for(api, key, held["id"], {"requires_capture"}, timeout_s=SETTLE_TIMEOUT_S)
    paid = created(api, key, payment_method={"card": card()})
    wait_for(api, key, paid["id"], {"succeeded"}, timeout_s=SETTLE_TIMEOUT_S)
    refund = api.post(
        "/v1/refunds",
        json={"payment_id": paid["id"], "amount": "100"},
        headers={"X-API-Key": key},
    )
    assert refund.status_code == 200, refund.text
    refund_id = refund.json()["id"]
    wait_until(
        lambda: _get(api, key, f"/v1/refunds/{refund_id}")["status"] in {"succeeded", "failed"},
        timeout_s=SETTLE_TIMEOUT_S,
    )
    wait_until(lambda: _available_usd(api, key) >= PAYOUT_AMOUNT, timeout_s=SETTLE_TIMEOUT_S)
    payout = api.post(
        "/v1/payouts",
        json={"amount": PAYOUT_AMOUNT, "currency": "USD"},
        headers={**_auth(key), "Idempotency-Key": uuid.uuid4().hex},
    )
    assert payout.status_code == 200, payout.text
    payout_id = payout.json()["id"]
    wait_until(
        lambda: _get(api, key, f"/v1/payouts/{payout_id}")["status"] == "paid",
        timeout_s=SETTLE_TIMEOUT_S,
    )
    # An inquiry: it waits for its merchant's answer and moves no money meanwhile.
    inquired = created(api, key, payment_method={"card": card(INQUIRY_CARD)})
    wait_for(api, key, inquired["id"], {"succeeded"}, timeout_s=SETTLE_TIMEOUT_S)
    disputes = wait_until(
        lambda: _get(api, key, f"/v1/disputes?payment_id={inquired['id']}").get("disputes"),
        timeout_s=SETTLE_TIMEOUT_S,
    )
    endpoint_id = str(endpoint["id"])
    deliveries = wait_until(lambda: _delivered(api, key, endpoint_id), timeout_s=SETTLE_TIMEOUT_S)
    return World(
        key=key,
        ids={
            "payment": held["id"],
            "refund": refund_id,
            "endpoint": endpoint_id,
            "delivery": deliveries[0]["id"],
            "event": deliveries[0]["event_id"],
            "customer": customer_id,
            "payment_method": saving["payment_method"],
            "dispute": disputes[0]["id"],
            "payout": payout_id,
        },
    )


def snapshot(api: httpx.Client, world: World) -> dict[str, Any]:
    """Everything the owner can read about its objects."""
    return {
        path.format(id=object_id): _get(api, world.key, path.format(id=object_id))
        for kind, object_id in world.ids.items()
        for path in READS[kind]
    }


def _rest_attack(
    api: httpx.Client, method: RestMethod, field: str, where: str, *, object_id: str, key: str
) -> httpx.Response:
    values = {name: "xyz_doesnotexist" for name in method.path_params}
    body: dict[str, Any] | None = dict(BODY_EXTRAS.get(method.name, {})) if method.body else None
    params: dict[str, str] = {}
    if where == "path":
        values[field] = object_id
    elif where == "body":
        assert body is not None
        body[field] = object_id
    else:
        params[field] = object_id
    return api.request(
        method.verb, method.url(values), json=body, params=params, headers=_auth(key)
    )


def _auth(credential: str) -> dict[str, str]:
    """An API key's header, or a merchant user's session (in test mode) as the dashboard sends."""
    if credential.startswith(USER_SESSION_TOKEN_PREFIX):
        return {"Authorization": f"Bearer {credential}", "Paymesh-Mode": "test"}
    return {"X-API-Key": credential}


def _attacker_keys(method: RestMethod, secret: str, publishable: str | None) -> list[str]:
    if method.name in CLIENT_SECRET_METHODS and publishable is not None:
        return [secret, publishable]
    return [secret]


def assert_rest_isolated(
    api: httpx.Client, world: World, secret: str, publishable: str | None
) -> int:
    """Every id-taking REST method, aimed at `world` with other keys: 404 (or nothing listed)."""
    checked = 0
    for method, field, where in id_taking_methods():
        kind = kind_of(method, field)
        assert kind is not None
        object_id = world.ids[kind]
        for key in _attacker_keys(method, secret, publishable):
            response = _rest_attack(api, method, field, where, object_id=object_id, key=key)
            label = (method.name, field, response.status_code, response.text)
            if where == "query":
                # A filter naming someone else's object finds nothing, or is refused outright.
                assert response.status_code in (200, 404), label
                if response.status_code == 200:
                    assert object_id not in response.text, label
                    assert all(not v for v in response.json().values() if isinstance(v, list))
            else:
                assert response.status_code == 404, label
            checked += 1
    return checked


def assert_grpc_isolated(platform: LocalPlatform, world: World, secret: str) -> int:
    """The same attacks over gRPC through the edge: NOT_FOUND (or an empty list)."""
    checked = 0
    with grpc.insecure_channel(f"127.0.0.1:{platform.settings.http_port}") as channel:
        for method, field, where in id_taking_methods():
            kind = kind_of(method, field)
            assert kind is not None
            object_id = world.ids[kind]
            request = method.request_message({})
            json_format.ParseDict({**BODY_EXTRAS.get(method.name, {}), field: object_id}, request)
            try:
                reply = method.call_grpc(channel, request, key=secret)
            except grpc.RpcError as error:
                assert error.code() == grpc.StatusCode.NOT_FOUND, (method.name, error)  # type: ignore[attr-defined]
            else:
                assert where == "query", (method.name, "answered", reply)
                assert object_id not in str(reply), (method.name, reply)
            checked += 1
    return checked


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    """A webhook receiver that answers 200 to everything."""
    with Receiver().running() as running:
        yield running


@pytest.fixture(scope="module")
def keys(platform: LocalPlatform, sessions: sessionmaker[Session]) -> dict[str, str]:
    """Merchant A's test and live secret keys; merchant B's secret and publishable keys; an
    admin user's session of each (the merchant dashboard's credential)."""
    with transaction(sessions) as session:
        owner = merchants.create_merchant(session, name="Tenant A")
        other = merchants.create_merchant(session, name="Tenant B")

        def issue(merchant_id: str, mode: str, kind: str) -> str:
            return merchants.create_api_key(
                session,
                merchant_id=merchant_id,
                mode=mode,  # type: ignore[arg-type]
                kind=kind,  # type: ignore[arg-type]
            ).key

        made = {
            "a_test": issue(owner.id, "test", "secret"),
            "a_test_publishable": issue(owner.id, "test", "publishable"),
            "a_live": issue(owner.id, "live", "secret"),
            "b_test": issue(other.id, "test", "secret"),
            "b_test_publishable": issue(other.id, "test", "publishable"),
        }
    with httpx.Client(base_url=platform.base_url, timeout=30) as api:
        made["a_user"] = user_login(sessions, api, owner.id, "admin").token
        made["b_user"] = user_login(sessions, api, other.id, "admin").token
    return made


@pytest.fixture(scope="module")
def worlds(platform: LocalPlatform, keys: dict[str, str], receiver: Receiver) -> dict[str, World]:
    """A's test-mode and live-mode objects."""
    with httpx.Client(base_url=platform.base_url, timeout=30) as api:
        return {
            "test": build_world(api, keys["a_test"], receiver),
            "live": build_world(api, keys["a_live"], receiver),
        }


def test_every_id_taking_method_has_an_object_to_aim_at() -> None:
    methods = id_taking_methods()
    assert len(methods) >= 15
    unknown = [(m.name, field) for m, field, _ in methods if kind_of(m, field) not in READS]
    assert not unknown, f"add a factory and reads for these ids: {unknown}"


def _unchanged(
    api: httpx.Client, world: World, attack: Callable[[], int], *, at_least: int
) -> None:
    before = snapshot(api, world)
    assert attack() >= at_least
    assert snapshot(api, world) == before


def test_other_merchants_ids__not_found_over_rest_and_nothing_changes(
    api: httpx.Client, keys: dict[str, str], worlds: dict[str, World]
) -> None:
    world = worlds["test"]
    _unchanged(
        api,
        world,
        lambda: assert_rest_isolated(api, world, keys["b_test"], keys["b_test_publishable"]),
        at_least=len(id_taking_methods()),
    )


def test_other_merchants_ids__not_found_over_grpc_through_the_edge(
    api: httpx.Client, platform: LocalPlatform, keys: dict[str, str], worlds: dict[str, World]
) -> None:
    world = worlds["test"]
    _unchanged(
        api,
        world,
        lambda: assert_grpc_isolated(platform, world, keys["b_test"]),
        at_least=len(id_taking_methods()),
    )


def test_test_mode_keys__find_none_of_the_same_merchants_live_objects(
    api: httpx.Client, platform: LocalPlatform, keys: dict[str, str], worlds: dict[str, World]
) -> None:
    world = worlds["live"]
    _unchanged(
        api,
        world,
        lambda: (
            assert_rest_isolated(api, world, keys["a_test"], keys["a_test_publishable"])
            + assert_grpc_isolated(platform, world, keys["a_test"])
        ),
        at_least=2 * len(id_taking_methods()),
    )


def test_other_merchants_users__not_found_with_their_session_and_nothing_changes(
    api: httpx.Client, keys: dict[str, str], worlds: dict[str, World]
) -> None:
    world = worlds["test"]
    _unchanged(
        api,
        world,
        lambda: assert_rest_isolated(api, world, keys["b_user"], None),
        at_least=len(id_taking_methods()),
    )


def test_a_users_test_mode_session__finds_none_of_its_merchants_live_objects(
    api: httpx.Client, keys: dict[str, str], worlds: dict[str, World]
) -> None:
    world = worlds["live"]
    _unchanged(
        api,
        world,
        lambda: assert_rest_isolated(api, world, keys["a_user"], None),
        at_least=len(id_taking_methods()),
    )


# How long a stream is read for events that must (or must not) come: the stream polls every
# 0.5 s and an event stored before the stream is resumed comes in its first read.
STREAM_READ_S = 3.0


def _stream(api: httpx.Client, key: str, cursor: str = "") -> list[dict[str, Any]]:
    """The messages an event stream sends within STREAM_READ_S (its first one at least)."""
    messages: list[dict[str, Any]] = []
    params = {"cursor": cursor} if cursor else {}
    with (
        suppress(httpx.ReadTimeout),
        api.stream(
            "GET",
            "/v1/events:stream",
            params=params,
            headers={"X-API-Key": key},
            timeout=httpx.Timeout(30.0, read=STREAM_READ_S),
        ) as response,
    ):
        assert response.status_code == 200, response.read()
        for line in response.iter_lines():
            if line.startswith("data:"):
                messages.append(json.loads(line[5:]))
                if not cursor:
                    break  # a stream from now: its opening message and cursor
    return messages


def test_event_streams__carry_only_the_keys_merchant_and_mode(
    api: httpx.Client, keys: dict[str, str], worlds: dict[str, World]
) -> None:
    readers = ("a_test", "a_live", "b_test")
    opened = {reader: _stream(api, keys[reader])[0]["cursor"] for reader in readers}
    # A test event of A's test mode, stored while no stream is open.
    sent = api.post(
        f"/v1/webhook_endpoints/{worlds['test'].ids['endpoint']}/test",
        headers={"X-API-Key": keys["a_test"]},
        json={"type": "payment.succeeded"},
    )
    assert sent.status_code == 200, sent.text
    event_id = sent.json()["event_id"]
    seen = {
        reader: [
            message["event"]["id"]
            for message in _stream(api, keys[reader], opened[reader])
            if message.get("event")
        ]
        for reader in readers
    }
    assert event_id in seen["a_test"]
    assert event_id not in seen["a_live"] and event_id not in seen["b_test"]
    # A cursor is its merchant's and mode's only.
    for reader, cursor in (("b_test", opened["a_test"]), ("a_live", opened["a_test"])):
        with api.stream(
            "GET",
            "/v1/events:stream",
            params={"cursor": cursor},
            headers={"X-API-Key": keys[reader]},
        ) as response:
            response.read()
            assert response.status_code == 400, (reader, response.text)
