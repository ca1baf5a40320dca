"""The payment service's gRPC servicer: proto <-> domain, nothing more."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
from paymesh.payment.v1 import payment_pb2, payment_pb2_grpc
from sqlalchemy.orm import Session, sessionmaker

from services.common.auth import AuthPolicy, Principal, current_principal
from services.common.db import make_engine, make_sessionmaker, transaction
from services.common.server import ServiceSpec
from services.common.service_main import run_service
from services.common.settings import Settings
from services.payment import payments
from services.payment.models import Payment

Context = grpc.aio.ServicerContext[Any, Any]


def payment_to_proto(payment: Payment) -> payment_pb2.Payment:
    """The payment as the API shows it."""
    message = payment_pb2.Payment(
        id=payment.id,
        amount=payment.amount,
        currency=payment.currency,
        status=payment.status,
        capture_method=payment.capture_method,
        description=payment.description,
        metadata=payment.metadata_,
        livemode=payment.livemode,
        merchant_id=payment.merchant_id,
    )
    message.create_time.FromDatetime(payment.create_time)
    message.update_time.FromDatetime(payment.update_time)
    return message


class PaymentServicer(payment_pb2_grpc.PaymentServiceServicer):
    """Merchant-facing payment methods."""

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self._sessions = sessions

    def _create(
        self, principal: Principal, request: payment_pb2.CreatePaymentRequest
    ) -> payment_pb2.Payment:
        with transaction(self._sessions) as session:
            payment = payments.create_payment(
                session,
                principal=principal,
                amount=request.amount,
                currency=request.currency,
                description=request.description,
                metadata=dict(request.metadata),
            )
            session.flush()
            session.refresh(payment)
            return payment_to_proto(payment)

    def _get(self, principal: Principal, payment_id: str) -> payment_pb2.Payment:
        with transaction(self._sessions) as session:
            payment = payments.get_payment_or_raise(
                session, principal=principal, payment_id=payment_id
            )
            return payment_to_proto(payment)

    async def CreatePayment(
        self, request: payment_pb2.CreatePaymentRequest, context: Context
    ) -> payment_pb2.Payment:
        """Creates a payment."""
        return await asyncio.to_thread(self._create, current_principal(), request)

    async def GetPayment(
        self, request: payment_pb2.GetPaymentRequest, context: Context
    ) -> payment_pb2.Payment:
        """Returns one payment."""
        return await asyncio.to_thread(self._get, current_principal(), request.id)


def build_spec(settings: Settings) -> ServiceSpec:
    """The payment service's servicers and their auth policies."""
    sessions = make_sessionmaker(
        make_engine(
            settings.require_database_url(),
            pool_size=settings.db_pool_size,
            application_name="paymesh-payment",
        )
    )

    def register(server: grpc.aio.Server) -> None:
        payment_pb2_grpc.add_PaymentServiceServicer_to_server(
            PaymentServicer(sessions),  # type: ignore[abstract]  # the payments issue fills it in
            server,
        )

    return ServiceSpec(
        name="payment",
        register=register,
        service_names=["paymesh.payment.v1.PaymentService"],
        policies={
            "paymesh.payment.v1.PaymentService": AuthPolicy.SECRET_KEY,
            "/paymesh.payment.v1.PaymentService/ConfirmPayment": AuthPolicy.ANY_KEY,
        },
    )


def main() -> None:
    """Runs the payment service until SIGTERM."""
    run_service("payment", build_spec, needs_api_keys=True)


if __name__ == "__main__":
    main()
