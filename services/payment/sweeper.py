"""Maintenance the relay runs on a schedule: nothing stays stuck, nothing is kept forever.

- `processing` payments, `pending` refunds and unfinished payouts whose last drive is older than
  `payment_stuck_after_s` (a worker died, Redis lost the job, the ledger was down) get a new
  drive: an outbox job with a fresh job id.
- manual-capture payments authorized longer ago than `payment_capture_window_s` are canceled
  (reason `abandoned`) and their authorization is voided.
- disputes the card network filed are opened (`disputes.open_dispute`); disputes unanswered by
  their `due_by` are closed (lost); disputes whose worker step is overdue are re-driven.
- expired idempotency keys are deleted.
- relayed outbox rows older than `OUTBOX_RETENTION_S` are deleted.

Each task takes a bounded batch with `FOR UPDATE SKIP LOCKED`, so several relays may sweep at
once without doing anything twice.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

from sqlalchemy import or_, select, text
from sqlalchemy.orm import Session, sessionmaker

from services.common.db import transaction
from services.common.settings import Settings
from services.payment import disputes, outbox, payouts
from services.payment.models import KEYS, Dispute, Payment, Payout, Refund
from services.payment.payments import cancel_payment
from services.payment.processor import Connector, SimulatedProcessor

logger = logging.getLogger(__name__)

BATCH_SIZE_MAX = 100
OUTBOX_RETENTION_S = 7 * 24 * 3600


def redrive_stuck(session: Session, *, stuck_after_s: float) -> int:
    """Re-drives stuck payments, refunds and payouts; returns how many."""
    cutoff = datetime.now(UTC) - timedelta(seconds=stuck_after_s)
    payments = session.scalars(
        select(Payment)
        .where(Payment.status == "processing")
        .where(or_(Payment.drive_time.is_(None), Payment.drive_time < cutoff))
        .limit(BATCH_SIZE_MAX)
        .with_for_update(skip_locked=True)
    ).all()
    for payment in payments:
        logger.warning("re-driving stuck payment %s", payment.id)
        outbox.drive_payment(session, payment)
    refunds = session.scalars(
        select(Refund)
        .where(Refund.status == "pending")
        .where(or_(Refund.drive_time.is_(None), Refund.drive_time < cutoff))
        .limit(BATCH_SIZE_MAX)
        .with_for_update(skip_locked=True)
    ).all()
    for refund in refunds:
        logger.warning("re-driving stuck refund %s", refund.id)
        outbox.drive_refund(session, refund)
    stuck_payouts = session.scalars(
        select(Payout)
        .where(Payout.ledger_complete.is_(False))
        .where(or_(Payout.drive_time.is_(None), Payout.drive_time < cutoff))
        .limit(BATCH_SIZE_MAX)
        .with_for_update(skip_locked=True)
    ).all()
    for payout in stuck_payouts:
        logger.warning("re-driving stuck payout %s", payout.id)
        payouts.drive(session, payout)
    return len(payments) + len(refunds) + len(stuck_payouts)


def open_filed_disputes(session: Session, *, processor: Connector, response_window_s: float) -> int:
    """Opens the disputes the card network filed since the last round; returns how many."""
    filed = processor.take_filed_disputes(session=session, limit=BATCH_SIZE_MAX)
    for item in filed:
        disputes.open_dispute(session, filed=item, response_window_s=response_window_s)
    return len(filed)


def redrive_disputes(session: Session, *, stuck_after_s: float) -> int:
    """Re-drives disputes whose withdrawal, decision or reinstatement is overdue."""
    rows = session.scalars(
        select(Dispute)
        .where(disputes.overdue(stuck_after_s))
        .limit(BATCH_SIZE_MAX)
        .with_for_update(skip_locked=True)
    ).all()
    for dispute in rows:
        logger.warning("re-driving stuck dispute %s", dispute.id)
        disputes.drive(session, dispute)
    return len(rows)


def cancel_uncaptured(session: Session, *, window_s: float) -> int:
    """Cancels manual-capture payments left uncaptured beyond the window; returns how many."""
    cutoff = datetime.now(UTC) - timedelta(seconds=window_s)
    payments = session.scalars(
        select(Payment)
        .where(Payment.status == "requires_capture")
        .where(Payment.authorize_time < cutoff)
        .limit(BATCH_SIZE_MAX)
        .with_for_update(skip_locked=True)
    ).all()
    for payment in payments:
        logger.info("canceling uncaptured payment %s", payment.id)
        cancel_payment(session, payment=payment, cancellation_reason="abandoned")
    return len(payments)


def cancel_unauthenticated(session: Session, *, window_s: float) -> int:
    """Cancels payments whose customer left 3-D Secure unfinished beyond the window."""
    cutoff = datetime.now(UTC) - timedelta(seconds=window_s)
    payments = session.scalars(
        select(Payment)
        .where(Payment.status == "requires_action")
        .where(Payment.update_time < cutoff)
        .limit(BATCH_SIZE_MAX)
        .with_for_update(skip_locked=True)
    ).all()
    for payment in payments:
        logger.info("canceling unauthenticated payment %s", payment.id)
        cancel_payment(session, payment=payment, cancellation_reason="abandoned")
    return len(payments)


def delete_old_outbox(session: Session) -> int:
    """Deletes relayed outbox rows past their retention; returns how many."""
    result = session.execute(
        text(
            "DELETE FROM payment.outbox WHERE id IN ("
            " SELECT id FROM payment.outbox WHERE relay_time < now() - make_interval(secs => :s)"
            " LIMIT 1000 FOR UPDATE SKIP LOCKED)"
        ),
        {"s": OUTBOX_RETENTION_S},
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


def sweep(sessions: sessionmaker[Session], settings: Settings) -> dict[str, int]:
    """Runs every maintenance task once, each in its own transaction; returns counts."""
    counts: dict[str, int] = {}
    with transaction(sessions) as session:
        counts["redriven"] = redrive_stuck(session, stuck_after_s=settings.payment_stuck_after_s)
    with transaction(sessions) as session:
        counts["canceled"] = cancel_uncaptured(session, window_s=settings.payment_capture_window_s)
    with transaction(sessions) as session:
        counts["unauthenticated_canceled"] = cancel_unauthenticated(
            session, window_s=settings.payment_authentication_window_s
        )
    processor = SimulatedProcessor(sessions, latency_ms=settings.processor_latency_ms)
    with transaction(sessions) as session:
        counts["disputes_opened"] = open_filed_disputes(
            session,
            processor=processor,
            response_window_s=settings.payment_dispute_response_window_s,
        )
    with transaction(sessions) as session:
        counts["disputes_expired"] = disputes.expire_unanswered(session, limit=BATCH_SIZE_MAX)
    with transaction(sessions) as session:
        counts["disputes_redriven"] = redrive_disputes(
            session, stuck_after_s=settings.payment_stuck_after_s
        )
    with transaction(sessions) as session:
        counts["keys_expired"] = KEYS.sweep_expired(session)
    with transaction(sessions) as session:
        counts["outbox_deleted"] = delete_old_outbox(session)
    return counts
