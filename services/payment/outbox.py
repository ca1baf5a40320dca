"""The transactional outbox: jobs and events written in the same transaction as the change.

Nothing is enqueued or published while a transaction is open. The relay
(`services.payment.relay`) later moves each row into RQ or to the webhook service and marks it
relayed; a crash between commit and relay loses nothing, because the row is still there.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, cast

from psycopg import AsyncConnection
from psycopg.types.json import Jsonb
from sqlalchemy import Connection, Row, Table, insert
from sqlalchemy.orm import Session

from services.common import tracing
from services.common.db import execute_many, render
from services.common.ids import new_id
from services.common.rest_json import message_to_json
from services.payment.models import OutboxMessage, Payment, Refund
from services.payment.views import payment_to_proto, refund_to_proto

# A payment's drive is written as one payment's job; the relay hands drives over in batches.
PROCESS_PAYMENT = "services.payment.jobs.process_payment"
PROCESS_PAYMENTS = "services.payment.jobs.process_payments"
VOID_PAYMENT = "services.payment.jobs.void_payment"
PROCESS_REFUND = "services.payment.jobs.process_refund"


# Rows written by `insert_rows` on the event loop's connection (the hot path of a create),
# where the ORM's unit of work cost more CPU than the statements themselves.
_INSERT = render(
    insert(cast(Table, OutboxMessage.__table__)),
    columns=("kind", "topic", "payload", "attempts", "last_error", "traceparent"),
)
_INSERT_RETURNING_ID = render(
    insert(cast(Table, OutboxMessage.__table__)).returning(OutboxMessage.__table__.c.id),
    columns=("kind", "topic", "payload", "attempts", "last_error", "traceparent"),
)


def job_row(*, func: str, job_id: str, args: list[Any]) -> dict[str, Any]:
    """The outbox row that asks the relay to enqueue `func(*args)` as RQ job `job_id`."""
    return {"kind": "job", "topic": func, "payload": {"func": func, "job_id": job_id, "args": args}}


def event_row(
    *, event_type: str, merchant_id: str, livemode: bool, obj: dict[str, Any]
) -> dict[str, Any]:
    """The outbox row of an event; its id is `row["payload"]["id"]`."""
    return {
        "kind": "event",
        "topic": event_type,
        "payload": {
            "id": new_id("evt"),
            "type": event_type,
            "merchant_id": merchant_id,
            "livemode": livemode,
            "object": obj,
            "create_time": datetime.now(UTC).isoformat(),
        },
    }


def _insert_params(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    # A row's own trace context (a payment's, in a batch), else the span in progress'.
    current = tracing.current_traceparent()
    return [
        {
            **row,
            "payload": Jsonb(row["payload"]),
            "attempts": 0,
            "last_error": "",
            "traceparent": row.get("traceparent") or current,
        }
        for row in rows
    ]


async def insert_rows(connection: AsyncConnection[Any], rows: list[dict[str, Any]]) -> None:
    """Writes `job_row`s and `event_row`s in the connection's transaction: one executemany."""
    async with connection.cursor() as cursor:
        await cursor.executemany(_INSERT.sql, _insert_params(rows))


def write_rows(connection: Connection, rows: list[dict[str, Any]]) -> list[int]:
    """`insert_rows` on a session's connection (the payment worker's changes); the rows' ids."""
    return [row.id for row in execute_many(connection, _INSERT_RETURNING_ID, _insert_params(rows))]


def add_job(session: Session, *, func: str, job_id: str, args: list[Any]) -> None:
    """Asks the relay to enqueue `func(*args)` as RQ job `job_id` once this commits."""
    session.add(OutboxMessage(**job_row(func=func, job_id=job_id, args=args)))


def add_event(
    session: Session, *, event_type: str, merchant_id: str, livemode: bool, obj: dict[str, Any]
) -> str:
    """Asks the relay to publish an event once this commits; returns its id."""
    return _add_event_row(
        session,
        event_row(event_type=event_type, merchant_id=merchant_id, livemode=livemode, obj=obj),
    )


def _add_event_row(session: Session, row: dict[str, Any]) -> str:
    """Adds an `event_row` to the session; returns the event's id."""
    session.add(OutboxMessage(**row))
    return str(row["payload"]["id"])


def payment_drive_job(payment_id: str, drive_count: int) -> dict[str, Any]:
    """The job row of a payment's `drive_count`-th drive (each drive has its own job id)."""
    return job_row(
        func=PROCESS_PAYMENT,
        job_id=f"payment-{payment_id}-process-{drive_count}",
        args=[payment_id],
    )


def payment_event_row(payment: Payment | Row[Any], event_type: str) -> dict[str, Any]:
    """The outbox row of `payment.<...>` with the payment (ORM object or row) as it is now."""
    return event_row(
        event_type=event_type,
        merchant_id=payment.merchant_id,
        livemode=payment.livemode,
        obj=message_to_json(payment_to_proto(payment)),
    )


def payment_event(session: Session, payment: Payment, event_type: str) -> str:
    """Writes `payment.<...>` with the payment as it is now (flushed so times are set)."""
    # The mapper's eager defaults make the INSERT or UPDATE return the times it set.
    session.flush()
    return _add_event_row(session, payment_event_row(payment, event_type))


def refund_event(session: Session, refund: Refund, event_type: str) -> str:
    """Writes `refund.<...>` with the refund as it is now (flushed so times are set)."""
    session.flush()
    return add_event(
        session,
        event_type=event_type,
        merchant_id=refund.merchant_id,
        livemode=refund.livemode,
        obj=message_to_json(refund_to_proto(refund)),
    )


def drive_payment(session: Session, payment: Payment) -> None:
    """Asks a worker to move a `processing` payment on; each drive has its own job id."""
    payment.drive_count += 1
    payment.drive_time = datetime.now(UTC)
    session.add(OutboxMessage(**payment_drive_job(payment.id, payment.drive_count)))


def drive_refund(session: Session, refund: Refund) -> None:
    """Asks a worker to carry out a pending refund."""
    refund.drive_count += 1
    refund.drive_time = datetime.now(UTC)
    add_job(
        session,
        func=PROCESS_REFUND,
        job_id=f"refund-{refund.id}-process-{refund.drive_count}",
        args=[refund.id],
    )
