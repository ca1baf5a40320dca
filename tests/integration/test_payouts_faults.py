"""Payout fault drills on a platform of their own: the worker killed while the bank is paying,
the relay's sweeper killed while funds wait to become available. After a restart the money, the
ledger and the events come out exactly once."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from services.admin import merchants
from services.common.db import transaction
from services.payment.models import BankTransfer, OutboxMessage
from services.runtime.platform import LocalPlatform
from tests.integration.test_payments import card, wait_for
from tests.integration.test_payouts import (
    PAYS,
    balance,
    create_payout,
    ledger_legs,
    payout_events,
    set_payout_settings,
    wait_available,
    wait_payout,
    wait_until,
)

DRILL_TIMEOUT_S = 90.0


@pytest.fixture
def drill_key(drill_sessions: sessionmaker[Session]) -> str:
    """A test-mode secret key of a fresh merchant on the drill platform."""
    with transaction(drill_sessions) as session:
        made = merchants.create_merchant(session, name="Payout Drill Shop")
        return merchants.create_api_key(
            session, merchant_id=made.id, mode="test", kind="secret"
        ).key


def _paid_payment(api: httpx.Client, key: str, amount: int) -> dict[str, Any]:
    response = api.post(
        "/v1/payments",
        json={"amount": amount, "currency": "USD", "payment_method": {"card": card()}},
        headers={"X-API-Key": key},
    )
    assert response.status_code == 200, response.text
    payment = wait_for(api, key, response.json()["id"], timeout_s=DRILL_TIMEOUT_S)
    assert payment["status"] == "succeeded"
    return payment


def _transfers(sessions: sessionmaker[Session], payout_id: str) -> int:
    with transaction(sessions) as session:
        return int(
            session.scalar(
                select(func.count())
                .select_from(BankTransfer)
                .where(BankTransfer.payout_id == payout_id)
            )
            or 0
        )


def test_worker_killed_while_the_bank_pays__payout_is_paid_exactly_once(
    drill_platform: LocalPlatform,
    drill_api: httpx.Client,
    drill_key: str,
    drill_sessions: sessionmaker[Session],
) -> None:
    set_payout_settings(drill_api, drill_key, bank_account_number=PAYS, settlement_delay_s=0)
    payment = _paid_payment(drill_api, drill_key, 8000)
    net = payment["amount_received"] - payment["fee"]
    wait_available(drill_api, drill_key, "USD", net)
    created = create_payout(drill_api, drill_key, amount=net, currency="USD").json()
    # In transit: the creation is posted and the (slow) bank call is under way. Kill it there.
    wait_payout(drill_api, drill_key, created["id"], {"in_transit"})
    drill_platform.kill("payment-worker")
    assert _transfers(drill_sessions, created["id"]) == 0, "the kill came too late"
    drill_platform.start_process("payment-worker")

    done = wait_payout(drill_api, drill_key, created["id"], {"paid", "failed"})
    assert done["status"] == "paid"
    assert _transfers(drill_sessions, created["id"]) == 1
    assert len(ledger_legs(drill_platform, created["id"])) == 2
    assert balance(drill_api, drill_key) == {"USD": (0, 0)}
    wait_until(
        lambda: (
            payout_events(drill_sessions, created["id"])
            == ["payout.created", "payout.updated", "payout.paid"]
        ),
        "each event once",
    )


def test_relay_killed_while_funds_are_pending__they_become_available_exactly_once(
    drill_platform: LocalPlatform,
    drill_api: httpx.Client,
    drill_key: str,
    drill_sessions: sessionmaker[Session],
) -> None:
    set_payout_settings(drill_api, drill_key, settlement_delay_s=2)
    payment = _paid_payment(drill_api, drill_key, 6000)
    net = payment["amount_received"] - payment["fee"]
    drill_platform.kill("payment-relay")
    try:
        time.sleep(2.5)  # the delay passes while nothing sweeps
        assert balance(drill_api, drill_key) == {"USD": (0, net)}
    finally:
        drill_platform.start_process("payment-relay")
    wait_available(drill_api, drill_key, "USD", net)
    time.sleep(1.5)  # more sweeps: nothing moves twice
    assert balance(drill_api, drill_key) == {"USD": (net, 0)}
    assert len(ledger_legs(drill_platform, payment["id"])) == 1  # the capture (by its source)
    with transaction(drill_sessions) as session:
        events = session.scalars(
            select(OutboxMessage.payload).where(OutboxMessage.topic == "balance.available")
        ).all()
    ours = [e for e in events if e["merchant_id"] == payment["merchant_id"]]
    assert [e["object"]["available"] for e in ours] == [
        [{"currency": "USD", "available": net, "pending": 0}]
    ]
