"""Refunds: money given back from a succeeded payment, in one or more parts.

A refund is created `pending` with its amount reserved against the payment (pending and
succeeded refunds together never exceed what was captured, checked under the payment's row
lock); the worker then refunds at the processor, posts to the ledger, and marks it `succeeded`
(or `failed`, which frees the reservation).
"""

from __future__ import annotations

from sqlalchemy import func, select, tuple_
from sqlalchemy.orm import Session

from services.common import pages
from services.common.auth import Principal
from services.common.errors import FieldViolation, InvalidArgument
from services.common.ids import has_prefix, new_id
from services.payment import outbox
from services.payment.errors import (
    AmountTooLarge,
    ChargeDisputed,
    PaymentStateInvalid,
    RefundNotFound,
)
from services.payment.models import Dispute, Payment, Refund
from services.payment.payments import (
    get_payment_by_id_or_raise,
    get_payment_or_raise,
)
from services.payment.validation import REFUND_REASONS, amount_violations, validate_choice


def validate_refund_input(*, payment_id: str, amount: int | None, reason: str) -> None:
    """Checks a refund request's fields before anything is looked up.

    `amount` is None when the request left it out (refund what is left); 0 is refused like
    any other amount outside 1..AMOUNT_MAX, never read as "everything".
    """
    violations: list[FieldViolation] = []
    if not payment_id:
        violations.append(FieldViolation("payment_id", "is required"))
    if amount is not None:
        violations += amount_violations(amount)
    if violations:
        raise InvalidArgument("the refund is invalid", violations=violations)
    validate_choice(reason, REFUND_REASONS, "reason")


def refundable(session: Session, payment: Payment) -> int:
    """What is left to refund: captured minus pending and succeeded refunds."""
    reserved = session.scalar(
        select(func.coalesce(func.sum(Refund.amount), 0)).where(
            Refund.payment_id == payment.id, Refund.status.in_(("pending", "succeeded"))
        )
    )
    return payment.amount_received - int(reserved or 0)


def create_refund(
    session: Session, *, payment: Payment, amount: int | None, reason: str, operator_id: str = ""
) -> Refund:
    """Reserves and records a refund of a locked, succeeded payment; the worker carries it out.

    `amount` None refunds what is left; any other amount must be validated already (positive).
    """
    assert amount is None or amount > 0, "refund amounts are validated before this point"
    if payment.status != "succeeded":
        raise PaymentStateInvalid(
            f"a payment in status {payment.status!r} cannot be refunded",
            metadata={"status": payment.status},
        )
    if payment.dispute_id is not None:
        dispute = session.get(Dispute, payment.dispute_id)
        if dispute is None or not dispute.is_charge_refundable:
            raise ChargeDisputed(
                f"the payment is disputed ({payment.dispute_id}): the dispute settles its money",
                metadata={"dispute": payment.dispute_id},
            )
    available = refundable(session, payment)
    if available <= 0:
        raise AmountTooLarge("the payment is fully refunded")
    amount = available if amount is None else amount
    if amount > available:
        raise AmountTooLarge(
            f"at most {available} can be refunded",
            violations=[FieldViolation("amount", f"must be at most {available}")],
        )
    refund = Refund(
        id=new_id("re"),
        payment_id=payment.id,
        merchant_id=payment.merchant_id,
        livemode=payment.livemode,
        amount=amount,
        currency=payment.currency,
        status="pending",
        reason=reason,
        operator_id=operator_id,
        drive_count=0,
    )
    session.add(refund)
    outbox.drive_refund(session, refund)
    session.flush()
    return refund


def create_refund_for(
    session: Session, *, principal: Principal, payment_id: str, amount: int | None, reason: str
) -> Refund:
    """Refunds the caller's payment."""
    payment = get_payment_or_raise(
        session, principal=principal, payment_id=payment_id, for_update=True
    )
    return create_refund(session, payment=payment, amount=amount, reason=reason)


def get_refund_or_raise(session: Session, *, principal: Principal, refund_id: str) -> Refund:
    """The caller's refund, or RefundNotFound (also for another merchant's or mode's)."""
    refund = session.get(Refund, refund_id) if has_prefix(refund_id, "re") else None
    if (
        refund is None
        or refund.merchant_id != principal.merchant_id
        or refund.livemode != principal.livemode
    ):
        raise RefundNotFound(f"no such refund: {refund_id!r}")
    return refund


def list_refunds(
    session: Session,
    *,
    principal: Principal | None,
    tokens: pages.PageTokens,
    payment_id: str,
    page_size: int,
    page_token: str,
    created: pages.CreatedRange = pages.ANY_TIME,
) -> tuple[list[Refund], str]:
    """A page of refunds, newest first; of one payment when `payment_id` is set."""
    size = pages.page_size(page_size)
    scope: pages.Scope = {
        "merchant_id": principal.merchant_id if principal else None,
        "livemode": principal.livemode if principal else None,
        "payment_id": payment_id,
        **created.scope(),
    }
    query = select(Refund)
    if principal is not None:
        query = query.where(
            Refund.merchant_id == principal.merchant_id, Refund.livemode == principal.livemode
        )
    if payment_id:
        if principal is not None:
            get_payment_or_raise(session, principal=principal, payment_id=payment_id)
        else:
            get_payment_by_id_or_raise(session, payment_id=payment_id)
        query = query.where(Refund.payment_id == payment_id)
    query = query.where(*created.where(Refund.create_time))
    position = tokens.open_after(page_token, list_name="refunds", scope=scope)
    if position is not None:
        query = query.where(tuple_(Refund.create_time, Refund.id) < tuple_(*position))
    rows = list(
        session.scalars(query.order_by(Refund.create_time.desc(), Refund.id.desc()).limit(size + 1))
    )
    next_token = ""
    if len(rows) > size:
        rows = rows[:size]
        next_token = tokens.seal_after(
            rows[-1].create_time, rows[-1].id, list_name="refunds", scope=scope
        )
    return rows, next_token
