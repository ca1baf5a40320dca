"""Payments: creation, lookup, listing, and the rules of their lifecycle.

    requires_payment_method ──confirm──> processing ──worker──> succeeded | failed
                                              │                  (automatic capture)
                                              └──worker──> requires_capture ──capture──> processing
    requires_payment_method | requires_capture ──cancel (or capture window)──> canceled

Domain functions take a session and never commit; every state change writes its event (and
any work for the worker) to the outbox in the same transaction.
"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

from psycopg import AsyncConnection
from psycopg.rows import namedtuple_row
from psycopg.types.json import Jsonb
from sqlalchemy import Table, bindparam, insert, select, tuple_
from sqlalchemy.orm import Session

from services.common import pages
from services.common.auth import Principal
from services.common.db import render
from services.common.errors import FieldViolation, InvalidArgument
from services.common.ids import has_prefix, new_id
from services.payment import customers, outbox
from services.payment.errors import AmountTooLarge, PaymentNotFound, PaymentStateInvalid
from services.payment.models import PAYMENT_STATUSES, Customer, Payment, SavedPaymentMethod
from services.payment.processor import CardToken
from services.payment.validation import (
    CANCELLATION_REASONS,
    SAVED_ID_FIELD,
    CardInput,
    PaymentInput,
    amount_violations,
    card_fingerprint,
    validate_choice,
)

CLIENT_SECRET_RANDOM_BYTES = 24


@dataclass(frozen=True)
class AttachedCard:
    """A card once the processor vaulted it: what the payment may keep of it."""

    token: CardToken
    exp_month: int
    exp_year: int
    fingerprint: str


def attach_card(card: CardInput, token: CardToken, *, fingerprint_key: str) -> AttachedCard:
    """What a payment keeps of a card: token, brand, last4, expiry, keyed fingerprint."""
    return AttachedCard(
        token=token,
        exp_month=card.exp_month,
        exp_year=card.exp_year,
        fingerprint=card_fingerprint(card.number, fingerprint_key),
    )


def _processing(card: AttachedCard) -> dict[str, Any]:
    """What a payment becomes (attribute names) when a card starts its processing."""
    return {
        "card_brand": card.token.brand,
        "card_last4": card.token.last4,
        "card_exp_month": card.exp_month,
        "card_exp_year": card.exp_year,
        "card_fingerprint": card.fingerprint,
        "processor_token": card.token.token,
        "failure_code": "",
        "failure_message": "",
        # A card its issuer wants authenticated (3-D Secure) waits for the customer first.
        "status": "requires_action" if card.token.requires_authentication else "processing",
    }


def _start_processing(session: Session, payment: Payment, card: AttachedCard) -> None:
    for name, value in _processing(card).items():
        setattr(payment, name, value)
    if payment.status == "requires_action":
        outbox.payment_event(session, payment, "payment.requires_action")
        return
    outbox.drive_payment(session, payment)
    outbox.payment_event(session, payment, "payment.processing")


# What the customer did on the 3-D Secure challenge page (the simulator's, as Stripe's test
# page: complete or fail).
AUTHENTICATION_RESULTS = ("complete", "fail")


def authenticate_payment(session: Session, *, payment: Payment, result: str) -> Payment:
    """Records the customer's 3-D Secure result: the payment goes on, or fails.

    A failed authentication is a failed attempt (`authentication_failed`, payment.failed): the
    payment may be confirmed again with another card, as after a decline.
    """
    if result not in AUTHENTICATION_RESULTS:
        raise InvalidArgument.field("result", "must be 'complete' or 'fail'")
    if payment.status != "requires_action":
        raise PaymentStateInvalid(
            f"a payment in status {payment.status!r} has no authentication to complete",
            metadata={"status": payment.status},
        )
    if result == "complete":
        payment.status = "processing"
        outbox.drive_payment(session, payment)
        outbox.payment_event(session, payment, "payment.processing")
    else:
        payment.status = "failed"
        payment.failure_code = "authentication_failed"
        payment.failure_message = "The customer did not complete 3-D Secure authentication."
        outbox.payment_event(session, payment, "payment.failed")
    session.flush()
    return payment


# A new payment is one INSERT that returns every column under its attribute name (the view
# reads the row as it reads the ORM object), and its outbox rows one more (an executemany),
# sent by psycopg on the event loop in the create's transaction: no ORM unit of work, no
# Core execution per statement, no worker thread. Every column is given (the model's Python
# defaults too) except the server's times, which the INSERT returns.
_PAYMENT_COLUMNS = {
    name: column.key
    for name, column in Payment.__mapper__.columns.items()
    if name not in ("create_time", "update_time")
}
_INSERT_PAYMENT = render(
    insert(cast(Table, Payment.__table__)).returning(
        *(column.label(name) for name, column in Payment.__mapper__.columns.items())
    ),
    columns=_PAYMENT_COLUMNS.values(),
)


def _new_values(*, principal: Principal, data: PaymentInput) -> dict[str, Any]:
    """Every column of a new payment waiting for a card (the server's times aside)."""
    payment_id = new_id("pay")
    values: dict[str, Any] = dict.fromkeys(_PAYMENT_COLUMNS)
    values.update(
        id=payment_id,
        merchant_id=principal.merchant_id,
        merchant_name=principal.merchant_name,
        livemode=principal.livemode,
        amount=data.amount,
        currency=data.currency,
        status="requires_payment_method",
        capture_method=data.capture_method,
        amount_capturable=0,
        amount_received=0,
        amount_refunded=0,
        fee=0,
        fee_bps=principal.fee_bps,
        fee_fixed=principal.fee_fixed,
        failure_code="",
        failure_message="",
        description=data.description,
        metadata_=dict(data.metadata),
        return_url=data.return_url,
        cancellation_reason="",
        client_secret=f"{payment_id}_secret_{secrets.token_urlsafe(CLIENT_SECRET_RANDOM_BYTES)}",
        ledger_reference="",
        drive_count=0,
    )
    return values


async def create_payment(
    connection: AsyncConnection[Any],
    *,
    principal: Principal,
    data: PaymentInput,
    card: AttachedCard | None,
) -> Any:
    """Creates a payment; with a card it starts processing at once (its first drive).

    Runs in the caller's transaction on `connection`; returns the row with the attributes'
    names. A payment for a customer is made by `create_customer_payment` instead.
    """
    values = _new_values(principal=principal, data=data)
    values["metadata_"] = Jsonb(values["metadata_"])
    authenticating = card is not None and card.token.requires_authentication
    if card is not None:
        # Inserted once, already processing and driven once, as `_start_processing` leaves it
        # (or waiting for the customer's authentication, undriven).
        values.update(_processing(card))
        if not authenticating:
            values.update(drive_count=1, drive_time=datetime.now(UTC))
    cursor = connection.cursor(row_factory=namedtuple_row)
    # The INSERT returns the server's times too: no SELECT after it.
    await cursor.execute(
        _INSERT_PAYMENT.sql, {_PAYMENT_COLUMNS[name]: value for name, value in values.items()}
    )
    payment: Any = await cursor.fetchone()
    assert payment is not None, "an INSERT ... RETURNING returns its row"
    if authenticating:
        await outbox.insert_rows(
            connection, [outbox.payment_event_row(payment, "payment.requires_action")]
        )
    elif card is not None:
        await outbox.insert_rows(
            connection,
            [
                outbox.payment_drive_job(payment.id, payment.drive_count),
                outbox.payment_event_row(payment, "payment.processing"),
            ],
        )
    return payment


AUTHENTICATION_REQUIRED_MESSAGE = (
    "The card's issuer requires authentication, which an off-session payment cannot ask for."
)


def create_customer_payment(
    session: Session,
    *,
    principal: Principal,
    data: PaymentInput,
    customer: Customer,
    card: AttachedCard | None,
    saved: SavedPaymentMethod | None,
    setup_future_usage: str,
    off_session: bool,
) -> Payment:
    """Creates a payment for a customer: with a new card (saved under `setup_future_usage`), a
    saved payment method, or none yet.

    Off session, a card that requires authentication fails the payment at once
    (`authentication_required`, payment.failed): there is no customer to ask.
    """
    values = _new_values(principal=principal, data=data)
    values.update(customer_id=customer.id, setup_future_usage=setup_future_usage or None)
    payment = Payment(**values)
    session.add(payment)
    if card is None:
        session.flush()
        return payment
    if saved is not None:
        payment.payment_method_id = saved.id
    if off_session and card.token.requires_authentication:
        for name, value in _processing(card).items():
            setattr(payment, name, value)
        _fail_authentication_required(session, payment)
        return payment
    if saved is None and setup_future_usage:
        payment.payment_method_id = save_payment_card(
            session, customer=customer, card=card, payment_id=payment.id
        ).id
    _start_processing(session, payment, card)
    session.flush()
    return payment


def _fail_authentication_required(session: Session, payment: Payment) -> None:
    payment.status = "failed"
    payment.failure_code = "authentication_required"
    payment.failure_message = AUTHENTICATION_REQUIRED_MESSAGE
    outbox.payment_event(session, payment, "payment.failed")


def save_payment_card(
    session: Session, *, customer: Customer, card: AttachedCard, payment_id: str
) -> SavedPaymentMethod:
    """Saves a payment's card for `customer`, attached once the payment succeeds."""
    return customers.save_card(
        session,
        customer=customer,
        payment_id=payment_id,
        brand=card.token.brand,
        last4=card.token.last4,
        exp_month=card.exp_month,
        exp_year=card.exp_year,
        fingerprint=card.fingerprint,
        processor_token=card.token.token,
    )


def saved_card(method: SavedPaymentMethod, token: CardToken) -> AttachedCard:
    """A saved payment method's card, as a payment attaches it (the vault's token reused)."""
    return AttachedCard(
        token=token,
        exp_month=method.card_exp_month,
        exp_year=method.card_exp_year,
        fingerprint=method.card_fingerprint,
    )


def _owned(payment: Any, principal: Principal) -> bool:
    """The ownership rule: the principal's merchant and mode, or nothing."""
    return (
        payment is not None
        and payment.merchant_id == principal.merchant_id
        and payment.livemode == principal.livemode
    )


def get_payment_or_raise(
    session: Session, *, principal: Principal, payment_id: str, for_update: bool = False
) -> Payment:
    """The caller's payment, or PaymentNotFound (also for another merchant's or mode's)."""
    payment = _load(session, payment_id, for_update=for_update)
    if payment is None or not _owned(payment, principal):
        raise PaymentNotFound(f"no such payment: {payment_id!r}")
    return payment


# What the API shows of a payment (views.payment_to_proto), under the attributes' names. Built
# once: building it per call (33 columns coerced, its cache key computed) cost more CPU than
# the ORM's get.
_READ_PAYMENT = select(
    *(
        column.label(name)
        for name, column in Payment.__mapper__.columns.items()
        if name not in ("processor_token", "processor_charge_id", "ledger_reference")
    )
).where(Payment.id == bindparam("payment_id"))


_READ_PAYMENT_SQL = render(_READ_PAYMENT)


async def read_payment_or_raise(
    connection: AsyncConnection[Any], *, principal: Principal, payment_id: str
) -> Any:
    """The caller's payment as a row for the view, or PaymentNotFound, in one statement.

    Another merchant's or mode's payment is not found by the same rule (`_owned`) as in
    `get_payment_or_raise`; no ORM object is built. The row has the attributes' names.
    """
    row = None
    if has_prefix(payment_id, "pay"):
        cursor = connection.cursor(row_factory=namedtuple_row)
        await cursor.execute(_READ_PAYMENT_SQL.sql, {"payment_id": payment_id})
        row = await cursor.fetchone()
    if row is None or not _owned(row, principal):
        raise PaymentNotFound(f"no such payment: {payment_id!r}")
    return row


def _load(session: Session, payment_id: str, *, for_update: bool) -> Payment | None:
    if not has_prefix(payment_id, "pay"):
        return None
    return session.get(Payment, payment_id, with_for_update=for_update)


def get_payment_by_id_or_raise(
    session: Session, *, payment_id: str, for_update: bool = False
) -> Payment:
    """Any merchant's payment (for trusted internal callers), or PaymentNotFound."""
    payment = _load(session, payment_id, for_update=for_update)
    if payment is None:
        raise PaymentNotFound(f"no such payment: {payment_id!r}")
    return payment


def get_payment_with_secret_or_raise(
    session: Session,
    *,
    principal: Principal | None,
    payment_id: str,
    client_secret: str,
    for_update: bool = False,
) -> Payment:
    """The payment for a caller holding its client secret, or the owner's secret key.

    A secret key of the owning merchant needs no client secret. Anyone else (a publishable
    key, or no key at all on the hosted checkout page) must present the payment's client
    secret; a key of another merchant or mode finds nothing. Every refusal is PaymentNotFound,
    so a guess learns nothing about which ids exist.
    """
    payment = _load(session, payment_id, for_update=for_update)
    not_found = PaymentNotFound(f"no such payment: {payment_id!r}")
    if payment is None:
        raise not_found
    if principal is not None:
        if not _owned(payment, principal):
            raise not_found
        if principal.kind == "secret":
            return payment
    if not client_secret or not hmac.compare_digest(
        client_secret.encode(), payment.client_secret.encode()
    ):
        raise not_found
    return payment


# A declined payment may be confirmed again with another card (a new attempt), as a customer
# on the checkout page expects; nothing was charged, so nothing can be charged twice.
CONFIRMABLE_STATUSES = ("requires_payment_method", "failed")


def check_confirmable(payment: Payment) -> None:
    """PaymentStateInvalid unless the payment waits for a card or its last attempt failed."""
    if payment.status not in CONFIRMABLE_STATUSES:
        raise PaymentStateInvalid(
            f"a payment in status {payment.status!r} cannot be confirmed",
            metadata={"status": payment.status},
        )


def confirm_options(
    session: Session,
    *,
    payment: Payment,
    saved_id: str,
    setup_future_usage: str,
    by_client_secret: bool = False,
) -> tuple[Customer | None, SavedPaymentMethod | None]:
    """A confirm's (customer to save the card for, saved payment method that pays).

    Both belong to the payment's customer (the one it was created for): a saved method must be
    attached to it, and a card is saved for it when the confirm or the create asked for
    `setup_future_usage`. A payment without a customer can do neither. A caller with the
    client secret alone (the hosted checkout) may not ask for a `setup_future_usage` the
    merchant did not set at create: saving a card for a merchant's customer is the merchant's
    decision; and it finds no saved method but the payment's customer's.
    """
    if by_client_secret and setup_future_usage and setup_future_usage != payment.setup_future_usage:
        raise InvalidArgument.field(
            "setup_future_usage",
            "can be set only by the merchant, when it creates the payment"
            + (
                f" (this payment has {payment.setup_future_usage!r})"
                if payment.setup_future_usage
                else ""
            ),
        )
    usage = setup_future_usage or payment.setup_future_usage or ""
    if not (saved_id or usage):
        return None, None
    if payment.customer_id is None:
        field = SAVED_ID_FIELD if saved_id else "setup_future_usage"
        raise InvalidArgument.field(field, "needs a payment created for a customer")
    # The payment is the caller's (or its client secret's): its merchant and mode are the
    # tenancy of the customer and of the saved method.
    customer = customers.get_customer_or_raise(
        session, principal=payment, customer_id=payment.customer_id
    )
    if not saved_id:
        return customer, None
    saved = customers.saved_for_customer_or_raise(
        session,
        principal=payment,
        payment_method_id=saved_id,
        customer=customer,
        by_client_secret=by_client_secret,
    )
    return None, saved


def checkout_saved_cards(session: Session, *, payment: Payment) -> list[SavedPaymentMethod]:
    """The saved cards the hosted checkout offers: the payment's customer's unexpired ones,
    only while the payment waits for a card (none for a payment without a customer)."""
    if payment.customer_id is None or payment.status not in CONFIRMABLE_STATUSES:
        return []
    return customers.unexpired_cards(session, tenant=payment, customer_id=payment.customer_id)


def confirm_payment(
    session: Session,
    *,
    payment: Payment,
    card: AttachedCard,
    saved: SavedPaymentMethod | None = None,
    save_for: Customer | None = None,
) -> Payment:
    """Attaches a card to a payment waiting for one and starts processing it.

    `saved`: the saved payment method the card is; `save_for`: the customer to save a new card
    for (setup_future_usage).
    """
    check_confirmable(payment)
    if saved is not None:
        payment.payment_method_id = saved.id
    elif save_for is not None:
        payment.payment_method_id = save_payment_card(
            session, customer=save_for, card=card, payment_id=payment.id
        ).id
    else:
        payment.payment_method_id = None
    _start_processing(session, payment, card)
    session.flush()
    return payment


def capture_payment(
    session: Session, *, principal: Principal, payment_id: str, amount_to_capture: int | None
) -> Payment:
    """Captures an authorized payment (all when `amount_to_capture` is None); the worker settles it.

    0 is refused like any amount outside 1..AMOUNT_MAX, never read as "everything".
    """
    if amount_to_capture is not None:
        violations = amount_violations(amount_to_capture, "amount_to_capture")
        if violations:
            raise InvalidArgument("the capture is invalid", violations=violations)
    payment = get_payment_or_raise(
        session, principal=principal, payment_id=payment_id, for_update=True
    )
    if payment.status != "requires_capture":
        raise PaymentStateInvalid(
            f"a payment in status {payment.status!r} cannot be captured",
            metadata={"status": payment.status},
        )
    amount = payment.amount_capturable if amount_to_capture is None else amount_to_capture
    if amount > payment.amount_capturable:
        raise AmountTooLarge(
            f"at most {payment.amount_capturable} can be captured",
            violations=[
                FieldViolation("amount_to_capture", f"must be at most {payment.amount_capturable}")
            ],
        )
    payment.amount_to_capture = amount
    payment.status = "processing"
    outbox.drive_payment(session, payment)
    outbox.payment_event(session, payment, "payment.processing")
    return payment


def cancel_payment(
    session: Session,
    *,
    payment: Payment,
    cancellation_reason: str,
) -> Payment:
    """Cancels a payment that holds no captured money; an authorization is voided."""
    if payment.status not in ("requires_payment_method", "requires_action", "requires_capture"):
        raise PaymentStateInvalid(
            f"a payment in status {payment.status!r} cannot be canceled",
            metadata={"status": payment.status},
        )
    if payment.processor_charge_id is not None:
        outbox.add_job(
            session,
            func=outbox.VOID_PAYMENT,
            job_id=f"payment-{payment.id}-void",
            args=[payment.id],
        )
    payment.status = "canceled"
    payment.amount_capturable = 0
    payment.cancellation_reason = cancellation_reason
    outbox.payment_event(session, payment, "payment.canceled")
    return payment


def cancel_payment_for(
    session: Session, *, principal: Principal, payment_id: str, cancellation_reason: str
) -> Payment:
    """Cancels the caller's payment."""
    validate_choice(cancellation_reason, CANCELLATION_REASONS, "cancellation_reason")
    payment = get_payment_or_raise(
        session, principal=principal, payment_id=payment_id, for_update=True
    )
    return cancel_payment(session, payment=payment, cancellation_reason=cancellation_reason)


def list_payments(
    session: Session,
    *,
    principal: Principal | None,
    tokens: pages.PageTokens,
    page_size: int,
    page_token: str,
    status: str = "",
    merchant_id: str = "",
    payment_id: str = "",
    created: pages.CreatedRange = pages.ANY_TIME,
) -> tuple[list[Payment], str]:
    """A page of payments, newest first; scoped to the principal when there is one."""
    size = pages.page_size(page_size)
    scope: pages.Scope = {
        "merchant_id": principal.merchant_id if principal else merchant_id,
        "livemode": principal.livemode if principal else None,
        "status": status,
        "payment_id": payment_id,
        **created.scope(),
    }
    if status and status not in PAYMENT_STATUSES:
        raise InvalidArgument.field("status", "must be one of " + ", ".join(PAYMENT_STATUSES))
    query = select(Payment)
    if principal is not None:
        query = query.where(
            Payment.merchant_id == principal.merchant_id, Payment.livemode == principal.livemode
        )
    elif merchant_id:
        query = query.where(Payment.merchant_id == merchant_id)
    if status:
        query = query.where(Payment.status == status)
    if payment_id:
        query = query.where(Payment.id == payment_id)
    query = query.where(*created.where(Payment.create_time))
    position = tokens.open_after(page_token, list_name="payments", scope=scope)
    if position is not None:
        query = query.where(tuple_(Payment.create_time, Payment.id) < tuple_(*position))
    rows = list(
        session.scalars(
            query.order_by(Payment.create_time.desc(), Payment.id.desc()).limit(size + 1)
        )
    )
    next_token = ""
    if len(rows) > size:
        rows = rows[:size]
        next_token = tokens.seal_after(
            rows[-1].create_time, rows[-1].id, list_name="payments", scope=scope
        )
    return rows, next_token
