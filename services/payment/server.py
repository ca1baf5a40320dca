"""The payment service's gRPC servicers: proto <-> domain, idempotency, nothing more."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, TypeVar

import grpc
from google.protobuf.message import Message
from paymesh.ledger.v1 import ledger_internal_pb2_grpc
from paymesh.payment.v1 import payment_internal_pb2_grpc, payment_pb2, payment_pb2_grpc
from psycopg import AsyncConnection
from sqlalchemy.orm import Session, sessionmaker

from services.common import idempotency, logs, pages
from services.common.auth import AuthPolicy, Principal, current_principal, optional_principal
from services.common.clients import sync_channel
from services.common.db import LoopPool, make_engine, make_sessionmaker, transaction
from services.common.errors import Unavailable
from services.common.server import ServiceSpec
from services.common.service_main import run_service
from services.common.settings import Settings
from services.payment import customers, disputes, ledger, payments, payouts, refunds
from services.payment.internal import PaymentInternalServicer
from services.payment.metrics import pipeline_collector
from services.payment.models import KEYS
from services.payment.processor import Connector, SimulatedProcessor
from services.payment.validation import CardInput, PaymentInput, validate_card, validate_create
from services.payment.views import (
    checkout_to_proto,
    customer_to_proto,
    dispute_to_proto,
    payment_method_to_proto,
    payment_to_proto,
    payout_to_proto,
    refund_to_proto,
)

Context = grpc.aio.ServicerContext[Any, Any]
M = TypeVar("M", bound=Message)


def card_from(method: payment_pb2.PaymentMethod) -> CardInput | None:
    """The card of a request's payment method, if one was sent."""
    if not method.HasField("card"):
        return None
    card = method.card
    return CardInput(
        number=card.number.replace(" ", ""),
        exp_month=card.exp_month,
        exp_year=card.exp_year,
        cvc=card.cvc,
    )


def _parse_payment(data: bytes) -> payment_pb2.Payment:
    return payment_pb2.Payment.FromString(data)


def _parse_refund(data: bytes) -> payment_pb2.Refund:
    return payment_pb2.Refund.FromString(data)


def _parse_dispute(data: bytes) -> payment_pb2.Dispute:
    return payment_pb2.Dispute.FromString(data)


def _parse_customer(data: bytes) -> payment_pb2.Customer:
    return payment_pb2.Customer.FromString(data)


def _parse_deleted_customer(data: bytes) -> payment_pb2.DeleteCustomerResponse:
    return payment_pb2.DeleteCustomerResponse.FromString(data)


def _parse_payout(data: bytes) -> payment_pb2.Payout:
    return payment_pb2.Payout.FromString(data)


def _parse_payout_settings(data: bytes) -> payment_pb2.PayoutSettings:
    return payment_pb2.PayoutSettings.FromString(data)


def _parse_payment_method(data: bytes) -> payment_pb2.SavedPaymentMethod:
    return payment_pb2.SavedPaymentMethod.FromString(data)


def _optional(request: Message, field: str) -> str | None:
    """A field with presence: its value when sent, None when not."""
    return getattr(request, field) if request.HasField(field) else None


class PaymentServicer(payment_pb2_grpc.PaymentServiceServicer):
    """Merchant-facing payment methods."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        db: LoopPool,
        settings: Settings,
        processor: Connector,
    ) -> None:
        self._sessions = sessions
        self._db = db
        self._settings = settings
        self._processor = processor
        self._fingerprint_key = settings.require_secret("card_fingerprint_key")
        self._tokens = pages.PageTokens(settings.require_secret("page_token_key"))
        self._idempotent = idempotency.Runner(
            sessions, settings, KEYS, secret=settings.require_secret("card_fingerprint_key")
        )
        self._ledger = ledger_internal_pb2_grpc.LedgerInternalServiceStub(
            sync_channel(settings.target("ledger"))
        )

    def _view(self, payment: Any) -> payment_pb2.Payment:
        return payment_to_proto(payment, base_url=self._settings.public_url(), with_secret=True)

    def _attach(self, session: Session, card: CardInput) -> payments.AttachedCard:
        return payments.attach_card(
            card,
            self._processor.tokenize(card, session=session),
            fingerprint_key=self._fingerprint_key,
        )

    async def _create(
        self, principal: Principal, key: str | None, request: payment_pb2.CreatePaymentRequest
    ) -> tuple[payment_pb2.Payment, bool]:
        card = card_from(request.payment_method) if request.HasField("payment_method") else None
        saved_id = request.payment_method.id
        data = validate_create(
            amount=request.amount,
            currency=request.currency,
            capture_method=request.capture_method,
            description=request.description,
            metadata=dict(request.metadata),
            return_url=request.return_url,
            card=card,
        )
        customers.validate_payment_options(
            customer_id=request.customer,
            setup_future_usage=request.setup_future_usage,
            off_session=request.off_session,
            has_card=card is not None,
            saved_id=saved_id,
        )
        if request.HasField("payment_method") and card is None and not saved_id:
            validate_card(None)
        if request.customer:
            # A payment for a customer reads the customer (and the saved method): not the
            # one-INSERT path below, which a payment without a customer keeps.
            return await asyncio.to_thread(self._create_for_customer, principal, key, request, data)

        async def work(connection: AsyncConnection[Any]) -> payment_pb2.Payment:
            attached = None
            if data.card is not None:
                attached = payments.attach_card(
                    data.card,
                    await self._processor.tokenize_async(data.card, connection=connection),
                    fingerprint_key=self._fingerprint_key,
                )
            payment = await payments.create_payment(
                connection, principal=principal, data=data, card=attached
            )
            logs.bind(payment_id=payment.id)
            return self._view(payment)

        return await self._idempotent.run_async(
            self._db,
            owner=principal.merchant_id,
            livemode=principal.livemode,
            operation="create_payment",
            key=key,
            request=request,
            work=work,
            parse=_parse_payment,
        )

    def _create_for_customer(
        self,
        principal: Principal,
        key: str | None,
        request: payment_pb2.CreatePaymentRequest,
        data: PaymentInput,
    ) -> tuple[payment_pb2.Payment, bool]:
        def work(session: Session) -> payment_pb2.Payment:
            customer = customers.get_customer_or_raise(
                session, principal=principal, customer_id=request.customer
            )
            saved = None
            attached = None
            if request.payment_method.id:
                saved = customers.saved_for_customer_or_raise(
                    session,
                    principal=principal,
                    payment_method_id=request.payment_method.id,
                    customer=customer,
                )
                attached = payments.saved_card(
                    saved, self._processor.reuse(saved.processor_token, session=session)
                )
            elif data.card is not None:
                attached = self._attach(session, data.card)
            payment = payments.create_customer_payment(
                session,
                principal=principal,
                data=data,
                customer=customer,
                card=attached,
                saved=saved,
                setup_future_usage=request.setup_future_usage,
                off_session=request.off_session,
            )
            logs.bind(payment_id=payment.id)
            return self._view(payment)

        return self._keyed(
            principal, "create_payment", key, request, work=work, parse=_parse_payment
        )

    def _list(
        self, principal: Principal, request: payment_pb2.ListPaymentsRequest
    ) -> payment_pb2.ListPaymentsResponse:
        with transaction(self._sessions) as session:
            rows, token = payments.list_payments(
                session,
                principal=principal,
                tokens=self._tokens,
                page_size=request.page_size,
                page_token=request.page_token,
                status=request.status,
                created=pages.CreatedRange.of(request),
            )
            return payment_pb2.ListPaymentsResponse(
                payments=[self._view(row) for row in rows], **pages.next_page(token)
            )

    def _checkout(
        self, principal: Principal | None, request: payment_pb2.GetCheckoutRequest
    ) -> payment_pb2.Checkout:
        with transaction(self._sessions) as session:
            payment = payments.get_payment_with_secret_or_raise(
                session,
                principal=principal,
                payment_id=request.payment_id,
                client_secret=request.client_secret,
            )
            return checkout_to_proto(
                payment, saved=payments.checkout_saved_cards(session, payment=payment)
            )

    def _keyed_payment_write(
        self,
        owner: tuple[str, bool],
        operation: str,
        key: str | None,
        request: Message,
        work: Callable[[Session], payment_pb2.Payment],
    ) -> tuple[payment_pb2.Payment, bool]:
        """A write of a payment under its Idempotency-Key, if any, for `owner` (merchant, mode)."""
        return self._idempotent.run(
            owner=owner[0],
            livemode=owner[1],
            operation=operation,
            key=key,
            request=request,
            work=work,
            parse=_parse_payment,
        )

    def _confirm(
        self,
        principal: Principal | None,
        key: str | None,
        request: payment_pb2.ConfirmPaymentRequest,
    ) -> tuple[payment_pb2.Payment, bool]:
        saved_id = request.payment_method.id
        card = card_from(request.payment_method) if request.HasField("payment_method") else None
        if not saved_id:
            card = validate_card(card)
        customers.validate_payment_options(
            # Checked against the payment's customer below, once the payment is read.
            customer_id="cus",
            setup_future_usage=request.setup_future_usage,
            off_session=False,
            has_card=card is not None,
            saved_id=saved_id,
        )

        def work(session: Session) -> payment_pb2.Payment:
            payment = payments.get_payment_with_secret_or_raise(
                session,
                principal=principal,
                payment_id=request.id,
                client_secret=request.client_secret,
                for_update=True,
            )
            payments.check_confirmable(payment)
            customer, saved = payments.confirm_options(
                session,
                payment=payment,
                saved_id=saved_id,
                setup_future_usage=request.setup_future_usage,
                by_client_secret=principal is None or principal.kind not in ("secret", "session"),
            )
            if saved is not None:
                attached = payments.saved_card(
                    saved, self._processor.reuse(saved.processor_token, session=session)
                )
            else:
                assert card is not None
                attached = self._attach(session, card)
            confirmed = payments.confirm_payment(
                session,
                payment=payment,
                card=attached,
                saved=saved,
                save_for=customer if saved is None else None,
            )
            return self._view(confirmed)

        # The hosted checkout confirms with the client secret alone: its keys live per payment.
        owner = (
            (principal.merchant_id, principal.livemode) if principal else (request.id[:40], False)
        )
        return self._keyed_payment_write(owner, "confirm_payment", key, request, work)

    def _authenticate(
        self,
        principal: Principal | None,
        key: str | None,
        request: payment_pb2.AuthenticatePaymentRequest,
    ) -> tuple[payment_pb2.Payment, bool]:
        def work(session: Session) -> payment_pb2.Payment:
            payment = payments.get_payment_with_secret_or_raise(
                session,
                principal=principal,
                payment_id=request.id,
                client_secret=request.client_secret,
                for_update=True,
            )
            return self._view(
                payments.authenticate_payment(session, payment=payment, result=request.result)
            )

        # As a confirm: the challenge page has the client secret alone.
        owner = (
            (principal.merchant_id, principal.livemode) if principal else (request.id[:40], False)
        )
        return self._keyed_payment_write(owner, "authenticate_payment", key, request, work)

    def _capture(
        self, principal: Principal, key: str | None, request: payment_pb2.CapturePaymentRequest
    ) -> tuple[payment_pb2.Payment, bool]:
        def work(session: Session) -> payment_pb2.Payment:
            return self._view(
                payments.capture_payment(
                    session,
                    principal=principal,
                    payment_id=request.id,
                    amount_to_capture=(
                        request.amount_to_capture if request.HasField("amount_to_capture") else None
                    ),
                )
            )

        owner = (principal.merchant_id, principal.livemode)
        return self._keyed_payment_write(owner, "capture_payment", key, request, work)

    def _cancel(
        self, principal: Principal, key: str | None, request: payment_pb2.CancelPaymentRequest
    ) -> tuple[payment_pb2.Payment, bool]:
        def work(session: Session) -> payment_pb2.Payment:
            return self._view(
                payments.cancel_payment_for(
                    session,
                    principal=principal,
                    payment_id=request.id,
                    cancellation_reason=request.cancellation_reason,
                )
            )

        owner = (principal.merchant_id, principal.livemode)
        return self._keyed_payment_write(owner, "cancel_payment", key, request, work)

    def _create_refund(
        self, principal: Principal, key: str | None, request: payment_pb2.CreateRefundRequest
    ) -> tuple[payment_pb2.Refund, bool]:
        amount = request.amount if request.HasField("amount") else None
        refunds.validate_refund_input(
            payment_id=request.payment_id, amount=amount, reason=request.reason
        )

        def work(session: Session) -> payment_pb2.Refund:
            return refund_to_proto(
                refunds.create_refund_for(
                    session,
                    principal=principal,
                    payment_id=request.payment_id,
                    amount=amount,
                    reason=request.reason,
                )
            )

        return self._idempotent.run(
            owner=principal.merchant_id,
            livemode=principal.livemode,
            operation="create_refund",
            key=key,
            request=request,
            work=work,
            parse=_parse_refund,
        )

    def _get_refund(self, principal: Principal, refund_id: str) -> payment_pb2.Refund:
        with transaction(self._sessions) as session:
            return refund_to_proto(
                refunds.get_refund_or_raise(session, principal=principal, refund_id=refund_id)
            )

    def _list_refunds(
        self, principal: Principal, request: payment_pb2.ListRefundsRequest
    ) -> payment_pb2.ListRefundsResponse:
        with transaction(self._sessions) as session:
            rows, token = refunds.list_refunds(
                session,
                principal=principal,
                tokens=self._tokens,
                payment_id=request.payment_id,
                page_size=request.page_size,
                page_token=request.page_token,
                created=pages.CreatedRange.of(request),
            )
            return payment_pb2.ListRefundsResponse(
                refunds=[refund_to_proto(row) for row in rows], **pages.next_page(token)
            )

    def _get_dispute(self, principal: Principal, dispute_id: str) -> payment_pb2.Dispute:
        with transaction(self._sessions) as session:
            return dispute_to_proto(
                disputes.get_dispute_or_raise(session, principal=principal, dispute_id=dispute_id)
            )

    def _list_disputes(
        self, principal: Principal, request: payment_pb2.ListDisputesRequest
    ) -> payment_pb2.ListDisputesResponse:
        with transaction(self._sessions) as session:
            rows, token = disputes.list_disputes(
                session,
                principal=principal,
                tokens=self._tokens,
                payment_id=request.payment_id,
                page_size=request.page_size,
                page_token=request.page_token,
                created=pages.CreatedRange.of(request),
            )
            return payment_pb2.ListDisputesResponse(
                disputes=[dispute_to_proto(row) for row in rows], **pages.next_page(token)
            )

    def _update_dispute(
        self, principal: Principal, key: str | None, request: payment_pb2.UpdateDisputeRequest
    ) -> tuple[payment_pb2.Dispute, bool]:
        evidence = {field.name: value for field, value in request.evidence.ListFields() if value}
        disputes.validate_evidence(evidence)

        def work(session: Session) -> payment_pb2.Dispute:
            return dispute_to_proto(
                disputes.update_dispute(
                    session,
                    principal=principal,
                    dispute_id=request.id,
                    evidence=evidence,
                    submit=request.submit,
                )
            )

        return self._idempotent.run(
            owner=principal.merchant_id,
            livemode=principal.livemode,
            operation="update_dispute",
            key=key,
            request=request,
            work=work,
            parse=_parse_dispute,
        )

    def _close_dispute(
        self, principal: Principal, key: str | None, request: payment_pb2.CloseDisputeRequest
    ) -> tuple[payment_pb2.Dispute, bool]:
        def work(session: Session) -> payment_pb2.Dispute:
            return dispute_to_proto(
                disputes.close_dispute(session, principal=principal, dispute_id=request.id)
            )

        return self._idempotent.run(
            owner=principal.merchant_id,
            livemode=principal.livemode,
            operation="close_dispute",
            key=key,
            request=request,
            work=work,
            parse=_parse_dispute,
        )

    def _keyed(
        self,
        principal: Principal,
        operation: str,
        key: str | None,
        request: Message,
        *,
        work: Callable[[Session], M],
        parse: Callable[[bytes], M],
    ) -> tuple[M, bool]:
        """A merchant's write under its Idempotency-Key, if any."""
        return self._idempotent.run(
            owner=principal.merchant_id,
            livemode=principal.livemode,
            operation=operation,
            key=key,
            request=request,
            work=work,
            parse=parse,
        )

    def _create_customer(
        self, principal: Principal, key: str | None, request: payment_pb2.CreateCustomerRequest
    ) -> tuple[payment_pb2.Customer, bool]:
        customers.validate_customer(
            email=request.email,
            name=request.name,
            description=request.description,
            metadata=dict(request.metadata),
        )

        def work(session: Session) -> payment_pb2.Customer:
            return customer_to_proto(
                customers.create_customer(
                    session,
                    principal=principal,
                    email=request.email,
                    name=request.name,
                    description=request.description,
                    metadata=dict(request.metadata),
                )
            )

        return self._keyed(
            principal, "create_customer", key, request, work=work, parse=_parse_customer
        )

    def _get_customer(self, principal: Principal, customer_id: str) -> payment_pb2.Customer:
        with transaction(self._sessions) as session:
            return customer_to_proto(
                customers.get_customer_or_raise(
                    session, principal=principal, customer_id=customer_id
                )
            )

    def _list_customers(
        self, principal: Principal, request: payment_pb2.ListCustomersRequest
    ) -> payment_pb2.ListCustomersResponse:
        with transaction(self._sessions) as session:
            rows, token = customers.list_customers(
                session,
                principal=principal,
                tokens=self._tokens,
                page_size=request.page_size,
                page_token=request.page_token,
                email=request.email,
                created=pages.CreatedRange.of(request),
            )
            return payment_pb2.ListCustomersResponse(
                customers=[customer_to_proto(row) for row in rows], **pages.next_page(token)
            )

    def _update_customer(
        self, principal: Principal, key: str | None, request: payment_pb2.UpdateCustomerRequest
    ) -> tuple[payment_pb2.Customer, bool]:
        def work(session: Session) -> payment_pb2.Customer:
            return customer_to_proto(
                customers.update_customer(
                    session,
                    principal=principal,
                    customer_id=request.id,
                    email=_optional(request, "email"),
                    name=_optional(request, "name"),
                    description=_optional(request, "description"),
                    metadata=dict(request.metadata),
                )
            )

        return self._keyed(
            principal, "update_customer", key, request, work=work, parse=_parse_customer
        )

    def _delete_customer(
        self, principal: Principal, key: str | None, request: payment_pb2.DeleteCustomerRequest
    ) -> tuple[payment_pb2.DeleteCustomerResponse, bool]:
        def work(session: Session) -> payment_pb2.DeleteCustomerResponse:
            customer = customers.delete_customer(
                session, principal=principal, customer_id=request.id
            )
            return payment_pb2.DeleteCustomerResponse(id=customer.id, deleted=True)

        return self._keyed(
            principal, "delete_customer", key, request, work=work, parse=_parse_deleted_customer
        )

    def _get_payment_method(
        self, principal: Principal, payment_method_id: str
    ) -> payment_pb2.SavedPaymentMethod:
        with transaction(self._sessions) as session:
            return payment_method_to_proto(
                customers.get_payment_method_or_raise(
                    session, principal=principal, payment_method_id=payment_method_id
                )
            )

    def _list_payment_methods(
        self, principal: Principal, request: payment_pb2.ListSavedPaymentMethodsRequest
    ) -> payment_pb2.ListSavedPaymentMethodsResponse:
        with transaction(self._sessions) as session:
            rows, token = customers.list_payment_methods(
                session,
                principal=principal,
                tokens=self._tokens,
                customer_id=request.customer,
                page_size=request.page_size,
                page_token=request.page_token,
            )
            return payment_pb2.ListSavedPaymentMethodsResponse(
                payment_methods=[payment_method_to_proto(row) for row in rows],
                **pages.next_page(token),
            )

    def _attach_payment_method(
        self,
        principal: Principal,
        key: str | None,
        request: payment_pb2.AttachSavedPaymentMethodRequest,
    ) -> tuple[payment_pb2.SavedPaymentMethod, bool]:
        def work(session: Session) -> payment_pb2.SavedPaymentMethod:
            return payment_method_to_proto(
                customers.attach_payment_method(
                    session,
                    principal=principal,
                    payment_method_id=request.id,
                    customer_id=request.customer,
                )
            )

        return self._keyed(
            principal, "attach_payment_method", key, request, work=work, parse=_parse_payment_method
        )

    def _detach_payment_method(
        self,
        principal: Principal,
        key: str | None,
        request: payment_pb2.DetachSavedPaymentMethodRequest,
    ) -> tuple[payment_pb2.SavedPaymentMethod, bool]:
        def work(session: Session) -> payment_pb2.SavedPaymentMethod:
            return payment_method_to_proto(
                customers.detach_payment_method(
                    session, principal=principal, payment_method_id=request.id
                )
            )

        return self._keyed(
            principal, "detach_payment_method", key, request, work=work, parse=_parse_payment_method
        )

    async def CreatePayment(
        self, request: payment_pb2.CreatePaymentRequest, context: Context
    ) -> payment_pb2.Payment:
        """Creates a payment: one transaction on the event loop."""
        result = await self._create(current_principal(), idempotency.key_of(context), request)
        return idempotency.answer(result)

    async def GetPayment(
        self, request: payment_pb2.GetPaymentRequest, context: Context
    ) -> payment_pb2.Payment:
        """Returns one payment: one statement on the event loop."""
        logs.bind(payment_id=request.id)
        async with self._db.connection() as connection:
            row = await payments.read_payment_or_raise(
                connection, principal=current_principal(), payment_id=request.id
            )
        return self._view(row)

    async def ListPayments(
        self, request: payment_pb2.ListPaymentsRequest, context: Context
    ) -> payment_pb2.ListPaymentsResponse:
        """Lists payments, newest first."""
        return await asyncio.to_thread(self._list, current_principal(), request)

    async def GetCheckout(
        self, request: payment_pb2.GetCheckoutRequest, context: Context
    ) -> payment_pb2.Checkout:
        """The hosted checkout page's view of a payment."""
        return await asyncio.to_thread(self._checkout, optional_principal(), request)

    async def ConfirmPayment(
        self, request: payment_pb2.ConfirmPaymentRequest, context: Context
    ) -> payment_pb2.Payment:
        """Attaches a card and starts processing; idempotent with a key."""
        logs.bind(payment_id=request.id)
        result = await asyncio.to_thread(
            self._confirm, optional_principal(), idempotency.key_of(context), request
        )
        return idempotency.answer(result)

    async def AuthenticatePayment(
        self, request: payment_pb2.AuthenticatePaymentRequest, context: Context
    ) -> payment_pb2.Payment:
        """Records the customer's 3-D Secure result; idempotent with a key."""
        result = await asyncio.to_thread(
            self._authenticate, optional_principal(), idempotency.key_of(context), request
        )
        return idempotency.answer(result)

    async def CapturePayment(
        self, request: payment_pb2.CapturePaymentRequest, context: Context
    ) -> payment_pb2.Payment:
        """Captures an authorized payment; idempotent with a key."""
        logs.bind(payment_id=request.id)
        result = await asyncio.to_thread(
            self._capture, current_principal(), idempotency.key_of(context), request
        )
        return idempotency.answer(result)

    async def CancelPayment(
        self, request: payment_pb2.CancelPaymentRequest, context: Context
    ) -> payment_pb2.Payment:
        """Cancels a payment; idempotent with a key."""
        logs.bind(payment_id=request.id)
        result = await asyncio.to_thread(
            self._cancel, current_principal(), idempotency.key_of(context), request
        )
        return idempotency.answer(result)

    async def CreateRefund(
        self, request: payment_pb2.CreateRefundRequest, context: Context
    ) -> payment_pb2.Refund:
        """Refunds a payment."""
        result = await asyncio.to_thread(
            self._create_refund, current_principal(), idempotency.key_of(context), request
        )
        return idempotency.answer(result)

    async def GetRefund(
        self, request: payment_pb2.GetRefundRequest, context: Context
    ) -> payment_pb2.Refund:
        """Returns one refund."""
        return await asyncio.to_thread(self._get_refund, current_principal(), request.id)

    async def ListRefunds(
        self, request: payment_pb2.ListRefundsRequest, context: Context
    ) -> payment_pb2.ListRefundsResponse:
        """Lists refunds, newest first."""
        return await asyncio.to_thread(self._list_refunds, current_principal(), request)

    async def GetDispute(
        self, request: payment_pb2.GetDisputeRequest, context: Context
    ) -> payment_pb2.Dispute:
        """Returns one dispute."""
        return await asyncio.to_thread(self._get_dispute, current_principal(), request.id)

    async def ListDisputes(
        self, request: payment_pb2.ListDisputesRequest, context: Context
    ) -> payment_pb2.ListDisputesResponse:
        """Lists disputes, newest first."""
        return await asyncio.to_thread(self._list_disputes, current_principal(), request)

    async def UpdateDispute(
        self, request: payment_pb2.UpdateDisputeRequest, context: Context
    ) -> payment_pb2.Dispute:
        """Sets (and submits) a dispute's evidence; idempotent with a key."""
        result = await asyncio.to_thread(
            self._update_dispute, current_principal(), idempotency.key_of(context), request
        )
        return idempotency.answer(result)

    async def CloseDispute(
        self, request: payment_pb2.CloseDisputeRequest, context: Context
    ) -> payment_pb2.Dispute:
        """Accepts a dispute; idempotent with a key."""
        result = await asyncio.to_thread(
            self._close_dispute, current_principal(), idempotency.key_of(context), request
        )
        return idempotency.answer(result)

    async def CreateCustomer(
        self, request: payment_pb2.CreateCustomerRequest, context: Context
    ) -> payment_pb2.Customer:
        """Creates a customer; idempotent with a key."""
        result = await asyncio.to_thread(
            self._create_customer, current_principal(), idempotency.key_of(context), request
        )
        return idempotency.answer(result)

    async def GetCustomer(
        self, request: payment_pb2.GetCustomerRequest, context: Context
    ) -> payment_pb2.Customer:
        """Returns one customer."""
        return await asyncio.to_thread(self._get_customer, current_principal(), request.id)

    async def ListCustomers(
        self, request: payment_pb2.ListCustomersRequest, context: Context
    ) -> payment_pb2.ListCustomersResponse:
        """Lists customers, newest first."""
        return await asyncio.to_thread(self._list_customers, current_principal(), request)

    async def UpdateCustomer(
        self, request: payment_pb2.UpdateCustomerRequest, context: Context
    ) -> payment_pb2.Customer:
        """Changes a customer's fields sent; idempotent with a key."""
        result = await asyncio.to_thread(
            self._update_customer, current_principal(), idempotency.key_of(context), request
        )
        return idempotency.answer(result)

    async def DeleteCustomer(
        self, request: payment_pb2.DeleteCustomerRequest, context: Context
    ) -> payment_pb2.DeleteCustomerResponse:
        """Deletes a customer and detaches its saved payment methods; idempotent with a key."""
        result = await asyncio.to_thread(
            self._delete_customer, current_principal(), idempotency.key_of(context), request
        )
        return idempotency.answer(result)

    async def GetSavedPaymentMethod(
        self, request: payment_pb2.GetSavedPaymentMethodRequest, context: Context
    ) -> payment_pb2.SavedPaymentMethod:
        """Returns one saved payment method."""
        return await asyncio.to_thread(self._get_payment_method, current_principal(), request.id)

    async def ListSavedPaymentMethods(
        self, request: payment_pb2.ListSavedPaymentMethodsRequest, context: Context
    ) -> payment_pb2.ListSavedPaymentMethodsResponse:
        """Lists a customer's saved payment methods, newest first."""
        return await asyncio.to_thread(self._list_payment_methods, current_principal(), request)

    async def AttachSavedPaymentMethod(
        self, request: payment_pb2.AttachSavedPaymentMethodRequest, context: Context
    ) -> payment_pb2.SavedPaymentMethod:
        """Attaches a saved payment method to a customer; idempotent with a key."""
        result = await asyncio.to_thread(
            self._attach_payment_method, current_principal(), idempotency.key_of(context), request
        )
        return idempotency.answer(result)

    async def DetachSavedPaymentMethod(
        self, request: payment_pb2.DetachSavedPaymentMethodRequest, context: Context
    ) -> payment_pb2.SavedPaymentMethod:
        """Detaches a saved payment method from its customer; idempotent with a key."""
        result = await asyncio.to_thread(
            self._detach_payment_method, current_principal(), idempotency.key_of(context), request
        )
        return idempotency.answer(result)

    def _available(self, principal: Principal, currency: str) -> int:
        """The caller's available balance in a currency, from the ledger."""
        try:
            balances = ledger.merchant_balances(
                self._ledger,
                merchant_id=principal.merchant_id,
                livemode=principal.livemode,
                timeout_s=self._settings.grpc_timeout_s,
            )
        except grpc.RpcError as error:
            raise Unavailable("the ledger could not be reached; try again") from error
        return balances.get(currency, (0, 0))[0]

    def _create_payout(
        self, principal: Principal, key: str | None, request: payment_pb2.CreatePayoutRequest
    ) -> tuple[payment_pb2.Payout, bool]:
        currency = payouts.validate_payout_input(
            amount=request.amount,
            currency=request.currency,
            description=request.description,
            metadata=dict(request.metadata),
        )

        def work(session: Session) -> payment_pb2.Payout:
            # The payout account's row lock first, then the ledger's figure: a merchant's
            # payouts are decided one at a time.
            payouts.get_account(
                session,
                merchant_id=principal.merchant_id,
                livemode=principal.livemode,
                for_update=True,
            )
            return payout_to_proto(
                payouts.create_payout(
                    session,
                    merchant_id=principal.merchant_id,
                    livemode=principal.livemode,
                    available=self._available(principal, currency),
                    amount=request.amount,
                    currency=currency,
                    method="manual",
                    description=request.description,
                    metadata=dict(request.metadata),
                )
            )

        return self._keyed(principal, "create_payout", key, request, work=work, parse=_parse_payout)

    def _get_payout(self, principal: Principal, payout_id: str) -> payment_pb2.Payout:
        with transaction(self._sessions) as session:
            return payout_to_proto(
                payouts.get_payout_or_raise(session, principal=principal, payout_id=payout_id)
            )

    def _list_payouts(
        self, principal: Principal, request: payment_pb2.ListPayoutsRequest
    ) -> payment_pb2.ListPayoutsResponse:
        with transaction(self._sessions) as session:
            rows, token = payouts.list_payouts(
                session,
                principal=principal,
                tokens=self._tokens,
                page_size=request.page_size,
                page_token=request.page_token,
                status=request.status,
                created=pages.CreatedRange.of(request),
            )
            return payment_pb2.ListPayoutsResponse(
                payouts=[payout_to_proto(row) for row in rows], **pages.next_page(token)
            )

    def _cancel_payout(
        self, principal: Principal, key: str | None, request: payment_pb2.CancelPayoutRequest
    ) -> tuple[payment_pb2.Payout, bool]:
        def work(session: Session) -> payment_pb2.Payout:
            return payout_to_proto(
                payouts.cancel_payout(session, principal=principal, payout_id=request.id)
            )

        return self._keyed(principal, "cancel_payout", key, request, work=work, parse=_parse_payout)

    def _payout_settings_view(
        self, principal: Principal, account: Any
    ) -> payment_pb2.PayoutSettings:
        return payment_pb2.PayoutSettings(
            bank_account_last4=account.bank_account_number[-4:] if account else "",
            schedule=account.schedule if account else "manual",
            settlement_delay_s=payouts.settlement_delay_s(
                self._settings, account, livemode=principal.livemode
            ),
            livemode=principal.livemode,
        )

    def _get_payout_settings(self, principal: Principal) -> payment_pb2.PayoutSettings:
        with transaction(self._sessions) as session:
            account = payouts.get_account(
                session, merchant_id=principal.merchant_id, livemode=principal.livemode
            )
            return self._payout_settings_view(principal, account)

    def _update_payout_settings(
        self,
        principal: Principal,
        key: str | None,
        request: payment_pb2.UpdatePayoutSettingsRequest,
    ) -> tuple[payment_pb2.PayoutSettings, bool]:
        delay_s = request.settlement_delay_s if request.HasField("settlement_delay_s") else None

        def work(session: Session) -> payment_pb2.PayoutSettings:
            account = payouts.update_account(
                session,
                principal=principal,
                bank_account_number=_optional(request, "bank_account_number"),
                schedule=_optional(request, "schedule"),
                settlement_delay_s=delay_s,
            )
            return self._payout_settings_view(principal, account)

        return self._keyed(
            principal,
            "update_payout_settings",
            key,
            request,
            work=work,
            parse=_parse_payout_settings,
        )

    async def CreatePayout(
        self, request: payment_pb2.CreatePayoutRequest, context: Context
    ) -> payment_pb2.Payout:
        """Creates a payout of available funds; idempotent with a key."""
        result = await asyncio.to_thread(
            self._create_payout, current_principal(), idempotency.key_of(context), request
        )
        return idempotency.answer(result)

    async def GetPayout(
        self, request: payment_pb2.GetPayoutRequest, context: Context
    ) -> payment_pb2.Payout:
        """Returns one payout."""
        return await asyncio.to_thread(self._get_payout, current_principal(), request.id)

    async def ListPayouts(
        self, request: payment_pb2.ListPayoutsRequest, context: Context
    ) -> payment_pb2.ListPayoutsResponse:
        """Lists payouts, newest first."""
        return await asyncio.to_thread(self._list_payouts, current_principal(), request)

    async def CancelPayout(
        self, request: payment_pb2.CancelPayoutRequest, context: Context
    ) -> payment_pb2.Payout:
        """Cancels a pending payout; idempotent with a key."""
        result = await asyncio.to_thread(
            self._cancel_payout, current_principal(), idempotency.key_of(context), request
        )
        return idempotency.answer(result)

    async def GetPayoutSettings(
        self, request: payment_pb2.GetPayoutSettingsRequest, context: Context
    ) -> payment_pb2.PayoutSettings:
        """Returns the caller's payout settings."""
        return await asyncio.to_thread(self._get_payout_settings, current_principal())

    async def UpdatePayoutSettings(
        self, request: payment_pb2.UpdatePayoutSettingsRequest, context: Context
    ) -> payment_pb2.PayoutSettings:
        """Sets the caller's bank account and payout schedule; idempotent with a key."""
        result = await asyncio.to_thread(
            self._update_payout_settings, current_principal(), idempotency.key_of(context), request
        )
        return idempotency.answer(result)


def build_spec(settings: Settings) -> ServiceSpec:
    """The payment service's servicers and their auth policies."""
    sessions = make_sessionmaker(
        make_engine(
            settings.require_database_url(),
            pool_size=settings.db_pool_size,
            application_name="paymesh-payment",
        )
    )
    processor = SimulatedProcessor(sessions, latency_ms=settings.processor_latency_ms)
    db = LoopPool(
        settings.require_database_url(),
        max_size=settings.db_pool_size,
        application_name="paymesh-payment-loop",
    )

    def register(server: grpc.aio.Server) -> None:
        payment_pb2_grpc.add_PaymentServiceServicer_to_server(
            PaymentServicer(sessions, db, settings, processor), server
        )
        payment_internal_pb2_grpc.add_PaymentInternalServiceServicer_to_server(
            PaymentInternalServicer(sessions, settings), server
        )

    return ServiceSpec(
        name="payment",
        register=register,
        service_names=[
            "paymesh.payment.v1.PaymentService",
            "paymesh.payment.v1.PaymentInternalService",
        ],
        policies={
            "paymesh.payment.v1.PaymentService": AuthPolicy.SECRET_KEY,
            "/paymesh.payment.v1.PaymentService/ConfirmPayment": AuthPolicy.CLIENT_SECRET,
            "/paymesh.payment.v1.PaymentService/AuthenticatePayment": AuthPolicy.CLIENT_SECRET,
            "/paymesh.payment.v1.PaymentService/GetCheckout": AuthPolicy.CLIENT_SECRET,
            "paymesh.payment.v1.PaymentInternalService": AuthPolicy.NONE,
        },
        on_stop=[db.close],
        collectors=[pipeline_collector(sessions, settings)],
    )


def main() -> None:
    """Runs the payment service until SIGTERM."""
    run_service("payment", build_spec, needs_api_keys=True)


if __name__ == "__main__":
    main()
