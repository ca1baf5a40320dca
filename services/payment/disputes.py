"""Disputes: a cardholder contests a captured payment; one state machine owns its statuses.

A chargeback takes the money back at once (the worker posts `dispute:<id>` withdrawing the
amount and the dispute fee from the merchant's balance), then waits for the merchant's answer:

    needs_response --submit evidence--> under_review --network decides--> won | lost
    needs_response --close (accept)---> lost
    needs_response --due_by passes----> lost        (the sweeper)

A won dispute's amount is reinstated (`dispute:<id>:won`); the fee stays, as Stripe keeps it.
An inquiry is a question before a chargeback and moves no money:

    warning_needs_response --submit--> warning_under_review --decided--> warning_closed
    warning_needs_response --close or due_by passes--> warning_closed

`MOVES` is the one table of allowed moves and `move` the one function that makes them, writing
the dispute's event in the same transaction. Evidence is taken only while the dispute needs a
response and before its `due_by`. The network's decision and the postings are the worker's
(`jobs.process_dispute`), each step safe to repeat.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

from sqlalchemy import ColumnElement, and_, or_, select, tuple_
from sqlalchemy.orm import Session

from services.common import pages
from services.common.auth import Principal
from services.common.errors import FieldViolation, InvalidArgument
from services.common.ids import has_prefix, new_id
from services.common.rest_json import message_to_json
from services.payment import outbox
from services.payment.errors import DisputeNotFound, DisputeStateInvalid
from services.payment.fees import dispute_fee
from services.payment.models import Dispute, Payment
from services.payment.payments import get_payment_by_id_or_raise, get_payment_or_raise
from services.payment.processor import FiledDispute
from services.payment.views import dispute_to_proto

logger = logging.getLogger(__name__)

PROCESS_DISPUTE = "services.payment.jobs.process_dispute"

# Each status and the statuses it may move to; closed ones move no more.
MOVES: dict[str, frozenset[str]] = {
    "needs_response": frozenset({"under_review", "lost"}),
    "under_review": frozenset({"won", "lost"}),
    "warning_needs_response": frozenset({"warning_under_review", "warning_closed"}),
    "warning_under_review": frozenset({"warning_closed"}),
    "won": frozenset(),
    "lost": frozenset(),
    "warning_closed": frozenset(),
}
CLOSED = frozenset({"won", "lost", "warning_closed"})
NEEDS_RESPONSE = frozenset({"needs_response", "warning_needs_response"})
UNDER_REVIEW = frozenset({"under_review", "warning_under_review"})


def overdue(stuck_after_s: float) -> ColumnElement[bool]:
    """Disputes with a worker step to go (withdrawal, decision, reinstatement) that nothing has
    driven for `stuck_after_s`: what the sweeper re-drives and the stuck gauge counts."""
    cutoff = datetime.now(UTC) - timedelta(seconds=stuck_after_s)
    return and_(
        or_(
            and_(~Dispute.status.startswith("warning_"), Dispute.withdraw_time.is_(None)),
            Dispute.status.in_(UNDER_REVIEW),
            and_(Dispute.status == "won", Dispute.reinstate_time.is_(None)),
        ),
        or_(Dispute.drive_time.is_(None), Dispute.drive_time < cutoff),
    )


# The evidence fields a merchant may send (a subset of Stripe's), each text up to this long.
EVIDENCE_FIELDS = (
    "customer_name",
    "customer_email_address",
    "product_description",
    "uncategorized_text",
)
EVIDENCE_LENGTH_MAX = 20_000


def move(session: Session, dispute: Dispute, status: str) -> None:
    """Moves a locked dispute to `status` and writes its event (closed or updated)."""
    if status not in MOVES[dispute.status]:
        raise DisputeStateInvalid(
            f"a dispute in status {dispute.status!r} cannot become {status!r}",
            metadata={"status": dispute.status},
        )
    dispute.status = status
    if status in CLOSED:
        dispute.close_time = datetime.now(UTC)
    dispute_event(session, dispute, "dispute.closed" if status in CLOSED else "dispute.updated")


def dispute_event(session: Session, dispute: Dispute, event_type: str) -> str:
    """Writes `dispute.<...>` with the dispute as it is now (flushed so times are set)."""
    session.flush()
    return outbox.add_event(
        session,
        event_type=event_type,
        merchant_id=dispute.merchant_id,
        livemode=dispute.livemode,
        obj=message_to_json(dispute_to_proto(dispute)),
    )


def drive(session: Session, dispute: Dispute) -> None:
    """Asks a worker to carry out what the dispute waits for (postings, the decision)."""
    dispute.drive_count += 1
    dispute.drive_time = datetime.now(UTC)
    outbox.add_job(
        session,
        func=PROCESS_DISPUTE,
        job_id=f"dispute-{dispute.id}-process-{dispute.drive_count}",
        args=[dispute.id],
    )


def needs_work(dispute: Dispute) -> bool:
    """Whether the worker has something left to do for the dispute."""
    withdraw_due = not dispute.is_inquiry and dispute.withdraw_time is None
    return (
        withdraw_due
        or dispute.status in UNDER_REVIEW
        or (dispute.status == "won" and dispute.reinstate_time is None)
    )


def open_dispute(
    session: Session, *, filed: FiledDispute, response_window_s: float
) -> Dispute | None:
    """Records a dispute the network filed; None when its payment is unknown here.

    Marks the payment disputed, writes dispute.created, and asks the worker to withdraw a
    chargeback's funds.
    """
    payment = session.get(Payment, filed.payment_id, with_for_update=True)
    if payment is None:
        logger.error("the processor filed a dispute of unknown payment %s", filed.payment_id)
        return None
    inquiry = filed.kind == "inquiry"
    dispute = Dispute(
        id=new_id("dp"),
        payment_id=payment.id,
        processor_dispute_id=filed.processor_dispute_id,
        merchant_id=payment.merchant_id,
        livemode=payment.livemode,
        amount=filed.amount,
        currency=filed.currency,
        fee=0 if inquiry else dispute_fee(filed.currency),
        status="warning_needs_response" if inquiry else "needs_response",
        reason=filed.reason,
        # An inquiry moves no money: the merchant may still refund the charge (as on Stripe).
        is_charge_refundable=inquiry,
        evidence={},
        evidence_submitted=False,
        due_by=datetime.now(UTC) + timedelta(seconds=response_window_s),
        drive_count=0,
    )
    session.add(dispute)
    payment.dispute_id = dispute.id
    dispute_event(session, dispute, "dispute.created")
    if not inquiry:
        drive(session, dispute)
    return dispute


def validate_evidence(evidence: dict[str, str]) -> None:
    """Refuses evidence text over its length limit (the proto fixes which fields exist)."""
    violations = [
        FieldViolation(f"evidence.{name}", f"at most {EVIDENCE_LENGTH_MAX} characters")
        for name, value in evidence.items()
        if len(value) > EVIDENCE_LENGTH_MAX
    ]
    if violations:
        raise InvalidArgument("the evidence is invalid", violations=violations)


def update_dispute(
    session: Session,
    *,
    principal: Principal,
    dispute_id: str,
    evidence: dict[str, str],
    submit: bool,
) -> Dispute:
    """Sets evidence fields of the caller's dispute; `submit` sends them to the network."""
    validate_evidence(evidence)
    dispute = get_dispute_or_raise(
        session, principal=principal, dispute_id=dispute_id, for_update=True
    )
    if dispute.status not in NEEDS_RESPONSE:
        raise DisputeStateInvalid(
            f"a dispute in status {dispute.status!r} takes no evidence",
            metadata={"status": dispute.status},
        )
    if datetime.now(UTC) >= dispute.due_by:
        raise DisputeStateInvalid(
            "the dispute's evidence was due by " + dispute.due_by.isoformat(),
            metadata={"status": dispute.status, "due_by": dispute.due_by.isoformat()},
        )
    dispute.evidence = {**dispute.evidence, **{k: v for k, v in evidence.items() if v}}
    if submit:
        dispute.evidence_submitted = True
        move(
            session,
            dispute,
            "warning_under_review" if dispute.is_inquiry else "under_review",
        )
        drive(session, dispute)
    else:
        dispute_event(session, dispute, "dispute.updated")
    return dispute


def close_dispute(session: Session, *, principal: Principal, dispute_id: str) -> Dispute:
    """The merchant accepts the dispute: a chargeback is lost, an inquiry closed."""
    dispute = get_dispute_or_raise(
        session, principal=principal, dispute_id=dispute_id, for_update=True
    )
    if dispute.status not in NEEDS_RESPONSE:
        raise DisputeStateInvalid(
            f"a dispute in status {dispute.status!r} cannot be closed",
            metadata={"status": dispute.status},
        )
    move(session, dispute, "warning_closed" if dispute.is_inquiry else "lost")
    return dispute


def expire_unanswered(session: Session, *, limit: int) -> int:
    """Closes disputes whose due_by passed without an answer (lost; inquiries closed)."""
    rows = session.scalars(
        select(Dispute)
        .where(Dispute.status.in_(NEEDS_RESPONSE), Dispute.due_by <= datetime.now(UTC))
        .limit(limit)
        .with_for_update(skip_locked=True)
    ).all()
    for dispute in rows:
        logger.info("dispute %s unanswered by %s", dispute.id, dispute.due_by)
        move(session, dispute, "warning_closed" if dispute.is_inquiry else "lost")
    return len(rows)


def get_dispute_or_raise(
    session: Session, *, principal: Principal, dispute_id: str, for_update: bool = False
) -> Dispute:
    """The caller's dispute, or DisputeNotFound (also for another merchant's or mode's)."""
    dispute = (
        session.get(Dispute, dispute_id, with_for_update=for_update)
        if has_prefix(dispute_id, "dp")
        else None
    )
    if (
        dispute is None
        or dispute.merchant_id != principal.merchant_id
        or dispute.livemode != principal.livemode
    ):
        raise DisputeNotFound(f"no such dispute: {dispute_id!r}")
    return dispute


def list_disputes(
    session: Session,
    *,
    principal: Principal | None,
    tokens: pages.PageTokens,
    payment_id: str,
    page_size: int,
    page_token: str,
    created: pages.CreatedRange = pages.ANY_TIME,
) -> tuple[list[Dispute], str]:
    """A page of disputes, newest first; of one payment when `payment_id` is set.

    `principal` None lists every merchant's (the operators' view).
    """
    size = pages.page_size(page_size)
    scope: pages.Scope = {
        "merchant_id": principal.merchant_id if principal else None,
        "livemode": principal.livemode if principal else None,
        "payment_id": payment_id,
        **created.scope(),
    }
    query = select(Dispute)
    if principal is not None:
        query = query.where(
            Dispute.merchant_id == principal.merchant_id, Dispute.livemode == principal.livemode
        )
    if payment_id:
        if principal is not None:
            get_payment_or_raise(session, principal=principal, payment_id=payment_id)
        else:
            get_payment_by_id_or_raise(session, payment_id=payment_id)
        query = query.where(Dispute.payment_id == payment_id)
    query = query.where(*created.where(Dispute.create_time))
    position = tokens.open_after(page_token, list_name="disputes", scope=scope)
    if position is not None:
        query = query.where(tuple_(Dispute.create_time, Dispute.id) < tuple_(*position))
    rows = list(
        session.scalars(
            query.order_by(Dispute.create_time.desc(), Dispute.id.desc()).limit(size + 1)
        )
    )
    next_token = ""
    if len(rows) > size:
        rows = rows[:size]
        next_token = tokens.seal_after(
            rows[-1].create_time, rows[-1].id, list_name="disputes", scope=scope
        )
    return rows, next_token
