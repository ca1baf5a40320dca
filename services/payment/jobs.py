"""RQ jobs of the payment worker: drive payments and refunds through the processor and ledger.

Every job takes an id, reloads the row, and does only what the row's state still asks for, so a
job may run twice, or after a crash half-way, without charging, posting or emitting twice:

- the processor is idempotent by payment id (authorize, capture, void) and refund id;
- the ledger is idempotent by external reference;
- a state change is one transaction that re-checks the state under the row lock and writes
  its event to the outbox.

A session-level advisory lock per payment (or refund) keeps two workers from working on the
same one at once; PostgreSQL releases it when a killed worker's connection drops.

Retry policy: a processor that is unavailable (or whose answer was lost) is retried inside the
job, `PROCESSOR_ATTEMPTS_MAX` times with exponential backoff. Anything else (the ledger down,
Redis lost the job, the worker was killed) leaves the payment `processing` or the refund
`pending`; the relay's sweeper re-drives it after `payment_stuck_after_s`, with a new job id.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from typing import TypeVar

from paymesh.ledger.v1 import ledger_internal_pb2_grpc
from sqlalchemy import ColumnElement, Engine, func, select
from sqlalchemy.orm import Session, sessionmaker
from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential

from services.common.clients import sync_channel
from services.common.db import make_engine, make_sessionmaker, transaction
from services.common.settings import Settings
from services.payment import ledger, outbox
from services.payment.errors import ProcessorError, ProcessorUnavailable
from services.payment.fees import compute_fee
from services.payment.models import Payment, Refund
from services.payment.processor import Connector, SimulatedProcessor

logger = logging.getLogger(__name__)

PROCESSOR_ATTEMPTS_MAX = 4
T = TypeVar("T")


@dataclass(frozen=True)
class WorkerContext:
    """What jobs need, built once per worker process."""

    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    processor: Connector
    ledger: ledger_internal_pb2_grpc.LedgerInternalServiceStub


_context_lock = threading.Lock()


def context() -> WorkerContext:
    """The worker's context, from the environment's settings (built once, on first use)."""
    # The worker's threads share it; the lock keeps two first jobs from building two.
    with _context_lock:
        return _build_context()


@cache
def _build_context() -> WorkerContext:
    settings = Settings()
    # A job holds two connections at once (its advisory lock's and a transaction's), and the
    # process runs `worker_concurrency` jobs at a time.
    engine = make_engine(
        settings.require_database_url(),
        pool_size=2 * settings.worker_concurrency,
        application_name="paymesh-payment-worker",
    )
    sessions = make_sessionmaker(engine)
    return WorkerContext(
        settings=settings,
        engine=engine,
        sessions=sessions,
        processor=SimulatedProcessor(sessions, latency_ms=settings.processor_latency_ms),
        ledger=ledger_internal_pb2_grpc.LedgerInternalServiceStub(
            sync_channel(settings.target("ledger"))
        ),
    )


def _lock_key(name: str) -> ColumnElement[int]:
    # 64 bits, so two payments practically never share a lock.
    return func.hashtextextended(name, 0)


@contextmanager
def exclusive(engine: Engine, name: str) -> Iterator[bool]:
    """Holds a session-level advisory lock on `name` if free; yields whether it is held."""
    with engine.connect() as connection:
        held = bool(connection.execute(select(func.pg_try_advisory_lock(_lock_key(name)))).scalar())
        connection.commit()
        try:
            yield held
        finally:
            if held:
                connection.execute(select(func.pg_advisory_unlock(_lock_key(name))))
                connection.commit()


def with_processor_retries(call: Callable[[], T]) -> T:
    """Runs a processor call, retrying while the processor is unavailable."""
    retrying = Retrying(
        stop=stop_after_attempt(PROCESSOR_ATTEMPTS_MAX),
        wait=wait_exponential(multiplier=0.1, max=2),
        retry=retry_if_exception_type(ProcessorUnavailable),
        reraise=True,
    )
    return retrying(call)


def process_payment(payment_id: str) -> str:
    """Moves a `processing` payment on: authorize, then capture and post, as it needs."""
    ctx = context()
    with exclusive(ctx.engine, f"payment:{payment_id}") as held:
        if not held:
            return "busy"
        return drive_payment(ctx, payment_id)


def _locked_processing(session: Session, payment_id: str) -> Payment | None:
    payment = session.get(Payment, payment_id, with_for_update=True)
    if payment is None or payment.status != "processing":
        return None
    return payment


def drive_payment(ctx: WorkerContext, payment_id: str) -> str:
    """The body of `process_payment`, without the lock; returns what it did."""
    with transaction(ctx.sessions) as session:
        payment = session.get(Payment, payment_id)
        if payment is None or payment.status != "processing":
            return "nothing to do"
        session.expunge(payment)
    if payment.processor_charge_id is None:
        token = payment.processor_token
        assert token is not None, "a processing payment has a card"
        authorization = with_processor_retries(
            lambda: ctx.processor.authorize(
                payment_id=payment.id,
                token=token,
                amount=payment.amount,
                currency=payment.currency,
            )
        )
        with transaction(ctx.sessions) as session:
            locked = _locked_processing(session, payment_id)
            if locked is None:
                return "nothing to do"
            if not authorization.approved:
                locked.status = "failed"
                locked.failure_code = authorization.decline_code
                locked.failure_message = authorization.decline_message
                outbox.payment_event(session, locked, "payment.failed")
                return "failed"
            locked.processor_charge_id = authorization.charge_id
            locked.authorize_time = datetime.now(UTC)
            if locked.capture_method == "manual":
                locked.status = "requires_capture"
                locked.amount_capturable = locked.amount
                outbox.payment_event(session, locked, "payment.requires_capture")
                return "requires_capture"
        amount = payment.amount
    else:
        amount = payment.amount if payment.amount_to_capture is None else payment.amount_to_capture
    with_processor_retries(lambda: ctx.processor.capture(payment_id=payment_id, amount=amount))
    fee = compute_fee(amount=amount, fee_bps=payment.fee_bps, fee_fixed=payment.fee_fixed)
    ledger.post(
        ctx.ledger,
        ledger.capture_request(payment, amount=amount, fee=fee),
        timeout_s=ctx.settings.grpc_timeout_s,
    )
    with transaction(ctx.sessions) as session:
        locked = _locked_processing(session, payment_id)
        if locked is None:
            return "nothing to do"
        locked.status = "succeeded"
        locked.amount_received = amount
        locked.amount_capturable = 0
        locked.fee = fee
        locked.settle_time = datetime.now(UTC)
        locked.ledger_reference = ledger.capture_reference(payment_id)
        outbox.payment_event(session, locked, "payment.succeeded")
    return "succeeded"


def void_payment(payment_id: str) -> str:
    """Releases a canceled payment's authorization at the processor."""
    ctx = context()
    with_processor_retries(lambda: ctx.processor.void(payment_id=payment_id))
    return "voided"


def process_refund(refund_id: str) -> str:
    """Carries out a pending refund: processor, then ledger, then `succeeded`."""
    ctx = context()
    with exclusive(ctx.engine, f"refund:{refund_id}") as held:
        if not held:
            return "busy"
        return drive_refund(ctx, refund_id)


def drive_refund(ctx: WorkerContext, refund_id: str) -> str:
    """The body of `process_refund`, without the lock; returns what it did."""
    with transaction(ctx.sessions) as session:
        refund = session.get(Refund, refund_id)
        if refund is None or refund.status != "pending":
            return "nothing to do"
        session.expunge(refund)
    try:
        with_processor_retries(
            lambda: ctx.processor.refund(
                payment_id=refund.payment_id,
                refund_id=refund.id,
                amount=refund.amount,
                currency=refund.currency,
            )
        )
    except ProcessorUnavailable:
        raise
    except ProcessorError as error:
        logger.warning("refund %s declined by the processor: %s", refund_id, error)
        with transaction(ctx.sessions) as session:
            locked = session.get(Refund, refund_id, with_for_update=True)
            if locked is None or locked.status != "pending":
                return "nothing to do"
            locked.status = "failed"
            locked.failure_code = "processor_declined"
            outbox.refund_event(session, locked, "refund.failed")
        return "failed"
    ledger.post(ctx.ledger, ledger.refund_request(refund), timeout_s=ctx.settings.grpc_timeout_s)
    with transaction(ctx.sessions) as session:
        # Payment before refund: the order CreateRefund locks them in.
        payment = session.get(Payment, refund.payment_id, with_for_update=True)
        locked = session.get(Refund, refund_id, with_for_update=True)
        if payment is None or locked is None or locked.status != "pending":
            return "nothing to do"
        locked.status = "succeeded"
        locked.settle_time = datetime.now(UTC)
        locked.ledger_reference = ledger.refund_reference(refund_id)
        payment.amount_refunded += locked.amount
        outbox.refund_event(session, locked, "refund.succeeded")
    return "succeeded"
