"""Payments: creation, lookup, and the rules of their lifecycle."""

from __future__ import annotations

from sqlalchemy.orm import Session

from services.common.auth import Principal
from services.common.errors import FieldViolation, InvalidArgument
from services.common.ids import has_prefix, new_id
from services.common.money import AMOUNT_MAX, normalize_currency
from services.payment.errors import PaymentNotFound
from services.payment.models import Payment

DESCRIPTION_LENGTH_MAX = 1000


def create_payment(
    session: Session,
    *,
    principal: Principal,
    amount: int,
    currency: str,
    description: str = "",
    metadata: dict[str, str] | None = None,
) -> Payment:
    """Creates a payment waiting for a payment method."""
    violations = []
    if not 0 < amount <= AMOUNT_MAX:
        violations.append(FieldViolation("amount", f"must be between 1 and {AMOUNT_MAX}"))
    code = normalize_currency(currency)
    if code is None:
        violations.append(FieldViolation("currency", "must be an ISO 4217 currency code"))
    if len(description) > DESCRIPTION_LENGTH_MAX:
        violations.append(
            FieldViolation("description", f"must be at most {DESCRIPTION_LENGTH_MAX} characters")
        )
    if violations or code is None:
        raise InvalidArgument("the payment is invalid", violations=violations)
    payment = Payment(
        id=new_id("pay"),
        merchant_id=principal.merchant_id,
        livemode=principal.livemode,
        amount=amount,
        currency=code,
        status="requires_payment_method",
        capture_method="automatic",
        description=description,
        metadata_=dict(metadata or {}),
    )
    session.add(payment)
    session.flush()
    return payment


def get_payment_or_raise(session: Session, *, principal: Principal, payment_id: str) -> Payment:
    """The caller's payment, or PaymentNotFound (also for another merchant's or mode's)."""
    payment = session.get(Payment, payment_id) if has_prefix(payment_id, "pay") else None
    if (
        payment is None
        or payment.merchant_id != principal.merchant_id
        or payment.livemode != principal.livemode
    ):
        raise PaymentNotFound(f"no such payment: {payment_id!r}")
    return payment
