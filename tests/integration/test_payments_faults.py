"""Fault drills on a platform of their own: a worker killed mid-payment, Redis down after commit."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from urllib.parse import urlsplit

import grpc
import httpx
import pytest
from paymesh.ledger.v1 import ledger_internal_pb2, ledger_internal_pb2_grpc
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from services.admin import merchants
from services.common.db import transaction
from services.payment.models import Dispute, OutboxMessage, ProcessorCharge
from services.runtime import embedded
from services.runtime.platform import LocalPlatform
from tests.integration.test_payments import card, charge_count, event_types, fetch, wait_for

DRILL_TIMEOUT_S = 90.0
# Paid, then disputed as fraudulent by the simulated card network.
DISPUTE_CARD = "4000000000000259"


@pytest.fixture(scope="module")
def drill_key(drill_sessions: sessionmaker[Session]) -> str:
    """A test-mode secret key on the drill platform."""
    with transaction(drill_sessions) as session:
        made = merchants.create_merchant(session, name="Drill Shop")
        return merchants.create_api_key(
            session, merchant_id=made.id, mode="test", kind="secret"
        ).key


def ledger_transaction_ids(platform: LocalPlatform, payment_id: str) -> set[str]:
    """The ledger transactions that a payment caused."""
    with grpc.insecure_channel(platform.settings.target("ledger")) as channel:
        stub = ledger_internal_pb2_grpc.LedgerInternalServiceStub(channel)
        reply = stub.ListEntries(
            ledger_internal_pb2.ListEntriesRequest(source_id=payment_id, page_size=100),
            timeout=10,
        )
        return {entry.transaction_id for entry in reply.entries}


def test_worker_killed_mid_payment__payment_still_succeeds_exactly_once(
    drill_platform: LocalPlatform,
    drill_api: httpx.Client,
    drill_key: str,
    drill_sessions: sessionmaker[Session],
) -> None:
    response = drill_api.post(
        "/v1/payments",
        json={"amount": 2500, "currency": "USD", "payment_method": {"card": card()}},
        headers={"X-API-Key": drill_key},
    )
    assert response.status_code == 200, response.text
    payment_id = response.json()["id"]
    # Authorized at the processor, now waiting on the (slow) capture: kill it right there.
    deadline = time.monotonic() + DRILL_TIMEOUT_S
    while charge_count(drill_sessions, payment_id) == 0:
        assert time.monotonic() < deadline, "the worker never authorized the payment"
        time.sleep(0.05)
    drill_platform.kill("payment-worker")
    with transaction(drill_sessions) as session:
        charge = session.scalars(
            select(ProcessorCharge).where(ProcessorCharge.payment_id == payment_id)
        ).one()
        assert charge.status == "authorized", "the kill came too late to be mid-payment"
    assert fetch(drill_api, drill_key, payment_id)["status"] == "processing"
    drill_platform.start_process("payment-worker")

    final = wait_for(drill_api, drill_key, payment_id, timeout_s=DRILL_TIMEOUT_S)
    assert final["status"] == "succeeded"
    assert final["amount_received"] == 2500
    assert charge_count(drill_sessions, payment_id) == 1
    assert len(ledger_transaction_ids(drill_platform, payment_id)) == 1
    assert event_types(drill_sessions, payment_id) == ["payment.processing", "payment.succeeded"]


def test_redis_down_after_commit__payment_processed_once_redis_is_back(
    drill_platform: LocalPlatform,
    drill_api: httpx.Client,
    drill_key: str,
    drill_sessions: sessionmaker[Session],
) -> None:
    redis_dir = drill_platform.settings.data_dir.resolve() / "redis"
    port = urlsplit(drill_platform.settings.require_redis_url()).port
    embedded.stop_redis(redis_dir)
    try:
        response = drill_api.post(
            "/v1/payments",
            json={"amount": 900, "currency": "EUR", "payment_method": {"card": card()}},
            headers={"X-API-Key": drill_key},
        )
        assert response.status_code == 200, response.text
        payment_id = response.json()["id"]
        # The relay tried, failed, and kept the row.
        deadline = time.monotonic() + DRILL_TIMEOUT_S
        while True:
            with transaction(drill_sessions) as session:
                row = session.scalars(
                    select(OutboxMessage)
                    .where(OutboxMessage.kind == "job")
                    .where(OutboxMessage.payload["args"][0].astext == payment_id)
                ).first()
                if row is not None and row.attempts >= 1:
                    assert row.relay_time is None
                    assert "redis" in row.last_error
                    break
            assert time.monotonic() < deadline, "the relay never tried the job"
            time.sleep(0.1)
    finally:
        embedded.start_redis(redis_dir, port=port)
    final = wait_for(drill_api, drill_key, payment_id, timeout_s=DRILL_TIMEOUT_S)
    assert final["status"] == "succeeded"
    assert charge_count(drill_sessions, payment_id) == 1
    assert len(ledger_transaction_ids(drill_platform, payment_id)) == 1
    # Re-drives the sweeper wrote while Redis was down go out too (and find nothing to do).
    deadline = time.monotonic() + DRILL_TIMEOUT_S
    while True:
        with transaction(drill_sessions) as session:
            pending = session.scalar(
                select(func.count())
                .select_from(OutboxMessage)
                .where(OutboxMessage.payload["args"][0].astext == payment_id)
                .where(OutboxMessage.relay_time.is_(None))
            )
        if pending == 0:
            break
        assert time.monotonic() < deadline, f"{pending} job rows were never relayed"
        time.sleep(0.2)
    assert charge_count(drill_sessions, payment_id) == 1


def test_webhook_service_down__events_wait_in_the_outbox_then_go_out(
    drill_platform: LocalPlatform,
    drill_api: httpx.Client,
    drill_key: str,
    drill_sessions: sessionmaker[Session],
) -> None:
    drill_platform.kill("webhook", signal.SIGKILL)
    try:
        response = drill_api.post(
            "/v1/payments",
            json={"amount": 300, "currency": "USD", "payment_method": {"card": card()}},
            headers={"X-API-Key": drill_key},
        )
        assert response.status_code == 200, response.text
        payment_id = response.json()["id"]
        assert wait_for(drill_api, drill_key, payment_id)["status"] == "succeeded"
        deadline = time.monotonic() + DRILL_TIMEOUT_S
        while True:
            with transaction(drill_sessions) as session:
                rows = session.scalars(
                    select(OutboxMessage)
                    .where(OutboxMessage.kind == "event")
                    .where(OutboxMessage.payload["object"]["id"].astext == payment_id)
                ).all()
                if len(rows) == 2 and all(row.attempts >= 1 for row in rows):
                    assert all(row.relay_time is None for row in rows)
                    assert all("webhook" in row.last_error for row in rows)
                    break
            assert time.monotonic() < deadline, "the relay never tried the events"
            time.sleep(0.1)
    finally:
        drill_platform.start_process("webhook")
    deadline = time.monotonic() + DRILL_TIMEOUT_S
    while event_types_relayed(drill_sessions, payment_id) != 2:
        assert time.monotonic() < deadline, "the events never went out"
        time.sleep(0.2)


def event_types_relayed(sessions: sessionmaker[Session], payment_id: str) -> int:
    """How many of a payment's events the relay handed to the webhook service."""
    with transaction(sessions) as session:
        return int(
            session.scalar(
                select(func.count())
                .select_from(OutboxMessage)
                .where(OutboxMessage.kind == "event")
                .where(OutboxMessage.payload["object"]["id"].astext == payment_id)
                .where(OutboxMessage.relay_time.is_not(None))
            )
            or 0
        )


def test_postgres_restart__the_requests_after_it_succeed_without_an_error(
    drill_platform: LocalPlatform,
    drill_api: httpx.Client,
    drill_key: str,
    drill_sessions: sessionmaker[Session],
) -> None:
    def create() -> httpx.Response:
        return drill_api.post(
            "/v1/payments",
            json={"amount": 700, "currency": "USD", "payment_method": {"card": card()}},
            headers={"X-API-Key": drill_key},
        )

    warm = create()
    assert warm.status_code == 200, warm.text
    pg_dir = drill_platform.settings.data_dir.resolve() / "pg"
    url = urlsplit(drill_platform.settings.require_database_url())
    assert url.password
    # A fast shutdown cuts every pooled connection of every process.
    embedded.stop_postgres(pg_dir)
    embedded.start_postgres(pg_dir, password=url.password, port=url.port)
    # No ping before each transaction: the pools find the cut connections on their own.
    created = [create() for _ in range(3)]
    assert [response.status_code for response in created] == [200] * 3, [
        response.text for response in created
    ]
    for response in [warm, *created]:
        payment_id = response.json()["id"]
        final = wait_for(drill_api, drill_key, payment_id, timeout_s=DRILL_TIMEOUT_S)
        assert final["status"] == "succeeded"
        assert charge_count(drill_sessions, payment_id) == 1


def _dispute_of(sessions: sessionmaker[Session], payment_id: str) -> Dispute | None:
    with transaction(sessions) as session:
        return session.scalars(select(Dispute).where(Dispute.payment_id == payment_id)).first()


def _wait_dispute(
    sessions: sessionmaker[Session], payment_id: str, check: Callable[[Dispute], bool]
) -> Dispute:
    deadline = time.monotonic() + DRILL_TIMEOUT_S
    while True:
        dispute = _dispute_of(sessions, payment_id)
        if dispute is not None and check(dispute):
            return dispute
        assert time.monotonic() < deadline, f"the dispute of {payment_id} never got there"
        time.sleep(0.1)


def _dispute_events(sessions: sessionmaker[Session], dispute_id: str) -> list[str]:
    with transaction(sessions) as session:
        return list(
            session.scalars(
                select(OutboxMessage.topic)
                .where(OutboxMessage.kind == "event")
                .where(OutboxMessage.payload["object"]["id"].astext == dispute_id)
                .order_by(OutboxMessage.id)
            )
        )


def _disputed_payment(drill_api: httpx.Client, drill_key: str) -> str:
    response = drill_api.post(
        "/v1/payments",
        json={"amount": 3000, "currency": "USD", "payment_method": {"card": card(DISPUTE_CARD)}},
        headers={"X-API-Key": drill_key},
    )
    assert response.status_code == 200, response.text
    payment_id: str = response.json()["id"]
    final = wait_for(drill_api, drill_key, payment_id, timeout_s=DRILL_TIMEOUT_S)
    assert final["status"] == "succeeded"
    return payment_id


def test_relay_killed_before_a_dispute_opens__it_opens_once_after_restart(
    drill_platform: LocalPlatform,
    drill_api: httpx.Client,
    drill_key: str,
    drill_sessions: sessionmaker[Session],
) -> None:
    payment_id = _disputed_payment(drill_api, drill_key)
    # The relay runs the sweeper that opens filed disputes and re-drives stuck ones.
    drill_platform.kill("payment-relay")
    drill_platform.start_process("payment-relay")
    dispute = _wait_dispute(drill_sessions, payment_id, lambda d: d.withdraw_time is not None)
    assert len(ledger_transaction_ids(drill_platform, dispute.id)) == 1
    assert _dispute_events(drill_sessions, dispute.id) == [
        "dispute.created",
        "dispute.funds_withdrawn",
    ]


def test_worker_killed_mid_decision__dispute_won_once_after_restart(
    drill_platform: LocalPlatform,
    drill_api: httpx.Client,
    drill_key: str,
    drill_sessions: sessionmaker[Session],
) -> None:
    payment_id = _disputed_payment(drill_api, drill_key)
    dispute = _wait_dispute(drill_sessions, payment_id, lambda d: d.withdraw_time is not None)
    submitted = drill_api.post(
        f"/v1/disputes/{dispute.id}",
        json={"evidence": {"uncategorized_text": "winning_evidence"}, "submit": True},
        headers={"X-API-Key": drill_key},
    )
    assert submitted.status_code == 200, submitted.text
    # The network's decision takes a processor call (1.5 s here): kill the worker inside it.
    time.sleep(0.8)
    drill_platform.kill("payment-worker")
    assert _dispute_of(drill_sessions, payment_id).status == "under_review", (  # type: ignore[union-attr]
        "the kill came too late to be mid-decision"
    )
    drill_platform.start_process("payment-worker")
    won = _wait_dispute(drill_sessions, payment_id, lambda d: d.reinstate_time is not None)
    assert won.status == "won"
    assert len(ledger_transaction_ids(drill_platform, dispute.id)) == 2
    assert _dispute_events(drill_sessions, dispute.id) == [
        "dispute.created",
        "dispute.funds_withdrawn",
        "dispute.updated",
        "dispute.closed",
        "dispute.funds_reinstated",
    ]
