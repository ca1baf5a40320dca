"""Crash drills for the dispute lifecycle (issue 16, "a crash at each step"), through the edge.

The real payment worker and relay (which runs the sweeper) are SIGKILLed between the steps of a
dispute: the sweeper inside the transaction that files and opens it, and right after it opened
it; the worker between the withdrawal's ledger posting and its record on the dispute, with the
withdrawal's posting still waiting in the ledger, after the network decided and before the
decision is recorded, and between the reinstatement's posting and its record. After the
restart (the sweeper re-drives what the dead worker left), each dispute, its ledger
transactions (`dispute:<id>`, `dispute:<id>:won`) and its events come out exactly once,
reconciliation finds nothing wrong with them and the trial balance is zero.

The processor's latency (as in the other drills) leaves time to act while the network decides;
the other kill points are held open with what a concurrent database client can do, not with
hooks in the services: a row lock on the dispute (or the payment) that the next step waits for,
or an uncommitted row holding the unique key (a ledger reference, a payment's processor
dispute) that the step's insert waits on. The test checks that a backend waits on its hold
(`pg_blocking_pids`: the worker's, or the ledger's posting for it), kills, then lets go.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
from sqlalchemy import Connection, Engine, select, text
from sqlalchemy.orm import Session, sessionmaker

from services.admin import merchants
from services.common.db import make_sessionmaker, transaction
from services.payment.models import Dispute, ProcessorDispute
from services.runtime.platform import LocalPlatform
from tests.integration.test_disputes import FRAUDULENT_CARD, USD_DISPUTE_FEE, dispute_events
from tests.integration.test_payments import card, wait_for
from tests.integration.test_payments_3ds_customers_faults import (
    assert_events_once,
    assert_trial_balance_zero,
)
from tests.integration.test_payouts import (
    balance,
    ledger_legs,
    reconcile_mismatches,
    set_payout_settings,
)

DRILL_TIMEOUT_S = 90.0


@pytest.fixture
def key(drill_sessions: sessionmaker[Session]) -> str:
    """A fresh merchant's test-mode secret key on the drill platform (its own events only)."""
    with transaction(drill_sessions) as session:
        made = merchants.create_merchant(session, name="Dispute Drill Shop")
        return merchants.create_api_key(
            session, merchant_id=made.id, mode="test", kind="secret"
        ).key


@pytest.fixture
def restored(drill_platform: LocalPlatform) -> Iterator[None]:
    """Whatever a test kills of the worker and the relay, they run again afterwards."""
    try:
        yield
    finally:
        for name in ("payment-worker", "payment-relay"):
            if drill_platform.children[name].poll() is not None:
                drill_platform.start_process(name)


# --- holding a step open -------------------------------------------------------------------


class Hold:
    """An open database transaction of the test's own, and its backend's pid."""

    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        self.pid = int(connection.execute(text("SELECT pg_backend_pid()")).scalar_one())

    def run(self, statement: str, **parameters: Any) -> None:
        """Runs a statement inside the held transaction."""
        self.connection.execute(text(statement), parameters)


@contextmanager
def hold(engine: Engine) -> Iterator[Hold]:
    """A transaction that is rolled back on leaving: whatever it locked is let go then."""
    with engine.connect() as connection:
        connection.begin()
        try:
            yield Hold(connection)
        finally:
            connection.rollback()


def waiting_on(engine: Engine, held: Hold) -> int:
    """How many other backends wait for a lock that `held` holds."""
    with engine.connect() as connection:
        return int(
            connection.execute(
                text(
                    "SELECT count(*) FROM pg_stat_activity"
                    " WHERE CAST(:pid AS integer) = ANY(pg_blocking_pids(pid))"
                ),
                {"pid": held.pid},
            ).scalar_one()
        )


def until(check: Callable[[], Any], what: str, *, interval_s: float = 0.05) -> Any:
    """Polls `check()` until it answers something true; returns that."""
    deadline = time.monotonic() + DRILL_TIMEOUT_S
    while True:
        found = check()
        if found:
            return found
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(interval_s)


def lock_dispute(held: Hold, dispute_id: str) -> None:
    """The dispute's row lock, which the worker takes to record each step."""
    held.run("SELECT id FROM payment.disputes WHERE id = :id FOR UPDATE", id=dispute_id)


def hold_ledger_reference(held: Hold, reference: str, source_id: str) -> None:
    """An uncommitted ledger transaction with `reference`: a posting of it waits until the
    holder rolls back (ON CONFLICT on the unique reference), then goes in."""
    held.run(
        "INSERT INTO ledger.transactions"
        " (id, external_reference, postings_hash, description, metadata, livemode, source_id)"
        " VALUES (:id, :reference, '', 'drill holder', CAST('{}' AS jsonb), false, :source)",
        id="txn_hold_" + secrets.token_hex(6),
        reference=reference,
        source=source_id,
    )


def hold_processor_dispute(held: Hold, payment_id: str) -> None:
    """An uncommitted processor dispute of the payment: the sweeper's filing of the payment's
    dispute waits (ON CONFLICT on the unique payment_id) until the holder rolls back."""
    held.run(
        "INSERT INTO processor.disputes (id, charge_id, payment_id, kind, reason, amount, currency)"
        " VALUES (:id, '', :payment, 'chargeback', 'fraudulent', 1, 'USD')",
        id="pdp_hold_" + secrets.token_hex(6),
        payment=payment_id,
    )


# --- reading what happened -----------------------------------------------------------------


def disputes_of(sessions: sessionmaker[Session], payment_id: str) -> list[Dispute]:
    """The payment's dispute rows (there must be at most one)."""
    with transaction(sessions) as session:
        rows = list(session.scalars(select(Dispute).where(Dispute.payment_id == payment_id)))
        session.expunge_all()
        return rows


def the_dispute(sessions: sessionmaker[Session], payment_id: str) -> Dispute | None:
    """The payment's one dispute, once opened."""
    rows = disputes_of(sessions, payment_id)
    assert len(rows) <= 1, rows
    return rows[0] if rows else None


def processor_disputes(sessions: sessionmaker[Session], payment_id: str) -> list[ProcessorDispute]:
    """The network's committed disputes of the payment."""
    with transaction(sessions) as session:
        rows = list(
            session.scalars(
                select(ProcessorDispute).where(ProcessorDispute.payment_id == payment_id)
            )
        )
        session.expunge_all()
        return rows


def posted(sessions: sessionmaker[Session], reference: str) -> bool:
    """Whether the ledger holds a committed transaction with `reference`."""
    with transaction(sessions) as session:
        return bool(
            session.scalar(
                text("SELECT count(*) FROM ledger.transactions WHERE external_reference = :r"),
                {"r": reference},
            )
        )


def withdrawal_legs(amount: int) -> list[tuple[str, str, int]]:
    """A chargeback's withdrawal: amount + fee from the merchant; the receivable and the fees."""
    return sorted(
        [
            ("merchant_balance", "debit", amount + USD_DISPUTE_FEE),
            ("platform_fees", "credit", USD_DISPUTE_FEE),
            ("processor_receivable", "credit", amount),
        ]
    )


def reinstatement_legs(amount: int) -> list[tuple[str, str, int]]:
    """A won dispute's reinstatement: the amount (not the fee) back to the merchant."""
    return sorted(
        [("merchant_balance", "credit", amount), ("processor_receivable", "debit", amount)]
    )


def assert_ledger(
    platform: LocalPlatform, dispute_id: str, expected: list[list[tuple[str, str, int]]]
) -> None:
    """The dispute caused exactly these ledger transactions (each one's legs)."""
    assert sorted(ledger_legs(platform, dispute_id).values()) == sorted(expected)


def assert_reconciled(platform: LocalPlatform, *ids: str) -> None:
    """Reconciliation finds nothing wrong with these objects (nor anything unattributed), and
    debits equal credits."""
    assert reconcile_mismatches(platform, set(ids)) == []
    assert_trial_balance_zero(platform)


def dispute_payment(api: httpx.Client, key: str, amount: int) -> dict[str, Any]:
    """A payment with the fraudulent-chargeback card, created through the edge (processing)."""
    response = api.post(
        "/v1/payments",
        json={
            "amount": amount,
            "currency": "USD",
            "payment_method": {"card": card(FRAUDULENT_CARD)},
        },
        headers={"X-API-Key": key, "Idempotency-Key": secrets.token_hex(8)},
    )
    assert response.status_code == 200, response.text
    created: dict[str, Any] = response.json()
    return created


def succeeded(api: httpx.Client, key: str, payment_id: str) -> dict[str, Any]:
    """The payment once it succeeded."""
    final = wait_for(api, key, payment_id, timeout_s=DRILL_TIMEOUT_S)
    assert final["status"] == "succeeded", final
    return final


def get_dispute(api: httpx.Client, key: str, dispute_id: str) -> dict[str, Any]:
    """GET /v1/disputes/{id}."""
    response = api.get(f"/v1/disputes/{dispute_id}", headers={"X-API-Key": key})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def wait_dispute(api: httpx.Client, key: str, dispute_id: str, **wanted: Any) -> dict[str, Any]:
    """Polls the dispute through the edge until each of `wanted`'s fields has its value."""

    def check() -> dict[str, Any] | None:
        body = get_dispute(api, key, dispute_id)
        return body if all(body.get(k, False) == v for k, v in wanted.items()) else None

    found: dict[str, Any] = until(check, f"{dispute_id} with {wanted}", interval_s=0.1)
    return found


def submit_winning(api: httpx.Client, key: str, dispute_id: str) -> dict[str, Any]:
    """POST /v1/disputes/{id}: the winning test evidence, submitted."""
    response = api.post(
        f"/v1/disputes/{dispute_id}",
        json={"evidence": {"uncategorized_text": "winning_evidence"}, "submit": True},
        headers={"X-API-Key": key, "Idempotency-Key": secrets.token_hex(8)},
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


# --- the drills ----------------------------------------------------------------------------


@pytest.mark.usefixtures("restored")
def test_relay_killed_inside_the_opening_and_right_after_it__dispute_opened_once(
    drill_platform: LocalPlatform,
    drill_api: httpx.Client,
    drill_engine: Engine,
    key: str,
    catalog: set[str],
) -> None:
    drill_sessions = make_sessionmaker(drill_engine)
    # The funds stay pending, so no release of the sweeper's touches the payment meanwhile.
    set_payout_settings(drill_api, key, settlement_delay_s=3600)
    payment = dispute_payment(drill_api, key, 5_000)
    with hold(drill_engine) as filing:
        # The network's filing waits until the payment is locked below.
        hold_processor_dispute(filing, payment["id"])
        payment = succeeded(drill_api, key, payment["id"])
        with hold(drill_engine) as payment_lock:
            payment_lock.run(
                "SELECT id FROM payment.payments WHERE id = :id FOR UPDATE", id=payment["id"]
            )
            filing.connection.rollback()
            # The sweeper filed the dispute and took it (uncommitted), and waits for the payment
            # row to open it: killed there, its whole transaction is lost.
            until(lambda: waiting_on(drill_engine, payment_lock), "the sweeper inside the opening")
            drill_platform.kill("payment-relay")
    assert disputes_of(drill_sessions, payment["id"]) == []
    assert processor_disputes(drill_sessions, payment["id"]) == []

    # Killed again as soon as the opening committed: its event and the worker's job may not
    # have been handed on yet.
    drill_platform.start_process("payment-relay")
    opened = until(
        lambda: the_dispute(drill_sessions, payment["id"]), "the dispute opened", interval_s=0.01
    )
    drill_platform.kill("payment-relay")
    drill_platform.start_process("payment-relay")

    shown = wait_dispute(drill_api, key, opened.id, funds_withdrawn=True)
    assert (shown["status"], shown["amount"], shown["fee"]) == (
        "needs_response",
        5_000,
        USD_DISPUTE_FEE,
    )
    assert [d.id for d in disputes_of(drill_sessions, payment["id"])] == [opened.id]
    filed = processor_disputes(drill_sessions, payment["id"])
    assert [f.id for f in filed] == [opened.processor_dispute_id]
    paid = drill_api.get(f"/v1/payments/{payment['id']}", headers={"X-API-Key": key}).json()
    assert (paid["disputed"], paid["dispute"]) == (True, opened.id)
    assert_ledger(drill_platform, opened.id, [withdrawal_legs(5_000)])
    assert dispute_events(drill_sessions, opened.id) == [
        "dispute.created",
        "dispute.funds_withdrawn",
    ]
    assert_events_once(
        drill_api, key, opened.id, ["dispute.created", "dispute.funds_withdrawn"], catalog
    )
    assert_reconciled(drill_platform, opened.id, payment["id"], payment["merchant_id"])


@pytest.mark.usefixtures("restored")
def test_worker_killed_between_the_withdrawal_posting_and_its_record__withdrawn_once(
    drill_platform: LocalPlatform,
    drill_api: httpx.Client,
    drill_engine: Engine,
    key: str,
    catalog: set[str],
) -> None:
    drill_sessions = make_sessionmaker(drill_engine)
    set_payout_settings(drill_api, key, settlement_delay_s=0)
    payment = dispute_payment(drill_api, key, 10_000)
    with hold(drill_engine) as filing:
        # The dispute is filed only once the worker is dead: its job waits in Redis.
        hold_processor_dispute(filing, payment["id"])
        payment = succeeded(drill_api, key, payment["id"])
        drill_platform.kill("payment-worker")
    opened = until(lambda: the_dispute(drill_sessions, payment["id"]), "the dispute opened")
    reference = f"dispute:{opened.id}"
    with hold(drill_engine) as dispute_lock:
        lock_dispute(dispute_lock, opened.id)
        drill_platform.start_process("payment-worker")
        # The worker posts the withdrawal, then waits for the dispute's row to record it.
        until(lambda: posted(drill_sessions, reference), "the withdrawal posted")
        until(lambda: waiting_on(drill_engine, dispute_lock), "the worker waiting to record it")
        drill_platform.kill("payment-worker")
        unrecorded = the_dispute(drill_sessions, payment["id"])
        assert unrecorded is not None and unrecorded.withdraw_time is None
    assert dispute_events(drill_sessions, opened.id) == ["dispute.created"]
    drill_platform.start_process("payment-worker")

    # The sweeper re-drives the dispute; the repeated posting finds the ledger's, and records it.
    shown = wait_dispute(drill_api, key, opened.id, funds_withdrawn=True)
    assert shown["status"] == "needs_response"
    recorded = the_dispute(drill_sessions, payment["id"])
    assert recorded is not None and recorded.ledger_reference == reference
    assert_ledger(drill_platform, opened.id, [withdrawal_legs(10_000)])
    net = payment["amount_received"] - payment["fee"]
    until(
        lambda: balance(drill_api, key) == {"USD": (net - 10_000 - USD_DISPUTE_FEE, 0)},
        "the balance with the withdrawal",
    )
    assert dispute_events(drill_sessions, opened.id) == [
        "dispute.created",
        "dispute.funds_withdrawn",
    ]
    assert_events_once(
        drill_api, key, opened.id, ["dispute.created", "dispute.funds_withdrawn"], catalog
    )
    assert_reconciled(drill_platform, opened.id, payment["id"], payment["merchant_id"])


@pytest.mark.usefixtures("restored")
def test_worker_killed_while_its_withdrawal_waits_in_the_ledger__withdrawn_once(
    drill_platform: LocalPlatform,
    drill_api: httpx.Client,
    drill_engine: Engine,
    key: str,
    catalog: set[str],
) -> None:
    drill_sessions = make_sessionmaker(drill_engine)
    payment = dispute_payment(drill_api, key, 7_000)
    with hold(drill_engine) as filing:
        hold_processor_dispute(filing, payment["id"])
        payment = succeeded(drill_api, key, payment["id"])
        drill_platform.kill("payment-worker")
    opened = until(lambda: the_dispute(drill_sessions, payment["id"]), "the dispute opened")
    reference = f"dispute:{opened.id}"
    with hold(drill_engine) as ledger_busy:
        hold_ledger_reference(ledger_busy, reference, opened.id)
        drill_platform.start_process("payment-worker")
        # The worker's posting is in the ledger's hands, not committed: the worker dies there.
        until(lambda: waiting_on(drill_engine, ledger_busy), "the withdrawal waiting in the ledger")
        drill_platform.kill("payment-worker")
    # The ledger carries the orphaned posting out once the holder lets go; nothing records it
    # until the sweeper re-drives the dispute.
    until(lambda: posted(drill_sessions, reference), "the orphaned withdrawal posted")
    drill_platform.start_process("payment-worker")

    wait_dispute(drill_api, key, opened.id, funds_withdrawn=True)
    assert_ledger(drill_platform, opened.id, [withdrawal_legs(7_000)])
    assert dispute_events(drill_sessions, opened.id) == [
        "dispute.created",
        "dispute.funds_withdrawn",
    ]
    assert_events_once(
        drill_api, key, opened.id, ["dispute.created", "dispute.funds_withdrawn"], catalog
    )
    assert_reconciled(drill_platform, opened.id, payment["id"], payment["merchant_id"])


@pytest.mark.usefixtures("restored")
def test_won__worker_killed_after_the_decision_and_after_the_reinstatement_posting__once(
    drill_platform: LocalPlatform,
    drill_api: httpx.Client,
    drill_engine: Engine,
    key: str,
    catalog: set[str],
) -> None:
    drill_sessions = make_sessionmaker(drill_engine)
    set_payout_settings(drill_api, key, settlement_delay_s=0)
    payment = succeeded(drill_api, key, dispute_payment(drill_api, key, 4_000)["id"])
    opened = until(lambda: the_dispute(drill_sessions, payment["id"]), "the dispute opened")
    wait_dispute(drill_api, key, opened.id, funds_withdrawn=True)

    # 1. The network decides (a processor call, slow here) while the test holds the dispute's
    # row: the decision is the network's, and the worker dies before recording it.
    with hold(drill_engine) as dispute_lock:
        assert submit_winning(drill_api, key, opened.id)["status"] == "under_review"
        lock_dispute(dispute_lock, opened.id)
        until(
            lambda: (
                [f.outcome for f in processor_disputes(drill_sessions, payment["id"])] == ["won"]
            ),
            "the network's decision",
        )
        until(lambda: waiting_on(drill_engine, dispute_lock), "the worker waiting to record it")
        drill_platform.kill("payment-worker")
    assert get_dispute(drill_api, key, opened.id)["status"] == "under_review"

    # 2. Restarted, the re-driven worker asks again (the network answers its first decision),
    # records the win, and posts the reinstatement; the ledger holds that posting until the
    # test has the dispute's row, so the worker dies after the posting, before its record.
    reference = f"dispute:{opened.id}:won"
    with hold(drill_engine) as ledger_busy:
        hold_ledger_reference(ledger_busy, reference, opened.id)
        drill_platform.start_process("payment-worker")
        wait_dispute(drill_api, key, opened.id, status="won")
        until(lambda: waiting_on(drill_engine, ledger_busy), "the reinstatement in the ledger")
        with hold(drill_engine) as dispute_lock:
            lock_dispute(dispute_lock, opened.id)
            ledger_busy.connection.rollback()
            until(lambda: posted(drill_sessions, reference), "the reinstatement posted")
            until(lambda: waiting_on(drill_engine, dispute_lock), "the worker waiting to record")
            drill_platform.kill("payment-worker")
    unrecorded = get_dispute(drill_api, key, opened.id)
    assert unrecorded["status"] == "won" and not unrecorded.get("funds_reinstated")
    drill_platform.start_process("payment-worker")

    shown = wait_dispute(drill_api, key, opened.id, status="won", funds_reinstated=True)
    assert shown["evidence"]["uncategorized_text"] == "winning_evidence"
    assert_ledger(drill_platform, opened.id, [withdrawal_legs(4_000), reinstatement_legs(4_000)])
    net = payment["amount_received"] - payment["fee"]
    until(
        lambda: balance(drill_api, key) == {"USD": (net - USD_DISPUTE_FEE, 0)},
        "the balance with the fee kept",
    )
    wanted = [
        "dispute.created",
        "dispute.funds_withdrawn",
        "dispute.updated",
        "dispute.closed",
        "dispute.funds_reinstated",
    ]
    assert dispute_events(drill_sessions, opened.id) == wanted
    assert_events_once(drill_api, key, opened.id, wanted, catalog)
    filed = processor_disputes(drill_sessions, payment["id"])
    assert [(f.kind, f.outcome) for f in filed] == [("chargeback", "won")]
    assert_reconciled(drill_platform, opened.id, payment["id"], payment["merchant_id"])
