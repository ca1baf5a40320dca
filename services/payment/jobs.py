"""RQ jobs of the payment worker: drive payments and refunds through the processor and ledger.

A payment job carries a batch of payments (the relay groups the drives of a round), so RQ's
bookkeeping is paid per batch, and the batch goes through its steps together: each step is one
round trip to PostgreSQL, one processor call for all, or the ledger calls all in flight at once.

Every job takes ids, reloads the rows, and does only what the row's state still asks for, so a
job may run twice, or after a crash half-way, without charging, posting or emitting twice:

- the processor is idempotent by payment id (authorize, capture, void) and refund id;
- the ledger is idempotent by external reference;
- a state change is one transaction that re-checks the state under the row lock and writes
  its event to the outbox.

A session-level advisory lock per payment (or refund) keeps two workers from working on the
same one at once (a batch takes those that are free; another worker's are left to it);
PostgreSQL releases it when a killed worker's connection drops. A payment that meets an error
stops where it is and the others of its batch go on.

Retry policy: a processor that is unavailable (or whose answer was lost) is retried inside the
job, `PROCESSOR_ATTEMPTS_MAX` times with exponential backoff. Anything else (the ledger down,
Redis lost the job, the worker was killed) leaves the payment `processing` or the refund
`pending`; the relay's sweeper re-drives it after `payment_stuck_after_s`, with a new job id.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from typing import Any, TypeVar, cast

from paymesh.ledger.v1 import ledger_internal_pb2_grpc
from rq import Queue
from sqlalchemy import (
    ARRAY,
    ColumnElement,
    Connection,
    Engine,
    String,
    Table,
    any_,
    bindparam,
    func,
    literal,
    select,
    update,
)
from sqlalchemy.orm import Session, sessionmaker
from tenacity import (
    Retrying,
    retry_if_exception_type,
    retry_if_result,
    stop_after_attempt,
    wait_exponential,
)

from services.common import logs, tracing
from services.common.clients import sync_channel
from services.common.db import (
    Rendered,
    execute_many,
    make_engine,
    make_sessionmaker,
    render,
    transaction,
)
from services.common.queue import PAYMENTS_QUEUE, make_queue, redis_connection
from services.common.settings import Settings
from services.payment import customers, disputes, ledger, outbox, relay
from services.payment.errors import ProcessorError, ProcessorUnavailable
from services.payment.fees import compute_fee
from services.payment.metrics import PAYMENTS_DRIVEN
from services.payment.models import Dispute, Payment, Refund
from services.payment.processor import (
    AuthorizationRequest,
    CaptureRequest,
    Connector,
    SimulatedProcessor,
)

logger = logging.getLogger(__name__)

PROCESSOR_ATTEMPTS_MAX = 4
T = TypeVar("T")
R = TypeVar("R")  # a batch call's request
A = TypeVar("A")  # its answer


@dataclass(frozen=True)
class WorkerContext:
    """What jobs need, built once per worker process."""

    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    processor: Connector
    ledger: ledger_internal_pb2_grpc.LedgerInternalServiceStub
    # Hands the events a drive wrote to the webhook service (`relay.relay_batch`).
    publish: relay.Publisher
    queue: Queue


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
        publish=relay.webhook_publisher(settings),
        queue=make_queue(PAYMENTS_QUEUE, redis_connection(settings)),
    )


# The locks' statements (a name's 64-bit key, so two payments practically never share one): a
# batch takes the free ones in one statement and gives them back in one.
_TRY_LOCKS = Rendered(
    "SELECT name FROM unnest(%(names)s::text[]) AS name"
    " WHERE pg_try_advisory_lock(hashtextextended(name, 0))",
    {},
)
_UNLOCKS = Rendered(
    "SELECT count(pg_advisory_unlock(hashtextextended(name, 0)))"
    " FROM unnest(%(names)s::text[]) AS name",
    {},
)


@contextmanager
def exclusive_many(engine: Engine, names: Sequence[str]) -> Iterator[tuple[Connection, set[str]]]:
    """Holds a session-level advisory lock on each of `names` that is free.

    Yields the locks' connection (in autocommit: each statement on it is its own transaction)
    and the names locked; another worker holds the others.
    """
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        held = {
            row.name for row in connection.exec_driver_sql(_TRY_LOCKS.sql, {"names": list(names)})
        }
        try:
            yield connection, held
        finally:
            if held:
                connection.exec_driver_sql(_UNLOCKS.sql, {"names": sorted(held)})


@contextmanager
def exclusive(engine: Engine, name: str) -> Iterator[Connection | None]:
    """`exclusive_many` of one name: its connection, or None when another worker holds it."""
    with exclusive_many(engine, [name]) as (connection, held):
        yield connection if held else None


def with_processor_retries(call: Callable[[], T]) -> T:
    """Runs a processor call, retrying while the processor is unavailable."""
    return _retrying(reraise=True, retry=retry_if_exception_type(ProcessorUnavailable))(call)


def _retrying(**policy: Any) -> Retrying:
    """The processor's retry policy: `PROCESSOR_ATTEMPTS_MAX` attempts, exponential backoff."""
    return Retrying(
        stop=stop_after_attempt(PROCESSOR_ATTEMPTS_MAX),
        wait=wait_exponential(multiplier=0.1, max=2),
        **policy,
    )


def with_processor_retries_many(
    call: Callable[[list[R]], list[A | ProcessorError]], requests: list[R]
) -> list[A | ProcessorError]:
    """Runs a batch processor call, asking again for the requests it found unavailable.

    Each request's last answer, in order: after `PROCESSOR_ATTEMPTS_MAX` attempts a request
    still unavailable answers its ProcessorUnavailable.
    """
    answers: list[A | ProcessorError] = []
    pending = list(range(len(requests)))

    def attempt() -> list[int]:
        nonlocal pending
        fresh = call([requests[index] for index in pending])
        if not answers:
            answers.extend(fresh)
        for index, answer in zip(pending, fresh, strict=True):
            answers[index] = answer
        pending = [
            index
            for index, answer in zip(pending, fresh, strict=True)
            if isinstance(answer, ProcessorUnavailable)
        ]
        return pending

    if requests:
        # Retried while some are unavailable; the last attempt's answers stand.
        _retrying(retry=retry_if_result(bool), retry_error_callback=lambda state: None)(attempt)
    return answers


def process_payments(payment_ids: list[str]) -> dict[str, int]:
    """Moves a batch of `processing` payments on: the job of `drive_batch`."""
    traceparents = dict(zip(payment_ids, tracing.job_traceparents(len(payment_ids)), strict=True))
    ids = {"payment_id": payment_ids[0]} if len(payment_ids) == 1 else {}
    with logs.bound(**ids):
        return drive_batch(context(), payment_ids, traceparents=traceparents)


def drive_batch(
    ctx: WorkerContext,
    payment_ids: list[str],
    *,
    traceparents: Mapping[str, str | None] | None = None,
) -> dict[str, int]:
    """Drives the payments no other worker holds (`drive_payments`); counts what it did.

    Payments another worker holds are left to it ("busy"). Raises `BatchIncomplete` after
    doing the rest when a payment met an error: it stays `processing`, and the sweeper drives
    it again. A payment's events carry its trace context from `traceparents` (tracing).
    """
    names = {payment_id: f"payment:{payment_id}" for payment_id in payment_ids}
    events: list[int] = []
    with exclusive_many(ctx.engine, list(names.values())) as (connection, held):
        mine = [payment_id for payment_id, name in names.items() if name in held]
        outcomes = drive_payments(
            ctx, connection, mine, events=events, traceparents=traceparents or {}
        )
    _relay_events(ctx, events)
    counts = Counter(outcomes.get(payment_id, "busy") for payment_id in names)
    for outcome, count in counts.items():
        label = "error" if outcome.startswith("error") else outcome.replace(" ", "_")
        PAYMENTS_DRIVEN.labels(label).inc(count)
    errors = {
        payment_id: outcome
        for payment_id, outcome in outcomes.items()
        if outcome.startswith("error")
    }
    if errors:
        raise BatchIncomplete(errors, counts)
    return dict(counts)


def process_payment(payment_id: str) -> str:
    """One payment's `process_payments` (jobs enqueued before batches; tests)."""
    return next(iter(process_payments([payment_id])))


class BatchIncomplete(Exception):
    """Some payments of a batch met an error; the others were driven."""

    def __init__(self, errors: dict[str, str], counts: Counter[str]) -> None:
        super().__init__(
            f"{len(errors)} of {sum(counts.values())} payments left processing: "
            + "; ".join(f"{payment_id}: {error}" for payment_id, error in sorted(errors.items()))
        )
        self.errors = errors


# A drive's statements are Core, rendered once, and return the payment's row under its
# attributes' names (what the view, the event and the ledger request read): no ORM unit of work
# and no SELECT ... FOR UPDATE before an UPDATE. Each change applies only while the payment is
# still `processing` (the UPDATE's row lock serializes it with any other change); no row back
# means another transaction moved it on first. A batch runs each statement once per payment in
# one round trip (`execute_many`).
_PAYMENTS = cast(Table, Payment.__table__)
_PAYMENT = _PAYMENTS.c
_PAYMENT_ROW = [column.label(name) for name, column in Payment.__mapper__.columns.items()]
_READ = render(
    select(*_PAYMENT_ROW).where(_PAYMENT.id == any_(bindparam("payment_ids", type_=ARRAY(String))))
)


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


def _changes_with_events(
    ctx: WorkerContext,
    change: Rendered,
    values: list[dict[str, Any]],
    event_type: str,
    *,
    events: list[int],
    traceparents: Mapping[str, str | None],
) -> list[Any]:
    """Applies `change` once per item and writes the events, all in one transaction.

    Each item's changed row, or None where the payment had moved on; the events' outbox ids
    are added to `events`, each with its payment's trace context. A payment that succeeded or
    was authorized gets the card it saved (setup_future_usage) attached to its customer in the
    same transaction.
    """
    if not values:
        return []
    with transaction(ctx.sessions) as session:
        connection = session.connection()
        rows = execute_many(connection, change, values)
        if change is not _DECLINED:
            customers.attach_saved_cards(session, [row for row in rows if row is not None])
        written = [
            {
                **outbox.payment_event_row(row, event_type),
                "traceparent": traceparents.get(row.id),
            }
            for row in rows
            if row is not None
        ]
        if written:
            events += outbox.write_rows(connection, written)
    return rows


def _relay_events(ctx: WorkerContext, events: list[int]) -> None:
    """Hands the events just written to the webhook service, as the relay would.

    A payment's outcome then reaches its webhooks without waiting for the relay's next round.
    Whatever does not go now (the webhook service down, this worker killed first) stays in
    the outbox for the relay.
    """
    if not events:
        return
    try:
        relay.relay_batch(
            ctx.sessions,
            queue=ctx.queue,
            publish=ctx.publish,
            batch_size=len(events),
            retry_delay_max_s=ctx.settings.payment_outbox_retry_delay_max_s,
            ids=events,
        )
    except Exception:
        logger.exception("relaying %d events failed; the relay will", len(events))


def drive_payments(
    ctx: WorkerContext,
    connection: Connection,
    payment_ids: list[str],
    *,
    events: list[int],
    traceparents: Mapping[str, str | None],
) -> dict[str, str]:
    """The body of `process_payments` on the locks' `connection`: what it did to each.

    In steps, each one round trip (or one call) for the whole batch: read; authorize the new
    ones; record the declines, the manual captures (with their events) and the authorizations;
    capture; post to the ledger; record the successes with their events. A payment that meets
    an error at a step stops there ("error: ..."); the others go on. The events' outbox ids
    are added to `events`.
    """
    rows = connection.exec_driver_sql(_READ.sql, {"payment_ids": payment_ids})
    payments = {row.id: row for row in rows if row.status == "processing"}
    outcomes = {
        payment_id: "nothing to do" for payment_id in payment_ids if payment_id not in payments
    }
    # (payment, amount) to capture: those authorized by an earlier drive, and those below.
    to_capture = [
        (
            payment,
            payment.amount if payment.amount_to_capture is None else payment.amount_to_capture,
        )
        for payment in payments.values()
        if payment.processor_charge_id is not None
    ]
    new = [payment for payment in payments.values() if payment.processor_charge_id is None]
    answers = with_processor_retries_many(
        ctx.processor.authorize_many,
        [
            AuthorizationRequest(
                payment_id=payment.id,
                token=payment.processor_token,
                amount=payment.amount,
                currency=payment.currency,
            )
            for payment in new
        ],
    )
    declined: list[dict[str, Any]] = []
    manual: list[dict[str, Any]] = []
    automatic: list[dict[str, Any]] = []
    for payment, answer in zip(new, answers, strict=True):
        if isinstance(answer, ProcessorError):
            outcomes[payment.id] = f"error: authorize: {answer}"
        elif not answer.approved:
            declined.append(
                {
                    "payment_id": payment.id,
                    "new_failure_code": answer.decline_code,
                    "new_failure_message": answer.decline_message,
                }
            )
        else:
            authorized = {"payment_id": payment.id, "new_charge_id": answer.charge_id}
            (manual if payment.capture_method == "manual" else automatic).append(authorized)
    for change, values, event_type, outcome in (
        (_DECLINED, declined, "payment.failed", "failed"),
        (_AWAITING_CAPTURE, manual, "payment.requires_capture", "requires_capture"),
    ):
        changed = _changes_with_events(
            ctx, change, values, event_type, events=events, traceparents=traceparents
        )
        for value, row in zip(values, changed, strict=True):
            outcomes[value["payment_id"]] = outcome if row is not None else "nothing to do"
    # No event: each its own transaction on the locks' connection.
    for value, row in zip(automatic, execute_many(connection, _AUTHORIZED, automatic), strict=True):
        if row is None:
            outcomes[value["payment_id"]] = "nothing to do"
        else:
            to_capture.append((row, row.amount))
    _capture_and_post(ctx, to_capture, outcomes, events=events, traceparents=traceparents)
    return outcomes


def _capture_and_post(
    ctx: WorkerContext,
    to_capture: list[tuple[Any, int]],
    outcomes: dict[str, str],
    *,
    events: list[int],
    traceparents: Mapping[str, str | None],
) -> None:
    """Captures, posts to the ledger and records `succeeded`, noting each one's outcome."""
    captures = with_processor_retries_many(
        ctx.processor.capture_many,
        [CaptureRequest(payment_id=payment.id, amount=amount) for payment, amount in to_capture],
    )
    postings = []
    for (payment, amount), answer in zip(to_capture, captures, strict=True):
        if isinstance(answer, ProcessorError):
            outcomes[payment.id] = f"error: capture: {answer}"
            continue
        fee = compute_fee(amount=amount, fee_bps=payment.fee_bps, fee_fixed=payment.fee_fixed)
        postings.append((payment, amount, fee))
    posted = ledger.post_many(
        ctx.ledger,
        [
            ledger.capture_request(payment, amount=amount, fee=fee)
            for payment, amount, fee in postings
        ],
        timeout_s=ctx.settings.grpc_timeout_s,
    )
    succeeded = []
    for (payment, amount, fee), transaction_id in zip(postings, posted, strict=True):
        if isinstance(transaction_id, ledger.PostingFailed):
            outcomes[payment.id] = f"error: ledger: {transaction_id}"
            continue
        succeeded.append(
            {
                "payment_id": payment.id,
                "new_amount": amount,
                "new_fee": fee,
                "new_ledger_reference": ledger.capture_reference(payment.id),
            }
        )
    rows = _changes_with_events(
        ctx, _SUCCEEDED, succeeded, "payment.succeeded", events=events, traceparents=traceparents
    )
    for value, row in zip(succeeded, rows, strict=True):
        outcomes[value["payment_id"]] = "succeeded" if row is not None else "nothing to do"


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


def process_dispute(dispute_id: str) -> str:
    """Carries out what a dispute waits for: its withdrawal, the decision, its reinstatement."""
    ctx = context()
    with exclusive(ctx.engine, f"dispute:{dispute_id}") as connection:
        if connection is None:
            return "busy"
        return drive_dispute(ctx, dispute_id)


def _load_dispute(ctx: WorkerContext, dispute_id: str) -> Dispute | None:
    with transaction(ctx.sessions) as session:
        dispute = session.get(Dispute, dispute_id)
        if dispute is not None:
            session.expunge(dispute)
        return dispute


def drive_dispute(ctx: WorkerContext, dispute_id: str) -> str:
    """The body of `process_dispute`, without the lock; returns what it did.

    Each step posts first (idempotent by reference), then records it with its event under the
    row lock only if not yet recorded; so a crash anywhere repeats at most a posting the ledger
    already holds. The withdrawal comes before the decision, so a reinstatement never precedes
    the withdrawal it reverses.
    """
    done: list[str] = []
    dispute = _load_dispute(ctx, dispute_id)
    if dispute is None:
        return "nothing to do"
    timeout_s = ctx.settings.grpc_timeout_s
    if not dispute.is_inquiry and dispute.withdraw_time is None:
        ledger.post(ctx.ledger, ledger.dispute_request(dispute), timeout_s=timeout_s)
        with transaction(ctx.sessions) as session:
            locked = session.get(Dispute, dispute_id, with_for_update=True)
            assert locked is not None
            if locked.withdraw_time is None:
                locked.withdraw_time = datetime.now(UTC)
                locked.ledger_reference = ledger.dispute_reference(dispute_id)
                disputes.dispute_event(session, locked, "dispute.funds_withdrawn")
                done.append("withdrawn")
    if dispute.status in disputes.UNDER_REVIEW:
        payment_id = dispute.payment_id
        evidence_text = dispute.evidence.get("uncategorized_text", "")
        outcome = with_processor_retries(
            lambda: ctx.processor.decide_dispute(payment_id=payment_id, evidence_text=evidence_text)
        )
        with transaction(ctx.sessions) as session:
            locked = session.get(Dispute, dispute_id, with_for_update=True)
            assert locked is not None
            if locked.status in disputes.UNDER_REVIEW:
                disputes.move(session, locked, "warning_closed" if locked.is_inquiry else outcome)
                done.append(locked.status)
        dispute = _load_dispute(ctx, dispute_id)
        assert dispute is not None
    if dispute.status == "won" and dispute.reinstate_time is None:
        ledger.post(ctx.ledger, ledger.dispute_won_request(dispute), timeout_s=timeout_s)
        with transaction(ctx.sessions) as session:
            locked = session.get(Dispute, dispute_id, with_for_update=True)
            assert locked is not None
            if locked.reinstate_time is None:
                locked.reinstate_time = datetime.now(UTC)
                locked.reinstate_reference = ledger.dispute_won_reference(dispute_id)
                disputes.dispute_event(session, locked, "dispute.funds_reinstated")
                done.append("reinstated")
    return ", ".join(done) or "nothing to do"
