"""The payment service's gRPC servicers: proto <-> domain, idempotency, nothing more."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, TypeVar

import grpc
from google.protobuf.message import Message
from paymesh.payment.v1 import payment_internal_pb2_grpc, payment_pb2, payment_pb2_grpc
from psycopg import AsyncConnection
from sqlalchemy.orm import Session, sessionmaker

from services.common import idempotency, logs, pages
from services.common.auth import AuthPolicy, Principal, current_principal, optional_principal
from services.common.db import LoopPool, make_engine, make_sessionmaker, transaction
from services.common.server import ServiceSpec
from services.common.service_main import run_service
from services.common.settings import Settings
from services.payment import payments, refunds
from services.payment.internal import PaymentInternalServicer
from services.payment.metrics import pipeline_collector
from services.payment.models import KEYS
from services.payment.processor import Connector, SimulatedProcessor
from services.payment.validation import CardInput, validate_card, validate_create
from services.payment.views import checkout_to_proto, payment_to_proto, refund_to_proto

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
        data = validate_create(
            amount=request.amount,
            currency=request.currency,
            capture_method=request.capture_method,
            description=request.description,
            metadata=dict(request.metadata),
            return_url=request.return_url,
            card=card,
        )
        if request.HasField("payment_method") and card is None:
            validate_card(None)

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
            return checkout_to_proto(payment)

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
        card = validate_card(
            card_from(request.payment_method) if request.HasField("payment_method") else None
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
            confirmed = payments.confirm_payment(
                session, payment=payment, card=self._attach(session, card)
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
