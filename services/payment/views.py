"""Payments and refunds as the API shows them (proto messages), shared by servicer and events."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from paymesh.payment.v1 import payment_pb2
from sqlalchemy import Row

from services.payment.models import (
    Customer,
    Dispute,
    Payment,
    Payout,
    Refund,
    SavedPaymentMethod,
)


def checkout_url(*, base_url: str, payment: Payment | Row[Any]) -> str:
    """The hosted checkout page of a payment waiting for a card."""
    return f"{base_url.rstrip('/')}/checkout/{payment.id}?client_secret={payment.client_secret}"


def card_details(payment: Payment | Row[Any]) -> payment_pb2.CardDetails | None:
    """What the API shows of the payment's card, if it has one."""
    if payment.card_last4 is None:
        return None
    return payment_pb2.CardDetails(
        brand=payment.card_brand or "",
        last4=payment.card_last4,
        exp_month=payment.card_exp_month or 0,
        exp_year=payment.card_exp_year or 0,
        fingerprint=payment.card_fingerprint or "",
    )


def authentication_url(*, base_url: str, payment: Payment | Row[Any]) -> str:
    """The simulated issuer's 3-D Secure challenge page of a payment, on the hosted checkout."""
    return (
        f"{base_url.rstrip('/')}/checkout/{payment.id}/authenticate"
        f"?client_secret={payment.client_secret}"
    )


def payment_to_proto(
    payment: Payment | Row[Any], *, base_url: str = "", with_secret: bool = False
) -> payment_pb2.Payment:
    """The payment as the API shows it; the client secret only to those allowed to see it.

    `payment` is the ORM object or a row of `payments.read_payment_or_raise` (the same names).
    """
    message = payment_pb2.Payment(
        id=payment.id,
        amount=payment.amount,
        currency=payment.currency,
        status=payment.status,
        capture_method=payment.capture_method,
        amount_capturable=payment.amount_capturable,
        amount_received=payment.amount_received,
        amount_refunded=payment.amount_refunded,
        fee=payment.fee,
        failure_code=payment.failure_code,
        failure_message=payment.failure_message,
        description=payment.description,
        metadata=payment.metadata_,
        livemode=payment.livemode,
        return_url=payment.return_url,
        cancellation_reason=payment.cancellation_reason,
        merchant_id=payment.merchant_id,
        customer=payment.customer_id or "",
        payment_method=payment.payment_method_id or "",
        disputed=payment.dispute_id is not None,
        dispute=payment.dispute_id or "",
    )
    card = card_details(payment)
    if card is not None:
        message.card.CopyFrom(card)
    if with_secret:
        message.client_secret = payment.client_secret
        if payment.status == "requires_payment_method" and base_url:
            message.checkout_url = checkout_url(base_url=base_url, payment=payment)
        if payment.status == "requires_action" and base_url:
            message.next_action.CopyFrom(
                payment_pb2.NextAction(
                    type="redirect_to_url",
                    url=authentication_url(base_url=base_url, payment=payment),
                )
            )
    message.create_time.FromDatetime(payment.create_time)
    message.update_time.FromDatetime(payment.update_time)
    return message


def checkout_to_proto(
    payment: Payment, *, saved: list[SavedPaymentMethod] | None = None
) -> payment_pb2.Checkout:
    """What the hosted checkout page may show of a payment, and the saved cards it offers."""
    message = payment_pb2.Checkout(
        payment_id=payment.id,
        amount=payment.amount,
        currency=payment.currency,
        description=payment.description,
        merchant_name=payment.merchant_name,
        status=payment.status,
        return_url=payment.return_url,
        failure_code=payment.failure_code,
        failure_message=payment.failure_message,
        livemode=payment.livemode,
        setup_future_usage=payment.setup_future_usage or "",
        saved_payment_methods=[
            payment_pb2.CheckoutSavedCard(
                id=method.id,
                brand=method.card_brand,
                last4=method.card_last4,
                exp_month=method.card_exp_month,
                exp_year=method.card_exp_year,
            )
            for method in saved or []
        ],
    )
    card = card_details(payment)
    if card is not None:
        message.card.CopyFrom(card)
    return message


def refund_to_proto(refund: Refund) -> payment_pb2.Refund:
    """The refund as the API shows it."""
    message = payment_pb2.Refund(
        id=refund.id,
        payment_id=refund.payment_id,
        amount=refund.amount,
        currency=refund.currency,
        status=refund.status,
        reason=refund.reason,
        failure_code=refund.failure_code,
        livemode=refund.livemode,
        merchant_id=refund.merchant_id,
    )
    message.create_time.FromDatetime(refund.create_time)
    message.update_time.FromDatetime(refund.update_time)
    return message


def dispute_to_proto(dispute: Dispute) -> payment_pb2.Dispute:
    """The dispute as the API shows it."""
    evidence = dispute.evidence or {}
    message = payment_pb2.Dispute(
        id=dispute.id,
        payment_id=dispute.payment_id,
        amount=dispute.amount,
        currency=dispute.currency,
        status=dispute.status,
        reason=dispute.reason,
        fee=dispute.fee,
        evidence=payment_pb2.DisputeEvidence(**evidence),
        evidence_details=payment_pb2.EvidenceDetails(
            has_evidence=bool(evidence),
            past_due=dispute.due_by <= datetime.now(UTC),
            submitted=dispute.evidence_submitted,
        ),
        is_charge_refundable=dispute.is_charge_refundable,
        funds_withdrawn=dispute.withdraw_time is not None,
        funds_reinstated=dispute.reinstate_time is not None,
        livemode=dispute.livemode,
        merchant_id=dispute.merchant_id,
    )
    message.evidence_details.due_by.FromDatetime(dispute.due_by)
    message.create_time.FromDatetime(dispute.create_time)
    message.update_time.FromDatetime(dispute.update_time)
    return message


def customer_to_proto(customer: Customer) -> payment_pb2.Customer:
    """The customer as the API shows it."""
    message = payment_pb2.Customer(
        id=customer.id,
        email=customer.email,
        name=customer.name,
        description=customer.description,
        metadata=customer.metadata_,
        livemode=customer.livemode,
        merchant_id=customer.merchant_id,
    )
    message.create_time.FromDatetime(customer.create_time)
    message.update_time.FromDatetime(customer.update_time)
    return message


def payment_method_to_proto(method: SavedPaymentMethod) -> payment_pb2.SavedPaymentMethod:
    """The saved payment method as the API shows it: never its processor token."""
    message = payment_pb2.SavedPaymentMethod(
        id=method.id,
        type="card",
        card=payment_pb2.CardDetails(
            brand=method.card_brand,
            last4=method.card_last4,
            exp_month=method.card_exp_month,
            exp_year=method.card_exp_year,
            fingerprint=method.card_fingerprint,
        ),
        customer=method.customer_id or "",
        livemode=method.livemode,
        merchant_id=method.merchant_id,
    )
    message.create_time.FromDatetime(method.create_time)
    message.update_time.FromDatetime(method.update_time)
    return message


def payout_to_proto(payout: Payout) -> payment_pb2.Payout:
    """The payout as the API shows it: only the last four digits of the bank account."""
    message = payment_pb2.Payout(
        id=payout.id,
        amount=payout.amount,
        currency=payout.currency,
        status=payout.status,
        method=payout.method,
        description=payout.description,
        metadata=payout.metadata_,
        bank_account_last4=payout.bank_account_number[-4:],
        failure_code=payout.failure_code,
        livemode=payout.livemode,
        merchant_id=payout.merchant_id,
    )
    if payout.finish_time is not None:
        message.finish_time.FromDatetime(payout.finish_time)
    message.create_time.FromDatetime(payout.create_time)
    message.update_time.FromDatetime(payout.update_time)
    return message
