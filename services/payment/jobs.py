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
from typing import Any, TypeVar, cast

from paymesh.ledger.v1 import ledger_internal_pb2_grpc
from sqlalchemy import (
    ColumnElement,
    Connection,
    Engine,
    Table,
    bindparam,
    func,
    literal,
    select,
    update,
)
from sqlalchemy.orm import Session, sessionmaker
from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential

from services.common.clients import sync_channel
from services.common.db import Rendered, make_engine, make_sessionmaker, render, transaction
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


# The lock's statements, rendered once; 64-bit keys, so two payments practically never share one.
_TRY_LOCK = render(select(func.pg_try_advisory_lock(func.hashtextextended(bindparam("name"), 0))))
_UNLOCK = render(select(func.pg_advisory_unlock(func.hashtextextended(bindparam("name"), 0))))


@contextmanager
def exclusive(engine: Engine, name: str) -> Iterator[Connection | None]:
    """Holds a session-level advisory lock on `name` if free.

    Yields the lock's connection (in autocommit: each statement on it is its own transaction),
    or None when another worker holds the lock.
    """
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        held = bool(
            connection.exec_driver_sql(_TRY_LOCK.sql, _TRY_LOCK.params({"name": name})).scalar()
        )
        try:
            yield connection if held else None
        finally:
            if held:
                connection.exec_driver_sql(_UNLOCK.sql, _UNLOCK.params({"name": name}))


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
    with exclusive(ctx.engine, f"payment:{payment_id}") as connection:
        if connection is None:
            return "busy"
        return drive_payment(ctx, connection, payment_id)


# A drive's statements are Core, rendered once, and return the payment's row under its
# attributes' names (what the view, the event and the ledger request read): no ORM unit of work
# and no SELECT ... FOR UPDATE before an UPDATE. Each change applies only while the payment is
# still `processing` (the UPDATE's row lock serializes it with any other change); no row back
# means another transaction moved it on first.
_PAYMENTS = cast(Table, Payment.__table__)
_PAYMENT = _PAYMENTS.c
_PAYMENT_ROW = [column.label(name) for name, column in Payment.__mapper__.columns.items()]
_READ = render(select(*_PAYMENT_ROW).where(_PAYMENT.id == bindparam("payment_id")))


def _change(**values: ColumnElement[Any]) -> Rendered:
    """An UPDATE of a payment still `processing`, returning its row."""
    return render(
        update(_PAYMENTS)
        .where(_PAYMENT.id == bindparam("payment_id"), _PAYMENT.status == "processing")
        .values(**values)
        .returning(*_PAYMENT_ROW)
    )


_DECLINED = _change(
    status=literal("failed"),
    failure_code=bindparam("new_failure_code"),
    failure_message=bindparam("new_failure_message"),
)
_AUTHORIZED = _change(processor_charge_id=bindparam("new_charge_id"), authorize_time=func.now())
_AWAITING_CAPTURE = _change(
    processor_charge_id=bindparam("new_charge_id"),
    authorize_time=func.now(),
    status=literal("requires_capture"),
    amount_capturable=_PAYMENT.amount,
)
_SUCCEEDED = _change(
    status=literal("succeeded"),
    amount_received=bindparam("new_amount"),
    amount_capturable=literal(0),
    fee=bindparam("new_fee"),
    settle_time=func.now(),
    ledger_reference=bindparam("new_ledger_reference"),
)


def _change_with_event(
    ctx: WorkerContext, change: Rendered, values: dict[str, Any], event_type: str
) -> bool:
    """Applies `change` and writes its event in one transaction; False if nothing changed."""
    with transaction(ctx.sessions) as session:
        connection = session.connection()
        payment = connection.exec_driver_sql(change.sql, change.params(values)).one_or_none()
        if payment is None:
            return False
        outbox.write_rows(connection, [outbox.payment_event_row(payment, event_type)])
    return True


def drive_payment(ctx: WorkerContext, connection: Connection, payment_id: str) -> str:
    """The body of `process_payment` on the lock's `connection`; returns what it did."""
    payment = connection.exec_driver_sql(_READ.sql, {"payment_id": payment_id}).one_or_none()
    if payment is None or payment.status != "processing":
        return "nothing to do"
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
        if not authorization.approved:
            declined = {
                "payment_id": payment_id,
                "new_failure_code": authorization.decline_code,
                "new_failure_message": authorization.decline_message,
            }
            done = _change_with_event(ctx, _DECLINED, declined, "payment.failed")
            return "failed" if done else "nothing to do"
        authorized = {"payment_id": payment_id, "new_charge_id": authorization.charge_id}
        if payment.capture_method == "manual":
            done = _change_with_event(
                ctx, _AWAITING_CAPTURE, authorized, "payment.requires_capture"
            )
            return "requires_capture" if done else "nothing to do"
        # No event: one statement, its own transaction on the lock's connection.
        if (
            connection.exec_driver_sql(
                _AUTHORIZED.sql, _AUTHORIZED.params(authorized)
            ).one_or_none()
            is None
        ):
            return "nothing to do"
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
    succeeded = {
        "payment_id": payment_id,
        "new_amount": amount,
        "new_fee": fee,
        "new_ledger_reference": ledger.capture_reference(payment_id),
    }
    done = _change_with_event(ctx, _SUCCEEDED, succeeded, "payment.succeeded")
    return "succeeded" if done else "nothing to do"


def void_payment(payment_id: str) -> str:
    """Releases a canceled payment's authorization at the processor."""
    ctx = context()
    with_processor_retries(lambda: ctx.processor.void(payment_id=payment_id))
    return "voided"


def process_refund(refund_id: str) -> str:
    """Carries out a pending refund: processor, then ledger, then `succeeded`."""
    ctx = context()
    with exclusive(ctx.engine, f"refund:{refund_id}") as connection:
        if connection is None:
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
