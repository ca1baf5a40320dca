"""Crash drills for 3-D Secure and customers (issue 16, "a crash at each step"), through the edge.

The real payment worker, relay (which runs the sweeper) and payment service are SIGKILLed
between the steps of each lifecycle: a payment entering `requires_action` and its event; the
authentication completed and the payment processing; an abandoned challenge canceled by the
sweeper; a card saved with `setup_future_usage` (the payment method made, attached, its
events); an off-session payment with a saved card. After the restart the payment's state, the
payment methods, the events (each once, each in the catalog) and the ledger come out right, and
the trial balance is zero.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import grpc
import httpx
import pytest
from paymesh.ledger.v1 import ledger_internal_pb2, ledger_internal_pb2_grpc
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from services.admin import merchants
from services.common.db import transaction
from services.payment.models import OutboxMessage, Payment, ProcessorCharge
from services.runtime.platform import LocalPlatform
from tests.integration.test_payments import card, charge_count, event_types, fetch, wait_for
from tests.integration.test_payments_faults import DRILL_TIMEOUT_S, ledger_transaction_ids

THREE_DS_REQUIRED = "4000002760003184"
UNLESS_SAVED = "4000002500003155"


@pytest.fixture
def key(drill_sessions: sessionmaker[Session]) -> str:
    """A fresh merchant's test-mode secret key on the drill platform (its own events only)."""
    with transaction(drill_sessions) as session:
        made = merchants.create_merchant(session, name="Drill 3DS Shop")
        return merchants.create_api_key(
            session, merchant_id=made.id, mode="test", kind="secret"
        ).key


def _post(api: httpx.Client, key: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
    response = api.post(
        path, json=body, headers={"X-API-Key": key, "Idempotency-Key": secrets.token_hex(8)}
    )
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


def create(api: httpx.Client, key: str, **body: Any) -> dict[str, Any]:
    """A payment created through the edge."""
    return _post(api, key, "/v1/payments", {"amount": 2000, "currency": "USD", **body})


def webhook_events(api: httpx.Client, key: str, object_id: str) -> Counter[str]:
    """How many events of each type the webhook service holds for an object."""
    listed = api.get("/v1/events", params={"page_size": 100}, headers={"X-API-Key": key})
    assert listed.status_code == 200, listed.text
    return Counter(
        event["type"]
        for event in listed.json()["events"]
        if event["data"]["object"].get("id") == object_id
    )


def assert_events_once(
    api: httpx.Client, key: str, object_id: str, wanted: list[str], catalog: set[str]
) -> None:
    """The webhook service ends up with each wanted event of the object once, and no other."""
    deadline = time.monotonic() + DRILL_TIMEOUT_S
    expected = Counter(wanted)
    while webhook_events(api, key, object_id) != expected:
        assert time.monotonic() < deadline, (object_id, webhook_events(api, key, object_id))
        time.sleep(0.3)
    # Nothing more arrives later (a second relay of a row, a second state change).
    time.sleep(1.5)
    assert webhook_events(api, key, object_id) == expected
    assert set(wanted) <= catalog


def unrelayed_events(sessions: sessionmaker[Session], object_id: str) -> list[str]:
    """The outbox's event rows of an object the relay has not handed on yet."""
    with transaction(sessions) as session:
        return list(
            session.scalars(
                select(OutboxMessage.topic)
                .where(OutboxMessage.kind == "event")
                .where(OutboxMessage.payload["object"]["id"].astext == object_id)
                .where(OutboxMessage.relay_time.is_(None))
                .order_by(OutboxMessage.id)
            )
        )


def wait_authorized(sessions: sessionmaker[Session], payment_id: str) -> None:
    """Waits until the processor holds the payment's authorization (the worker is mid-payment)."""
    deadline = time.monotonic() + DRILL_TIMEOUT_S
    while charge_count(sessions, payment_id) == 0:
        assert time.monotonic() < deadline, "the worker never authorized the payment"
        time.sleep(0.05)


def kill_worker_mid_payment(
    platform: LocalPlatform, sessions: sessionmaker[Session], payment_id: str
) -> None:
    """SIGKILLs the payment worker once it authorized the payment and before it finished it."""
    wait_authorized(sessions, payment_id)
    platform.kill("payment-worker")
    with transaction(sessions) as session:
        charge = session.scalars(
            select(ProcessorCharge).where(ProcessorCharge.payment_id == payment_id)
        ).one()
        assert charge.status == "authorized", "the kill came too late to be mid-payment"
    platform.start_process("payment-worker")


def assert_trial_balance_zero(platform: LocalPlatform) -> None:
    """Debits equal credits in every currency of the ledger."""
    with grpc.insecure_channel(platform.settings.target("ledger")) as channel:
        stub = ledger_internal_pb2_grpc.LedgerInternalServiceStub(channel)
        trial = stub.GetTrialBalance(ledger_internal_pb2.GetTrialBalanceRequest(), timeout=10)
    assert trial.balanced, trial
    for line in trial.currencies:
        assert line.debits == line.credits, line


def assert_settled_once(
    platform: LocalPlatform, sessions: sessionmaker[Session], payment_id: str
) -> None:
    """One processor charge, one ledger transaction for the payment."""
    assert charge_count(sessions, payment_id) == 1
    assert len(ledger_transaction_ids(platform, payment_id)) == 1


@pytest.fixture
def relay_stopped(drill_platform: LocalPlatform) -> Iterator[None]:
    """The relay (and so the sweeper) is dead while the test needs it, and alive afterwards."""
    drill_platform.kill("payment-relay")
    try:
        yield
    finally:
        if drill_platform.children["payment-relay"].poll() is not None:
            drill_platform.start_process("payment-relay")


@pytest.fixture
def worker_restored(drill_platform: LocalPlatform) -> Iterator[None]:
    """Whatever a test kills of the worker, it runs again afterwards."""
    try:
        yield
    finally:
        if drill_platform.children["payment-worker"].poll() is not None:
            drill_platform.start_process("payment-worker")


@pytest.mark.usefixtures("relay_stopped", "worker_restored")
def test_3ds__crash_after_requires_action_and_after_authentication__pays_once(
    drill_platform: LocalPlatform,
    drill_api: httpx.Client,
    drill_sessions: sessionmaker[Session],
    key: str,
    catalog: set[str],
) -> None:
    # 1. The payment enters requires_action; the relay dies before handing on its event.
    payment = create(drill_api, key, payment_method={"card": card(THREE_DS_REQUIRED)})
    assert payment["status"] == "requires_action"
    assert unrelayed_events(drill_sessions, payment["id"]) == ["payment.requires_action"]
    drill_platform.start_process("payment-relay")
    assert_events_once(drill_api, key, payment["id"], ["payment.requires_action"], catalog)

    # 2. Authentication completed (processing, its drive and event committed) with no worker
    # alive; the job waits in Redis. Then the worker dies again mid-payment.
    drill_platform.kill("payment-worker")
    done = _post(
        drill_api,
        key,
        f"/v1/payments/{payment['id']}/authenticate",
        {"client_secret": payment["client_secret"], "result": "complete"},
    )
    assert done["status"] == "processing"
    assert fetch(drill_api, key, payment["id"])["status"] == "processing"
    assert charge_count(drill_sessions, payment["id"]) == 0
    drill_platform.start_process("payment-worker")
    kill_worker_mid_payment(drill_platform, drill_sessions, payment["id"])

    final = wait_for(drill_api, key, payment["id"], timeout_s=DRILL_TIMEOUT_S)
    assert (final["status"], final["amount_received"]) == ("succeeded", 2000)
    assert_settled_once(drill_platform, drill_sessions, payment["id"])
    assert event_types(drill_sessions, payment["id"]) == [
        "payment.requires_action",
        "payment.processing",
        "payment.succeeded",
    ]
    assert_events_once(
        drill_api,
        key,
        payment["id"],
        ["payment.requires_action", "payment.processing", "payment.succeeded"],
        catalog,
    )
    assert_trial_balance_zero(drill_platform)


@pytest.mark.usefixtures("relay_stopped")
def test_3ds__abandoned_challenge_canceled_by_the_sweeper_then_the_relay_killed(
    drill_platform: LocalPlatform,
    drill_api: httpx.Client,
    drill_sessions: sessionmaker[Session],
    key: str,
    catalog: set[str],
) -> None:
    payment = create(drill_api, key, payment_method={"card": card(THREE_DS_REQUIRED)})
    assert payment["status"] == "requires_action"
    # Left past the authentication window while the sweeper (in the relay) was dead.
    with transaction(drill_sessions) as session:
        session.execute(
            update(Payment)
            .where(Payment.id == payment["id"])
            .values(update_time=Payment.update_time - timedelta(hours=2))
        )
    drill_platform.start_process("payment-relay")
    deadline = time.monotonic() + DRILL_TIMEOUT_S
    while fetch(drill_api, key, payment["id"])["status"] != "canceled":
        assert time.monotonic() < deadline, "the sweeper never canceled the abandoned payment"
        time.sleep(0.05)
    # Killed right after its cancel committed: its event may not have gone out yet.
    drill_platform.kill("payment-relay")
    drill_platform.start_process("payment-relay")

    final = fetch(drill_api, key, payment["id"])
    assert (final["status"], final["cancellation_reason"]) == ("canceled", "abandoned")
    assert final["amount_capturable"] == 0 and final["amount_received"] == 0
    assert charge_count(drill_sessions, payment["id"]) == 0
    assert ledger_transaction_ids(drill_platform, payment["id"]) == set()
    assert event_types(drill_sessions, payment["id"]) == [
        "payment.requires_action",
        "payment.canceled",
    ]
    assert_events_once(
        drill_api, key, payment["id"], ["payment.requires_action", "payment.canceled"], catalog
    )
    # A challenge completed after the cancel changes nothing.
    late = drill_api.post(
        f"/v1/payments/{payment['id']}/authenticate",
        json={"client_secret": payment["client_secret"], "result": "complete"},
    )
    assert late.status_code == 400, late.text
    assert_trial_balance_zero(drill_platform)


def _post_racing_a_kill(
    platform: LocalPlatform,
    api: httpx.Client,
    path: str,
    *,
    headers: dict[str, str],
    body: dict[str, Any],
) -> dict[str, Any]:
    """POSTs a write while the payment service is SIGKILLed, then again under the same
    Idempotency-Key once it is back: whatever the first request managed, one outcome."""
    answers: list[httpx.Response | Exception] = []

    def send() -> None:
        try:
            answers.append(api.post(path, json=body, headers=headers))
        except httpx.HTTPError as error:
            answers.append(error)

    sender = threading.Thread(target=send)
    sender.start()
    time.sleep(0.01)
    platform.kill("payment")
    sender.join(timeout=60)
    platform.start_process("payment")
    deadline = time.monotonic() + DRILL_TIMEOUT_S
    while True:
        retried = api.post(path, json=body, headers=headers)
        if retried.status_code == 200:
            result: dict[str, Any] = retried.json()
            first = answers[0] if answers else None
            if isinstance(first, httpx.Response) and first.status_code == 200:
                assert first.json()["id"] == result["id"], "the key made two payments"
            return result
        # 503 while the service starts again; 409 while a key is still held.
        assert retried.status_code in (409, 503, 504), retried.text
        assert time.monotonic() < deadline, retried.text
        time.sleep(0.3)


def _create_racing_a_kill(
    platform: LocalPlatform, api: httpx.Client, key: str, idempotency_key: str, body: dict[str, Any]
) -> dict[str, Any]:
    """Creates a payment while the payment service is SIGKILLed (`_post_racing_a_kill`)."""
    headers = {"X-API-Key": key, "Idempotency-Key": idempotency_key}
    return _post_racing_a_kill(platform, api, "/v1/payments", headers=headers, body=body)


@pytest.mark.usefixtures("relay_stopped", "worker_restored")
def test_saving_a_card__crash_of_the_service_relay_and_worker__one_method_attached_once(
    drill_platform: LocalPlatform,
    drill_api: httpx.Client,
    drill_sessions: sessionmaker[Session],
    key: str,
    catalog: set[str],
) -> None:
    customer = _post(drill_api, key, "/v1/customers", {"email": "saver@example.com"})
    drill_platform.kill("payment-worker")
    body = {
        "amount": 3300,
        "currency": "EUR",
        "customer": customer["id"],
        "setup_future_usage": "off_session",
        "payment_method": {"card": card()},
    }
    payment = _create_racing_a_kill(drill_platform, drill_api, key, secrets.token_hex(8), body)
    method_id = payment["payment_method"]
    assert method_id.startswith("pm_") and payment["status"] == "processing"
    # Saved, but attached to the customer only once the payment succeeds (the worker is dead).
    methods = drill_api.get(
        "/v1/payment_methods", params={"customer": customer["id"]}, headers={"X-API-Key": key}
    )
    assert methods.json().get("payment_methods", []) == []
    # Everything the create wrote waits in the outbox: the relay is dead.
    assert unrelayed_events(drill_sessions, method_id) == []
    assert unrelayed_events(drill_sessions, payment["id"]) == ["payment.processing"]

    drill_platform.start_process("payment-relay")
    drill_platform.start_process("payment-worker")
    kill_worker_mid_payment(drill_platform, drill_sessions, payment["id"])
    final = wait_for(drill_api, key, payment["id"], timeout_s=DRILL_TIMEOUT_S)
    assert (final["status"], final["payment_method"]) == ("succeeded", method_id)
    assert_settled_once(drill_platform, drill_sessions, payment["id"])
    method = drill_api.get(f"/v1/payment_methods/{method_id}", headers={"X-API-Key": key}).json()
    assert method["customer"] == customer["id"] and method["card"]["last4"] == "4242"
    assert_events_once(drill_api, key, method_id, ["payment_method.attached"], catalog)
    assert_events_once(drill_api, key, customer["id"], ["customer.created"], catalog)
    assert_events_once(
        drill_api, key, payment["id"], ["payment.processing", "payment.succeeded"], catalog
    )
    assert_trial_balance_zero(drill_platform)


@pytest.mark.usefixtures("relay_stopped", "worker_restored")
def test_saving_a_card_on_the_checkout__crash_of_the_service_relay_and_worker__saved_once(
    drill_platform: LocalPlatform,
    drill_api: httpx.Client,
    drill_sessions: sessionmaker[Session],
    key: str,
    catalog: set[str],
) -> None:
    customer = _post(drill_api, key, "/v1/customers", {})
    payment = create(drill_api, key, customer=customer["id"], setup_future_usage="on_session")
    drill_platform.kill("payment-worker")
    # The hosted checkout's confirm: the client secret alone, one key per attempt.
    confirmed = _post_racing_a_kill(
        drill_platform,
        drill_api,
        f"/v1/payments/{payment['id']}/confirm",
        headers={"Idempotency-Key": secrets.token_hex(8)},
        body={"client_secret": payment["client_secret"], "payment_method": {"card": card()}},
    )
    method_id = confirmed["payment_method"]
    assert method_id.startswith("pm_") and confirmed["status"] == "processing"
    # Attached (with its event) only once the payment succeeds: the worker is dead.
    assert unrelayed_events(drill_sessions, method_id) == []

    drill_platform.start_process("payment-relay")
    drill_platform.start_process("payment-worker")
    kill_worker_mid_payment(drill_platform, drill_sessions, payment["id"])
    final = wait_for(drill_api, key, payment["id"], timeout_s=DRILL_TIMEOUT_S)
    assert (final["status"], final["payment_method"]) == ("succeeded", method_id)
    assert_settled_once(drill_platform, drill_sessions, payment["id"])
    methods = drill_api.get(
        "/v1/payment_methods", params={"customer": customer["id"]}, headers={"X-API-Key": key}
    ).json()["payment_methods"]
    assert [item["id"] for item in methods] == [method_id]
    # A checkout opened again offers the card just saved, no longer for this paid payment.
    again = create(drill_api, key, customer=customer["id"])
    offered = drill_api.get(
        f"/v1/checkout/{again['id']}", params={"client_secret": again["client_secret"]}
    ).json()["saved_payment_methods"]
    assert [item["id"] for item in offered] == [method_id]
    assert_events_once(drill_api, key, method_id, ["payment_method.attached"], catalog)
    assert_events_once(
        drill_api, key, payment["id"], ["payment.processing", "payment.succeeded"], catalog
    )
    assert_trial_balance_zero(drill_platform)


@pytest.mark.usefixtures("worker_restored")
def test_off_session_with_a_saved_card__worker_and_relay_killed__charged_once(
    drill_platform: LocalPlatform,
    drill_api: httpx.Client,
    drill_sessions: sessionmaker[Session],
    key: str,
    catalog: set[str],
) -> None:
    customer = _post(drill_api, key, "/v1/customers", {})
    saving = create(
        drill_api,
        key,
        customer=customer["id"],
        setup_future_usage="off_session",
        payment_method={"card": card(UNLESS_SAVED)},
    )
    # The payment that saves 3155 authenticates; paid with once saved, it needs none.
    assert saving["status"] == "requires_action"
    method_id = saving["payment_method"]
    secure = create(
        drill_api,
        key,
        customer=customer["id"],
        setup_future_usage="off_session",
        payment_method={"card": card(THREE_DS_REQUIRED)},
    )
    secure_method = secure["payment_method"]
    # Each saving payment's challenge is completed: its card is attached once it succeeded.
    for saver in (saving, secure):
        _post(
            drill_api,
            key,
            f"/v1/payments/{saver['id']}/authenticate",
            {"client_secret": saver["client_secret"], "result": "complete"},
        )
        settled = wait_for(drill_api, key, saver["id"], {"succeeded"}, timeout_s=DRILL_TIMEOUT_S)
        assert settled["status"] == "succeeded"

    off = create(
        drill_api,
        key,
        amount=1250,
        customer=customer["id"],
        payment_method={"id": method_id},
        off_session=True,
    )
    assert off["status"] == "processing" and off["payment_method"] == method_id
    kill_worker_mid_payment(drill_platform, drill_sessions, off["id"])
    # And the relay, while the worker's events may be on their way.
    drill_platform.kill("payment-relay")
    drill_platform.start_process("payment-relay")
    final = wait_for(drill_api, key, off["id"], timeout_s=DRILL_TIMEOUT_S)
    assert (final["status"], final["amount_received"]) == ("succeeded", 1250)
    assert_settled_once(drill_platform, drill_sessions, off["id"])
    assert_events_once(
        drill_api, key, off["id"], ["payment.processing", "payment.succeeded"], catalog
    )

    # A saved card that requires authentication fails off session at once: with the relay
    # dead its payment.failed waits, then goes out once; nothing is charged.
    drill_platform.kill("payment-relay")
    try:
        refused = create(
            drill_api,
            key,
            customer=customer["id"],
            payment_method={"id": secure_method},
            off_session=True,
        )
        assert (refused["status"], refused["failure_code"]) == (
            "failed",
            "authentication_required",
        )
        assert unrelayed_events(drill_sessions, refused["id"]) == ["payment.failed"]
    finally:
        drill_platform.start_process("payment-relay")
    assert_events_once(drill_api, key, refused["id"], ["payment.failed"], catalog)
    assert charge_count(drill_sessions, refused["id"]) == 0
    assert ledger_transaction_ids(drill_platform, refused["id"]) == set()
    # The methods are as they were: both attached to the customer, nothing saved twice.
    methods = drill_api.get(
        "/v1/payment_methods", params={"customer": customer["id"]}, headers={"X-API-Key": key}
    ).json()["payment_methods"]
    assert [item["id"] for item in methods] == [secure_method, method_id]
    for saved in (method_id, secure_method):
        assert_events_once(drill_api, key, saved, ["payment_method.attached"], catalog)
    assert_trial_balance_zero(drill_platform)
