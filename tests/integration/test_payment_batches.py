"""The payment worker's batch drive (`drive_batch`), in-process, on a payment schema of its own.

The payments are written straight into a fresh database in `processing` (no outbox job rows
and no relay there), so only the drive under test moves them; it posts to the shared
platform's ledger service.
"""

from __future__ import annotations

import dataclasses
import secrets
from collections.abc import Iterator
from datetime import UTC, datetime

import psycopg
import pytest
from paymesh.ledger.v1 import ledger_internal_pb2, ledger_internal_pb2_grpc
from sqlalchemy import select

from services.common.clients import sync_channel
from services.common.db import make_engine, make_sessionmaker, transaction
from services.common.ids import new_id
from services.common.migrations import upgrade
from services.common.ports import free_port
from services.common.queue import make_queue, redis_connection
from services.payment import ledger
from services.payment.jobs import BatchIncomplete, WorkerContext, drive_batch
from services.payment.models import OutboxMessage, Payment, ProcessorCharge
from services.payment.processor import SimulatedProcessor
from services.payment.relay import webhook_publisher
from services.payment.validation import CardInput
from services.runtime.platform import LocalPlatform, settings_from
from tests.integration.conftest import MerchantKeys, _fresh_database


@pytest.fixture(scope="module")
def worker(platform: LocalPlatform) -> Iterator[WorkerContext]:
    """A worker's context on a fresh payment schema, posting to the platform's ledger."""
    url = _fresh_database(platform.settings.require_database_url())
    upgrade(url, ("payment",))
    engine = make_engine(url, pool_size=4)
    sessions = make_sessionmaker(engine)
    channel = sync_channel(platform.settings.target("ledger"))
    yield WorkerContext(
        settings=platform.settings,
        engine=engine,
        sessions=sessions,
        processor=SimulatedProcessor(sessions, latency_ms=0),
        ledger=ledger_internal_pb2_grpc.LedgerInternalServiceStub(channel),
        publish=webhook_publisher(platform.settings),
        queue=make_queue(
            f"paymesh.payments.batch-test-{secrets.token_hex(4)}",
            redis_connection(platform.settings),
        ),
    )
    channel.close()
    engine.dispose()


def _processing(
    ctx: WorkerContext, merchant_id: str, number: str, *, amount: int = 1000, manual: bool = False
) -> str:
    """A payment in `processing` with the card `number` vaulted; its id."""
    payment_id = new_id("pay")
    card = CardInput(number=number, exp_month=12, exp_year=datetime.now(UTC).year + 3, cvc="123")
    with transaction(ctx.sessions) as session:
        token = ctx.processor.tokenize(card, session=session)
        session.add(
            Payment(
                id=payment_id,
                merchant_id=merchant_id,
                livemode=False,
                amount=amount,
                currency="usd",
                status="processing",
                capture_method="manual" if manual else "automatic",
                fee_bps=290,
                fee_fixed=30,
                client_secret=f"{payment_id}_secret_x",
                processor_token=token.token,
                card_brand=token.brand,
                card_last4=token.last4,
                drive_count=1,
                drive_time=datetime.now(UTC),
            )
        )
    return payment_id


def _state(ctx: WorkerContext, payment_id: str) -> tuple[str, list[str], int]:
    """A payment's status, its events in the outbox, and the processor's charges for it."""
    with transaction(ctx.sessions) as session:
        status = session.scalar(select(Payment.status).where(Payment.id == payment_id))
        events = session.scalars(
            select(OutboxMessage.topic)
            .where(OutboxMessage.kind == "event")
            .where(OutboxMessage.payload["object"]["id"].astext == payment_id)
            .order_by(OutboxMessage.id)
        ).all()
        charges = session.scalars(
            select(ProcessorCharge).where(ProcessorCharge.payment_id == payment_id)
        ).all()
    return str(status), list(events), len(charges)


def _unrelayed(ctx: WorkerContext, payment_id: str) -> list[tuple[str, int]]:
    """The payment's events still waiting for the relay: type and attempts so far."""
    with transaction(ctx.sessions) as session:
        rows = session.scalars(
            select(OutboxMessage)
            .where(OutboxMessage.relay_time.is_(None))
            .where(OutboxMessage.payload["object"]["id"].astext == payment_id)
        ).all()
        return [(row.topic, row.attempts) for row in rows]


def _ledger_entries(ctx: WorkerContext, payment_id: str) -> list[tuple[str, int]]:
    reply = ctx.ledger.ListEntries(
        ledger_internal_pb2.ListEntriesRequest(source_id=payment_id), timeout=10
    )
    return sorted((entry.direction, entry.amount) for entry in reply.entries)


def test_drive_batch__every_card_behaviour_in_one_batch_each_payment_once(
    worker: WorkerContext, merchant: MerchantKeys
) -> None:
    paid = [_processing(worker, merchant.id, "4242424242424242", amount=1000 + n) for n in range(3)]
    declined = _processing(worker, merchant.id, "4000000000000002")
    no_funds = _processing(worker, merchant.id, "4000000000009995")
    manual = _processing(worker, merchant.id, "5555555555554444", manual=True)
    unavailable_once = _processing(worker, merchant.id, "4000000000000119")
    lost_answer_once = _processing(worker, merchant.id, "4000000000001000")
    unknown = new_id("pay")
    batch = [*paid, declined, no_funds, manual, unavailable_once, lost_answer_once, unknown]

    counts = drive_batch(worker, batch)

    assert counts == {
        "succeeded": 5,
        "failed": 2,
        "requires_capture": 1,
        "nothing to do": 1,
    }
    for payment_id in [*paid, unavailable_once, lost_answer_once]:
        assert _state(worker, payment_id) == ("succeeded", ["payment.succeeded"], 1)
    assert _state(worker, declined) == ("failed", ["payment.failed"], 0)
    assert _state(worker, no_funds) == ("failed", ["payment.failed"], 0)
    assert _state(worker, manual) == ("requires_capture", ["payment.requires_capture"], 1)
    # 1,000 at 2.9% + 30: a fee of 59, the merchant's 941; one posting per payment.
    assert _ledger_entries(worker, paid[0]) == [("credit", 59), ("credit", 941), ("debit", 1000)]
    with transaction(worker.sessions) as session:
        first = session.get(Payment, paid[0])
        assert first is not None and first.fee == 59 and first.amount_received == 1000
        assert first.ledger_reference == ledger.capture_reference(paid[0])
        assert first.settle_time is not None and first.amount_capturable == 0

    # The drive handed its events to the webhook service itself: none waits for the relay.
    assert all(_unrelayed(worker, payment_id) == [] for payment_id in batch)

    # Driven again (a duplicate job, a re-drive): nothing moves, nothing is charged or posted.
    assert drive_batch(worker, batch) == {"nothing to do": len(batch)}
    for payment_id in paid:
        assert _state(worker, payment_id) == ("succeeded", ["payment.succeeded"], 1)
        assert len(_ledger_entries(worker, payment_id)) == 3


def test_drive_batch__payments_another_worker_holds_are_left_to_it(
    worker: WorkerContext, merchant: MerchantKeys
) -> None:
    held, free = (_processing(worker, merchant.id, "4242424242424242") for _ in range(2))
    url = worker.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(url, autocommit=True) as other_worker:
        other_worker.execute(
            "SELECT pg_advisory_lock(hashtextextended(%s, 0))", [f"payment:{held}"]
        )
        assert drive_batch(worker, [held, free]) == {"busy": 1, "succeeded": 1}
        assert _state(worker, held) == ("processing", [], 0)
    # Its lock gone (the other worker died), the next drive takes it.
    assert drive_batch(worker, [held, free]) == {"succeeded": 1, "nothing to do": 1}
    assert _state(worker, held) == ("succeeded", ["payment.succeeded"], 1)


def test_drive_batch__a_payment_that_meets_an_error_stays_processing_and_the_others_go_on(
    worker: WorkerContext, merchant: MerchantKeys
) -> None:
    good = _processing(worker, merchant.id, "4242424242424242")
    broken = _processing(worker, merchant.id, "4242424242424242")
    with transaction(worker.sessions) as session:
        payment = session.get(Payment, broken)
        assert payment is not None
        payment.processor_token = "tok_gone"  # the vault has no such card

    with pytest.raises(BatchIncomplete) as raised:
        drive_batch(worker, [good, broken])

    assert raised.value.errors == {broken: f"error: authorize: unknown card token for {broken}"}
    assert _state(worker, good) == ("succeeded", ["payment.succeeded"], 1)
    assert _state(worker, broken) == ("processing", [], 0)


def test_drive_batch__webhook_service_down__the_events_wait_in_the_outbox_for_the_relay(
    worker: WorkerContext, merchant: MerchantKeys, platform: LocalPlatform
) -> None:
    nowhere = settings_from(
        {
            "PAYMESH_WEBHOOK_TARGET": f"127.0.0.1:{free_port()}",
            "PAYMESH_DATABASE_URL": platform.settings.require_database_url(),
        }
    )
    cut_off = dataclasses.replace(worker, publish=webhook_publisher(nowhere))
    payment_id = _processing(worker, merchant.id, "4242424242424242")

    assert drive_batch(cut_off, [payment_id]) == {"succeeded": 1}

    assert _state(worker, payment_id) == ("succeeded", ["payment.succeeded"], 1)
    # Deferred with backoff, as the relay defers it; the relay hands it over later.
    assert _unrelayed(worker, payment_id) == [("payment.succeeded", 1)]


def test_drive_batch__ledger_down__captured_payments_wait_then_post_once(
    worker: WorkerContext, merchant: MerchantKeys
) -> None:
    channel = sync_channel(f"127.0.0.1:{free_port()}")
    no_ledger = dataclasses.replace(
        worker, ledger=ledger_internal_pb2_grpc.LedgerInternalServiceStub(channel)
    )
    batch = [_processing(worker, merchant.id, "4242424242424242") for _ in range(2)]

    with pytest.raises(BatchIncomplete) as raised:
        drive_batch(no_ledger, batch)
    channel.close()

    assert set(raised.value.errors) == set(batch)
    assert all("error: ledger: UNAVAILABLE" in error for error in raised.value.errors.values())
    # Authorized and captured at the processor, not posted: still processing, no event.
    for payment_id in batch:
        assert _state(worker, payment_id) == ("processing", [], 1)
        assert _ledger_entries(worker, payment_id) == []
    # The sweeper's next drive, with the ledger back: posted once, succeeded once.
    assert drive_batch(worker, batch) == {"succeeded": 2}
    for payment_id in batch:
        assert _state(worker, payment_id) == ("succeeded", ["payment.succeeded"], 1)
        assert len(_ledger_entries(worker, payment_id)) == 3
