"""PaymentInternalService: the payment service as other paymesh services (admin, ledger) see it.

Not routed by the edge and not scoped to a merchant: its callers are trusted services.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import grpc
from google.protobuf.timestamp_pb2 import Timestamp
from paymesh.payment.v1 import payment_internal_pb2, payment_internal_pb2_grpc, payment_pb2
from sqlalchemy.orm import Session, sessionmaker

from services.common import idempotency, pages
from services.common.db import transaction
from services.common.errors import InvalidArgument
from services.common.settings import Settings
from services.payment import disputes, payments, payouts, refunds, reports
from services.payment.metrics import read_backlog
from services.payment.models import KEYS
from services.payment.views import (
    dispute_to_proto,
    payment_to_proto,
    payout_to_proto,
    refund_to_proto,
)

Context = grpc.aio.ServicerContext[Any, Any]


def _time(message: Any, field: str) -> datetime | None:
    if not message.HasField(field):
        return None
    stamp: Timestamp = getattr(message, field)
    return stamp.ToDatetime(tzinfo=UTC)


def _stamp(moment: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(moment)
    return stamp


class PaymentInternalServicer(payment_internal_pb2_grpc.PaymentInternalServiceServicer):
    """Cross-merchant reads and operator refunds."""

    def __init__(self, sessions: sessionmaker[Session], settings: Settings) -> None:
        self._sessions = sessions
        self._settings = settings
        self._idempotent = idempotency.Runner(
            sessions, settings, KEYS, secret=settings.require_secret("card_fingerprint_key")
        )
        self._tokens = pages.PageTokens(settings.require_secret("page_token_key"))

    def _search(
        self, request: payment_internal_pb2.SearchPaymentsRequest
    ) -> payment_internal_pb2.SearchPaymentsResponse:
        with transaction(self._sessions) as session:
            rows, token = payments.list_payments(
                session,
                tokens=self._tokens,
                principal=None,
                page_size=request.page_size,
                page_token=request.page_token,
                status=request.status,
                merchant_id=request.merchant_id,
                payment_id=request.payment_id,
            )
            return payment_internal_pb2.SearchPaymentsResponse(
                payments=[payment_to_proto(row) for row in rows], **pages.next_page(token)
            )

    def _search_payouts(
        self, request: payment_internal_pb2.SearchPayoutsRequest
    ) -> payment_pb2.ListPayoutsResponse:
        with transaction(self._sessions) as session:
            rows, token = payouts.list_payouts(
                session,
                principal=None,
                tokens=self._tokens,
                page_size=request.page_size,
                page_token=request.page_token,
                status=request.status,
                merchant_id=request.merchant_id,
            )
            return payment_pb2.ListPayoutsResponse(
                payouts=[payout_to_proto(row) for row in rows], **pages.next_page(token)
            )

    async def SearchPayouts(
        self, request: payment_internal_pb2.SearchPayoutsRequest, context: Context
    ) -> payment_pb2.ListPayoutsResponse:
        """Lists payouts across merchants, newest first."""
        return await asyncio.to_thread(self._search_payouts, request)

    def _stats(
        self, request: payment_internal_pb2.GetPaymentStatsRequest
    ) -> payment_internal_pb2.GetPaymentStatsResponse:
        with transaction(self._sessions) as session:
            stats = reports.payment_stats(
                session,
                merchant_id=request.merchant_id,
                livemode=request.livemode,
                start_time=_time(request, "start_time"),
                end_time=_time(request, "end_time"),
            )
            open_disputes = reports.open_dispute_count(
                session, merchant_id=request.merchant_id, livemode=request.livemode
            )
        return payment_internal_pb2.GetPaymentStatsResponse(
            currencies=[
                payment_internal_pb2.CurrencyStats(
                    currency=entry.currency,
                    succeeded_count=entry.counts.get("succeeded", 0),
                    failed_count=entry.counts.get("failed", 0),
                    processing_count=entry.counts.get("processing", 0),
                    requires_capture_count=entry.counts.get("requires_capture", 0),
                    canceled_count=entry.counts.get("canceled", 0),
                    requires_payment_method_count=entry.counts.get("requires_payment_method", 0),
                    gross_volume=entry.gross_volume,
                    fees=entry.fees,
                    refunded=entry.refunded,
                    net_volume=entry.gross_volume - entry.fees - entry.refunded,
                )
                for entry in stats
            ],
            open_dispute_count=open_disputes,
        )

    def _timeline(
        self, request: payment_internal_pb2.GetRevenueTimelineRequest
    ) -> payment_internal_pb2.GetRevenueTimelineResponse:
        with transaction(self._sessions) as session:
            buckets = reports.revenue_timeline(
                session,
                granularity=request.granularity,
                currency=request.currency,
                start_time=_time(request, "start_time"),
                end_time=_time(request, "end_time"),
                merchant_id=request.merchant_id,
                livemode=request.livemode,
            )
        return payment_internal_pb2.GetRevenueTimelineResponse(
            buckets=[
                payment_internal_pb2.RevenueBucket(
                    start_time=_stamp(bucket.start_time),
                    gross=bucket.gross,
                    fees=bucket.fees,
                    refunds=bucket.refunds,
                    succeeded_count=bucket.succeeded_count,
                    failed_count=bucket.failed_count,
                )
                for bucket in buckets
            ]
        )

    def _payment_refunds(
        self, request: payment_internal_pb2.ListPaymentRefundsRequest
    ) -> payment_pb2.ListRefundsResponse:
        if not request.payment_id:
            raise InvalidArgument.field("payment_id", "is required")
        with transaction(self._sessions) as session:
            rows, token = refunds.list_refunds(
                session,
                tokens=self._tokens,
                principal=None,
                payment_id=request.payment_id,
                page_size=pages.PAGE_SIZE_MAX,
                page_token="",
            )
            return payment_pb2.ListRefundsResponse(
                refunds=[refund_to_proto(row) for row in rows], **pages.next_page(token)
            )

    def _search_disputes(
        self, request: payment_internal_pb2.SearchDisputesRequest
    ) -> payment_pb2.ListDisputesResponse:
        with transaction(self._sessions) as session:
            rows, token = disputes.list_disputes(
                session,
                tokens=self._tokens,
                principal=None,
                payment_id=request.payment_id,
                page_size=request.page_size,
                page_token=request.page_token,
            )
            return payment_pb2.ListDisputesResponse(
                disputes=[dispute_to_proto(row) for row in rows], **pages.next_page(token)
            )

    async def SearchDisputes(
        self, request: payment_internal_pb2.SearchDisputesRequest, context: Context
    ) -> payment_pb2.ListDisputesResponse:
        """Disputes across merchants and modes, newest first."""
        return await asyncio.to_thread(self._search_disputes, request)

    def _operator_refund(
        self, request: payment_internal_pb2.CreateOperatorRefundRequest
    ) -> payment_pb2.Refund:
        amount = request.amount if request.HasField("amount") else None
        refunds.validate_refund_input(
            payment_id=request.payment_id, amount=amount, reason=request.reason
        )
        if not request.operator_id:
            raise InvalidArgument.field("operator_id", "is required")
        key = idempotency.validate_key(request.idempotency_key) if request.idempotency_key else None

        def work(session: Session) -> payment_pb2.Refund:
            payment = payments.get_payment_by_id_or_raise(
                session, payment_id=request.payment_id, for_update=True
            )
            return refund_to_proto(
                refunds.create_refund(
                    session,
                    payment=payment,
                    amount=amount,
                    reason=request.reason,
                    operator_id=request.operator_id,
                )
            )

        if key is None:
            with transaction(self._sessions) as session:
                return work(session)
        with transaction(self._sessions) as session:
            owner = payments.get_payment_by_id_or_raise(session, payment_id=request.payment_id)
            merchant_id, livemode = owner.merchant_id, owner.livemode
        response, _ = self._idempotent.run(
            owner=merchant_id,
            livemode=livemode,
            operation="operator_refund",
            key=key,
            request=request,
            work=work,
            parse=payment_pb2.Refund.FromString,
        )
        return response

    def _settled(
        self, request: payment_internal_pb2.ListSettledMovementsRequest
    ) -> payment_internal_pb2.ListSettledMovementsResponse:
        with transaction(self._sessions) as session:
            rows, token = reports.settled_movements(
                session,
                tokens=self._tokens,
                start_time=_time(request, "start_time"),
                end_time=_time(request, "end_time"),
                page_size=request.page_size,
                page_token=request.page_token,
            )
        return payment_internal_pb2.ListSettledMovementsResponse(
            movements=[
                payment_internal_pb2.SettledMovement(
                    kind=row.kind,
                    id=row.id,
                    payment_id=row.payment_id,
                    merchant_id=row.merchant_id,
                    amount=row.amount,
                    fee=row.fee,
                    currency=row.currency,
                    livemode=row.livemode,
                    settle_time=_stamp(row.at),
                    ledger_reference=row.ledger_reference,
                )
                for row in rows
            ],
            **pages.next_page(token),
        )

    def _processor_records(
        self, request: payment_internal_pb2.ListProcessorRecordsRequest
    ) -> payment_internal_pb2.ListProcessorRecordsResponse:
        with transaction(self._sessions) as session:
            rows, token = reports.processor_records(
                session,
                tokens=self._tokens,
                start_time=_time(request, "start_time"),
                end_time=_time(request, "end_time"),
                page_size=request.page_size,
                page_token=request.page_token,
            )
        return payment_internal_pb2.ListProcessorRecordsResponse(
            records=[
                payment_internal_pb2.ProcessorRecord(
                    kind=row.kind,
                    processor_id=row.id,
                    payment_id=row.payment_id,
                    refund_id=row.refund_id,
                    amount=row.amount,
                    currency=row.currency,
                    create_time=_stamp(row.at),
                    dispute_id=row.dispute_id,
                )
                for row in rows
            ],
            **pages.next_page(token),
        )

    async def SearchPayments(
        self, request: payment_internal_pb2.SearchPaymentsRequest, context: Context
    ) -> payment_internal_pb2.SearchPaymentsResponse:
        """Lists payments across merchants, newest first."""
        return await asyncio.to_thread(self._search, request)

    async def GetPaymentStats(
        self, request: payment_internal_pb2.GetPaymentStatsRequest, context: Context
    ) -> payment_internal_pb2.GetPaymentStatsResponse:
        """Counts and sums per currency."""
        return await asyncio.to_thread(self._stats, request)

    def _pipeline(self) -> payment_internal_pb2.GetPipelineResponse:
        backlog = read_backlog(self._sessions, self._settings.payment_stuck_after_s)
        return payment_internal_pb2.GetPipelineResponse(
            outbox=[
                payment_internal_pb2.OutboxBacklog(kind=kind, pending=count, lag_seconds=lag_s)
                for kind, (count, lag_s) in backlog.outbox.items()
            ],
            stuck_payments=backlog.stuck_payments,
            stuck_refunds=backlog.stuck_refunds,
            payouts_in_transit=backlog.payouts_in_transit,
            payouts_failed=backlog.payouts_failed,
        )

    async def GetPipeline(
        self, request: payment_internal_pb2.GetPipelineRequest, context: Context
    ) -> payment_internal_pb2.GetPipelineResponse:
        """The outbox's backlog and the stuck work, as the metrics report them."""
        return await asyncio.to_thread(self._pipeline)

    async def GetRevenueTimeline(
        self, request: payment_internal_pb2.GetRevenueTimelineRequest, context: Context
    ) -> payment_internal_pb2.GetRevenueTimelineResponse:
        """Revenue buckets over time in one currency."""
        return await asyncio.to_thread(self._timeline, request)

    async def ListPaymentRefunds(
        self, request: payment_internal_pb2.ListPaymentRefundsRequest, context: Context
    ) -> payment_pb2.ListRefundsResponse:
        """The refunds of any payment."""
        return await asyncio.to_thread(self._payment_refunds, request)

    async def CreateOperatorRefund(
        self, request: payment_internal_pb2.CreateOperatorRefundRequest, context: Context
    ) -> payment_pb2.Refund:
        """Refunds on an operator's behalf."""
        return await asyncio.to_thread(self._operator_refund, request)

    async def ListSettledMovements(
        self, request: payment_internal_pb2.ListSettledMovementsRequest, context: Context
    ) -> payment_internal_pb2.ListSettledMovementsResponse:
        """Succeeded captures and refunds in a range, oldest first."""
        return await asyncio.to_thread(self._settled, request)

    async def ListProcessorRecords(
        self, request: payment_internal_pb2.ListProcessorRecordsRequest, context: Context
    ) -> payment_internal_pb2.ListProcessorRecordsResponse:
        """The processor simulator's captures and refunds, oldest first."""
        return await asyncio.to_thread(self._processor_records, request)
