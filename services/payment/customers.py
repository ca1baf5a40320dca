"""Customers and their saved payment methods (cards saved for later payments).

A customer is deleted softly (`delete_time`): payments keep naming it, while every read answers
CustomerNotFound as for an unknown id, and its saved payment methods are detached. A saved
payment method keeps the processor's token of its card (the vault keeps the card) and what is
shown of it; it pays only while attached to a customer. Every change writes its event
(`customer.*`, `payment_method.*`) to the outbox in the caller's transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, Protocol

from sqlalchemy import literal, select, tuple_
from sqlalchemy.orm import Session

from services.common import pages
from services.common.auth import Principal
from services.common.errors import FieldViolation, InvalidArgument
from services.common.ids import has_prefix, new_id
from services.common.rest_json import message_to_json
from services.payment import outbox
from services.payment.errors import CustomerNotFound, PaymentMethodNotFound
from services.payment.models import Customer, SavedPaymentMethod
from services.payment.validation import (
    DESCRIPTION_LENGTH_MAX,
    SAVED_ID_FIELD,
    metadata_violations,
)
from services.payment.views import customer_to_proto, payment_method_to_proto


class Tenant(Protocol):
    """Whose objects a lookup may find: a caller (Principal) or the payment it works on."""

    @property
    def merchant_id(self) -> str:
        """The merchant."""
        ...

    @property
    def livemode(self) -> bool:
        """The mode."""
        ...


EMAIL_LENGTH_MAX = 512
NAME_LENGTH_MAX = 256
SETUP_FUTURE_USAGES = ("on_session", "off_session")


def _email_violations(email: str) -> list[FieldViolation]:
    if not email:
        return []
    if len(email) > EMAIL_LENGTH_MAX:
        return [FieldViolation("email", f"must be at most {EMAIL_LENGTH_MAX} characters")]
    local, at, domain = email.rpartition("@")
    if not at or not local or not domain or any(char.isspace() for char in email):
        return [FieldViolation("email", "must be an email address (name@example.com)")]
    return []


def _text_violations(*, name: str | None, description: str | None) -> list[FieldViolation]:
    violations = []
    if name is not None and len(name) > NAME_LENGTH_MAX:
        violations.append(FieldViolation("name", f"must be at most {NAME_LENGTH_MAX} characters"))
    if description is not None and len(description) > DESCRIPTION_LENGTH_MAX:
        violations.append(
            FieldViolation("description", f"must be at most {DESCRIPTION_LENGTH_MAX} characters")
        )
    return violations


def validate_customer(
    *, email: str | None, name: str | None, description: str | None, metadata: dict[str, str]
) -> None:
    """InvalidArgument listing every fault of a customer's fields (None: not sent)."""
    violations = _email_violations(email or "")
    violations += _text_violations(name=name, description=description)
    violations += metadata_violations(metadata)
    if violations:
        raise InvalidArgument("the customer is invalid", violations=violations)


def _customer_event(session: Session, customer: Customer, event_type: str) -> None:
    session.flush()
    outbox.add_event(
        session,
        event_type=event_type,
        merchant_id=customer.merchant_id,
        livemode=customer.livemode,
        obj=message_to_json(customer_to_proto(customer)),
    )


def _method_event(session: Session, method: SavedPaymentMethod, event_type: str) -> None:
    session.flush()
    outbox.add_event(
        session,
        event_type=event_type,
        merchant_id=method.merchant_id,
        livemode=method.livemode,
        obj=message_to_json(payment_method_to_proto(method)),
    )


def create_customer(
    session: Session,
    *,
    principal: Principal,
    email: str,
    name: str,
    description: str,
    metadata: dict[str, str],
) -> Customer:
    """Creates a customer (customer.created)."""
    validate_customer(email=email, name=name, description=description, metadata=metadata)
    customer = Customer(
        id=new_id("cus"),
        merchant_id=principal.merchant_id,
        livemode=principal.livemode,
        email=email,
        name=name,
        description=description,
        metadata_=dict(metadata),
    )
    session.add(customer)
    _customer_event(session, customer, "customer.created")
    return customer


def get_customer_or_raise(
    session: Session, *, principal: Tenant, customer_id: str, for_update: bool = False
) -> Customer:
    """The caller's live (not deleted) customer, or CustomerNotFound (also another's or mode's)."""
    customer = None
    if has_prefix(customer_id, "cus"):
        customer = session.get(Customer, customer_id, with_for_update=for_update)
    if (
        customer is None
        or customer.delete_time is not None
        or customer.merchant_id != principal.merchant_id
        or customer.livemode != principal.livemode
    ):
        raise CustomerNotFound(f"no such customer: {customer_id!r}")
    return customer


def update_customer(
    session: Session,
    *,
    principal: Principal,
    customer_id: str,
    email: str | None,
    name: str | None,
    description: str | None,
    metadata: dict[str, str],
) -> Customer:
    """Sets the fields sent (customer.updated); a metadata key sent empty is removed."""
    validate_customer(email=email, name=name, description=description, metadata=metadata)
    customer = get_customer_or_raise(
        session, principal=principal, customer_id=customer_id, for_update=True
    )
    if email is not None:
        customer.email = email
    if name is not None:
        customer.name = name
    if description is not None:
        customer.description = description
    if metadata:
        merged = {**customer.metadata_, **metadata}
        merged = {key: value for key, value in merged.items() if value}
        violations = metadata_violations(merged)
        if violations:
            raise InvalidArgument("the customer is invalid", violations=violations)
        customer.metadata_ = merged
    customer.update_time = datetime.now(UTC)
    _customer_event(session, customer, "customer.updated")
    return customer


def delete_customer(session: Session, *, principal: Principal, customer_id: str) -> Customer:
    """Deletes a customer (customer.deleted) and detaches its saved payment methods."""
    customer = get_customer_or_raise(
        session, principal=principal, customer_id=customer_id, for_update=True
    )
    methods = session.scalars(
        select(SavedPaymentMethod)
        .where(SavedPaymentMethod.customer_id == customer.id)
        .order_by(SavedPaymentMethod.create_time)
        .with_for_update()
    ).all()
    for method in methods:
        _detach(session, method)
    customer.delete_time = datetime.now(UTC)
    _customer_event(session, customer, "customer.deleted")
    return customer


def list_customers(
    session: Session,
    *,
    principal: Principal,
    tokens: pages.PageTokens,
    page_size: int,
    page_token: str,
    email: str = "",
    created: pages.CreatedRange = pages.ANY_TIME,
) -> tuple[list[Customer], str]:
    """A page of the caller's customers, newest first, optionally those with one email."""
    size = pages.page_size(page_size)
    scope: pages.Scope = {
        "merchant_id": principal.merchant_id,
        "livemode": principal.livemode,
        "email": email,
        **created.scope(),
    }
    query = select(Customer).where(
        Customer.merchant_id == principal.merchant_id,
        Customer.livemode == principal.livemode,
        Customer.delete_time.is_(None),
        *created.where(Customer.create_time),
    )
    if email:
        query = query.where(Customer.email == email)
    position = tokens.open_after(page_token, list_name="customers", scope=scope)
    if position is not None:
        query = query.where(tuple_(Customer.create_time, Customer.id) < tuple_(*position))
    rows = list(
        session.scalars(
            query.order_by(Customer.create_time.desc(), Customer.id.desc()).limit(size + 1)
        )
    )
    next_token = ""
    if len(rows) > size:
        rows = rows[:size]
        next_token = tokens.seal_after(
            rows[-1].create_time, rows[-1].id, list_name="customers", scope=scope
        )
    return rows, next_token


def get_payment_method_or_raise(
    session: Session, *, principal: Tenant, payment_method_id: str, for_update: bool = False
) -> SavedPaymentMethod:
    """The caller's saved payment method, or PaymentMethodNotFound (another's or mode's too)."""
    method = None
    if has_prefix(payment_method_id, "pm"):
        method = session.get(SavedPaymentMethod, payment_method_id, with_for_update=for_update)
    if (
        method is None
        or method.merchant_id != principal.merchant_id
        or method.livemode != principal.livemode
    ):
        raise PaymentMethodNotFound(f"no such payment method: {payment_method_id!r}")
    return method


def list_payment_methods(
    session: Session,
    *,
    principal: Principal,
    tokens: pages.PageTokens,
    customer_id: str,
    page_size: int,
    page_token: str,
) -> tuple[list[SavedPaymentMethod], str]:
    """A page of a customer's saved payment methods, newest first."""
    if not customer_id:
        raise InvalidArgument.field("customer", "is required")
    size = pages.page_size(page_size)
    customer = get_customer_or_raise(session, principal=principal, customer_id=customer_id)
    scope: pages.Scope = {
        "merchant_id": principal.merchant_id,
        "livemode": principal.livemode,
        "customer": customer.id,
    }
    query = select(SavedPaymentMethod).where(SavedPaymentMethod.customer_id == customer.id)
    position = tokens.open_after(page_token, list_name="payment_methods", scope=scope)
    if position is not None:
        query = query.where(
            tuple_(SavedPaymentMethod.create_time, SavedPaymentMethod.id) < tuple_(*position)
        )
    rows = list(
        session.scalars(
            query.order_by(
                SavedPaymentMethod.create_time.desc(), SavedPaymentMethod.id.desc()
            ).limit(size + 1)
        )
    )
    next_token = ""
    if len(rows) > size:
        rows = rows[:size]
        next_token = tokens.seal_after(
            rows[-1].create_time, rows[-1].id, list_name="payment_methods", scope=scope
        )
    return rows, next_token


def attach_payment_method(
    session: Session, *, principal: Principal, payment_method_id: str, customer_id: str
) -> SavedPaymentMethod:
    """Attaches a saved payment method to a customer (payment_method.attached).

    Attaching it again to the customer it has changes nothing; one attached to another customer
    moves to this one (detached from the first, with its event).
    """
    if not customer_id:
        raise InvalidArgument.field("customer", "is required")
    method = get_payment_method_or_raise(
        session, principal=principal, payment_method_id=payment_method_id, for_update=True
    )
    customer = get_customer_or_raise(session, principal=principal, customer_id=customer_id)
    if method.customer_id == customer.id:
        return method
    if method.customer_id is not None:
        _detach(session, method)
    method.customer_id = customer.id
    # The merchant's own attach settles a card still waiting on its payment.
    method.setup_payment_id = None
    method.update_time = datetime.now(UTC)
    _method_event(session, method, "payment_method.attached")
    return method


def _detach(session: Session, method: SavedPaymentMethod) -> None:
    method.customer_id = None
    method.update_time = datetime.now(UTC)
    _method_event(session, method, "payment_method.detached")


def detach_payment_method(
    session: Session, *, principal: Principal, payment_method_id: str
) -> SavedPaymentMethod:
    """Detaches a saved payment method from its customer (payment_method.detached).

    Detaching one that is attached to nobody changes nothing, but a card still waiting on its
    payment will then not be attached when that payment succeeds.
    """
    method = get_payment_method_or_raise(
        session, principal=principal, payment_method_id=payment_method_id, for_update=True
    )
    method.setup_payment_id = None
    if method.customer_id is not None:
        _detach(session, method)
    return method


def save_card(
    session: Session,
    *,
    customer: Customer,
    payment_id: str,
    brand: str,
    last4: str,
    exp_month: int,
    exp_year: int,
    fingerprint: str,
    processor_token: str,
) -> SavedPaymentMethod:
    """Saves a vaulted card paying `payment_id` as a payment method of `customer`'s tenancy.

    It stays unattached until the payment succeeds or is authorized (`attach_saved_cards`), as
    on Stripe: a declined card, or one whose authentication failed or was abandoned, is never
    offered again.
    """
    method = SavedPaymentMethod(
        id=new_id("pm"),
        merchant_id=customer.merchant_id,
        livemode=customer.livemode,
        customer_id=None,
        setup_payment_id=payment_id,
        card_brand=brand,
        card_last4=last4,
        card_exp_month=exp_month,
        card_exp_year=exp_year,
        card_fingerprint=fingerprint,
        processor_token=processor_token,
    )
    session.add(method)
    return method


def attach_saved_cards(session: Session, payments: Sequence[Any]) -> int:
    """Attaches the cards saved while paying to their customers, once their payments succeeded
    or were authorized (payment_method.attached); returns how many.

    `payments` are payment rows (anything with `id`, `payment_method_id`, `customer_id`); only
    a method still waiting on that very payment is attached, and never to a deleted customer.
    """
    waiting = {
        payment.payment_method_id: payment
        for payment in payments
        if payment.payment_method_id is not None and payment.customer_id is not None
    }
    if not waiting:
        return 0
    methods = session.scalars(
        select(SavedPaymentMethod)
        .where(SavedPaymentMethod.id.in_(waiting), SavedPaymentMethod.setup_payment_id.is_not(None))
        .with_for_update()
    ).all()
    attached = 0
    for method in methods:
        payment = waiting[method.id]
        if method.setup_payment_id != payment.id:
            continue
        method.setup_payment_id = None
        customer = session.get(Customer, payment.customer_id)
        if customer is None or customer.delete_time is not None:
            continue
        method.customer_id = customer.id
        method.update_time = datetime.now(UTC)
        _method_event(session, method, "payment_method.attached")
        attached += 1
    return attached


def validate_payment_options(
    *,
    customer_id: str,
    setup_future_usage: str,
    off_session: bool,
    has_card: bool,
    saved_id: str,
) -> None:
    """InvalidArgument listing every fault of a payment's customer options.

    A saved payment method pays for its customer only; saving a card needs a customer to
    attach it to; off session there must be something to charge.
    """
    violations = []
    if setup_future_usage and setup_future_usage not in SETUP_FUTURE_USAGES:
        violations.append(
            FieldViolation("setup_future_usage", "must be 'on_session' or 'off_session'")
        )
    elif setup_future_usage and not customer_id:
        violations.append(
            FieldViolation("setup_future_usage", "needs a customer to save the card for")
        )
    if saved_id and has_card:
        violations.append(
            FieldViolation("payment_method", "must have either a card or an id, not both")
        )
    elif saved_id and not customer_id:
        violations.append(
            FieldViolation("customer", "is required to pay with a saved payment method")
        )
    if off_session and not (has_card or saved_id):
        violations.append(FieldViolation("off_session", "needs a payment method to charge"))
    if violations:
        raise InvalidArgument("the payment is invalid", violations=violations)


def saved_for_customer_or_raise(
    session: Session,
    *,
    principal: Tenant,
    payment_method_id: str,
    customer: Customer,
    by_client_secret: bool = False,
) -> SavedPaymentMethod:
    """The caller's saved payment method if it is attached to `customer` and unexpired.

    A merchant's own method attached elsewhere is an InvalidArgument naming the field; for a
    caller holding only a payment's client secret (the hosted checkout) it is
    PaymentMethodNotFound, as an unknown id, so that a checkout link learns nothing of the
    merchant's other customers. An expired card is refused whoever asks.
    """
    method = get_payment_method_or_raise(
        session, principal=principal, payment_method_id=payment_method_id
    )
    if method.customer_id != customer.id:
        if by_client_secret:
            raise PaymentMethodNotFound(f"no such payment method: {payment_method_id!r}")
        raise InvalidArgument.field(SAVED_ID_FIELD, f"is not attached to customer {customer.id!r}")
    if card_expired(method):
        raise InvalidArgument.field(
            SAVED_ID_FIELD,
            f"the saved card ({method.card_brand} ending {method.card_last4}) expired at the end"
            f" of {method.card_exp_month:02d}/{method.card_exp_year}; pay with another card",
        )
    return method


def card_expired(method: SavedPaymentMethod, *, now: datetime | None = None) -> bool:
    """Whether a saved card is past its expiry (a card is good through its expiry month)."""
    now = now or datetime.now(UTC)
    return (method.card_exp_year, method.card_exp_month) < (now.year, now.month)


# How many saved cards the hosted checkout offers at most.
CHECKOUT_SAVED_CARDS_MAX = 10


def unexpired_cards(
    session: Session, *, tenant: Tenant, customer_id: str, now: datetime | None = None
) -> list[SavedPaymentMethod]:
    """A customer's unexpired saved cards, newest first, at most CHECKOUT_SAVED_CARDS_MAX.

    Only cards attached to the customer (a deleted customer's are detached, so none), and only
    the tenant's merchant and mode.
    """
    now = now or datetime.now(UTC)
    return list(
        session.scalars(
            select(SavedPaymentMethod)
            .where(
                SavedPaymentMethod.customer_id == customer_id,
                SavedPaymentMethod.merchant_id == tenant.merchant_id,
                SavedPaymentMethod.livemode == tenant.livemode,
                tuple_(SavedPaymentMethod.card_exp_year, SavedPaymentMethod.card_exp_month)
                >= tuple_(literal(now.year), literal(now.month)),
            )
            .order_by(SavedPaymentMethod.create_time.desc(), SavedPaymentMethod.id.desc())
            .limit(CHECKOUT_SAVED_CARDS_MAX)
        )
    )
