"""The operators' views, built by calling the other services' internal gRPC methods.

The admin service never reads another service's tables: payments, refunds and their figures
come from the payment service, entries and balances from the ledger, deliveries and events
from the webhook service. Worker liveness comes from RQ's worker registry in Redis, the shared
queue plumbing (`services.common.queue`).
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from typing import Any, TypeVar

import grpc
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2
from paymesh.admin.v1 import admin_pb2
from paymesh.ledger.v1 import ledger_internal_pb2, ledger_internal_pb2_grpc
from paymesh.payment.v1 import payment_internal_pb2, payment_internal_pb2_grpc
from paymesh.webhook.v1 import webhook_internal_pb2, webhook_internal_pb2_grpc
from redis.exceptions import RedisError

from services.admin.errors import DependencyUnavailable, RemoteError
from services.common.clients import aio_channel
from services.common.errors import FieldViolation
from services.common.queue import (
    MAINTENANCE_QUEUE,
    PAYMENTS_QUEUE,
    WEBHOOKS_QUEUE,
    WorkerProcess,
    queue_backlog,
    redis_connection,
    worker_processes,
)
from services.common.settings import Settings

logger = logging.getLogger(__name__)

Reply = TypeVar("Reply", bound=Message)
# Codes that mean the caller asked for something wrong: passed on as they came.
PASSED_ON = (
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.ABORTED,
    grpc.StatusCode.ALREADY_EXISTS,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
)
STATUS_DETAILS_KEY = "grpc-status-details-bin"
# A reconciliation reads a whole range from three services; it gets longer than other calls.
RECONCILE_TIMEOUT_S = 120.0


def remote_error(error: grpc.aio.AioRpcError, service: str) -> Exception:
    """The domain error for another service's failure: client errors kept, the rest 503."""
    code = error.code()
    if code not in PASSED_ON:
        logger.warning("%s call failed", service, extra={"code": code.name})
        return DependencyUnavailable(f"the {service} service cannot answer right now")
    reason = code.name
    violations: list[FieldViolation] = []
    trailers: Any = error.trailing_metadata() or ()
    for name, value in trailers:
        if name != STATUS_DETAILS_KEY or not isinstance(value, bytes):
            continue
        status = status_pb2.Status.FromString(value)
        for detail in status.details:
            info = error_details_pb2.ErrorInfo()
            bad_request = error_details_pb2.BadRequest()
            if detail.Unpack(info):
                reason = info.reason
            elif detail.Unpack(bad_request):
                violations += [
                    FieldViolation(v.field, v.description) for v in bad_request.field_violations
                ]
    return RemoteError(error.details() or reason, code=code, reason=reason, violations=violations)


def success_rate(succeeded: int, failed: int) -> float:
    """Share of finished payments that succeeded; payments still in flight do not count."""
    finished = succeeded + failed
    return succeeded / finished if finished else 0.0


def currency_overview(stats: payment_internal_pb2.CurrencyStats) -> admin_pb2.CurrencyOverview:
    """One currency's line of the overview."""
    return admin_pb2.CurrencyOverview(
        currency=stats.currency,
        succeeded_count=stats.succeeded_count,
        failed_count=stats.failed_count,
        processing_count=stats.processing_count,
        requires_capture_count=stats.requires_capture_count,
        canceled_count=stats.canceled_count,
        requires_payment_method_count=stats.requires_payment_method_count,
        success_rate=success_rate(stats.succeeded_count, stats.failed_count),
        gross_volume=stats.gross_volume,
        fees=stats.fees,
        refunded=stats.refunded,
        net_volume=stats.net_volume,
    )


def worker_to_proto(process: WorkerProcess, *, at: datetime) -> admin_pb2.WorkerProcess:
    """One worker process as the overview shows it, healthy or not at `at`."""
    healthy = process.healthy(at=at)
    message = admin_pb2.WorkerProcess(
        kind=process.kind, host=process.host, pid=process.pid, healthy=healthy
    )
    message.start_time.FromDatetime(process.start_time)
    if not healthy:
        message.last_heartbeat_time.FromDatetime(process.last_heartbeat_time)
    return message


# The queues the overview's pipeline shows, as the services' metrics report them.
QUEUES = (PAYMENTS_QUEUE, MAINTENANCE_QUEUE, WEBHOOKS_QUEUE)


class RemoteServices:
    """Stubs of the payment, ledger and webhook services' internal methods."""

    def __init__(self, settings: Settings) -> None:
        self.timeout_s = settings.grpc_timeout_s
        self.payments = payment_internal_pb2_grpc.PaymentInternalServiceStub(
            aio_channel(settings.target("payment"))
        )
        self.ledger = ledger_internal_pb2_grpc.LedgerInternalServiceStub(
            aio_channel(settings.target("ledger"))
        )
        self.webhooks = webhook_internal_pb2_grpc.WebhookInternalServiceStub(
            aio_channel(settings.target("webhook"))
        )
        self.redis = redis_connection(settings)

    async def call(
        self, service: str, method: Any, request: Message, *, timeout_s: float | None = None
    ) -> Any:
        """Calls one method, turning its failure into a domain error."""
        try:
            return await method(request, timeout=timeout_s or self.timeout_s)
        except grpc.aio.AioRpcError as error:
            raise remote_error(error, service) from error

    async def overview(self, request: admin_pb2.GetOverviewRequest) -> admin_pb2.Overview:
        """Payment figures per currency and webhook delivery counts, fetched side by side."""
        stats_request = payment_internal_pb2.GetPaymentStatsRequest(
            merchant_id=request.merchant_id, livemode=request.livemode
        )
        # Deliveries of the same merchant, mode and window as the payment figures.
        deliveries_request = webhook_internal_pb2.GetDeliveryStatsRequest(
            merchant_id=request.merchant_id, livemode=request.livemode
        )
        for window in (stats_request, deliveries_request):
            if request.HasField("start_time"):
                window.start_time.CopyFrom(request.start_time)
            if request.HasField("end_time"):
                window.end_time.CopyFrom(request.end_time)
        stats, deliveries, workers, pipeline = await asyncio.gather(
            self.call("payment", self.payments.GetPaymentStats, stats_request),
            self.call("webhook", self.webhooks.GetDeliveryStats, deliveries_request),
            self.workers(),
            self.pipeline(),
        )
        return admin_pb2.Overview(
            currencies=[currency_overview(line) for line in stats.currencies],
            webhooks=admin_pb2.WebhookDeliveryCounts(
                delivered=deliveries.delivered,
                pending=deliveries.pending,
                failing=deliveries.failing,
                dead=deliveries.dead,
            ),
            workers=workers,
            pipeline=pipeline,
            open_disputes=stats.open_dispute_count,
        )

    async def pipeline(self) -> admin_pb2.Pipeline:
        """The queues' backlog (read from Redis) and the payment pipeline's (from its service)."""
        payment = await self.call(
            "payment", self.payments.GetPipeline, payment_internal_pb2.GetPipelineRequest()
        )
        try:
            backlog = await asyncio.to_thread(queue_backlog, self.redis, QUEUES)
        except RedisError as error:
            logger.warning("the queues cannot be read", exc_info=True)
            raise DependencyUnavailable("Redis cannot answer right now") from error
        return admin_pb2.Pipeline(
            queues=[
                admin_pb2.QueueBacklog(queue=name, jobs=jobs, oldest_job_age_seconds=age_s)
                for name, (jobs, age_s) in backlog.items()
            ],
            outbox=payment.outbox,
            stuck_payments=payment.stuck_payments,
            stuck_refunds=payment.stuck_refunds,
            payouts_in_transit=payment.payouts_in_transit,
            payouts_failed=payment.payouts_failed,
        )

    async def workers(self) -> list[admin_pb2.WorkerProcess]:
        """Every worker process registered in Redis, and whether it still heartbeats."""
        try:
            processes = await asyncio.to_thread(worker_processes, self.redis)
        except RedisError as error:
            logger.warning("the worker registry cannot be read", exc_info=True)
            raise DependencyUnavailable("Redis cannot answer right now") from error
        now = datetime.now(UTC)
        return [worker_to_proto(process, at=now) for process in processes]

    async def payment_detail(self, payment_id: str) -> admin_pb2.PaymentDetail:
        """A payment with its refunds, the events about both, and the entries they caused."""
        found = await self.call(
            "payment",
            self.payments.SearchPayments,
            payment_internal_pb2.SearchPaymentsRequest(payment_id=payment_id, page_size=1),
        )
        matching = [p for p in found.payments if p.id == payment_id]
        if not matching:
            raise RemoteError(
                f"no payment {payment_id!r}",
                code=grpc.StatusCode.NOT_FOUND,
                reason="PAYMENT_NOT_FOUND",
            )
        refunds = await self.call(
            "payment",
            self.payments.ListPaymentRefunds,
            payment_internal_pb2.ListPaymentRefundsRequest(payment_id=payment_id),
        )
        object_ids = [payment_id, *(refund.id for refund in refunds.refunds)]
        events = await asyncio.gather(
            *(
                self.call(
                    "webhook",
                    self.webhooks.ListObjectEvents,
                    webhook_internal_pb2.ListObjectEventsRequest(object_id=object_id),
                )
                for object_id in object_ids
            )
        )
        entries = await asyncio.gather(
            *(
                self.call(
                    "ledger",
                    self.ledger.ListEntries,
                    ledger_internal_pb2.ListEntriesRequest(source_id=object_id, page_size=100),
                )
                for object_id in object_ids
            )
        )
        detail = admin_pb2.PaymentDetail(payment=matching[0], refunds=refunds.refunds)
        traced = sorted(
            (
                (event, trace_id)
                for reply in events
                for event, trace_id in zip(
                    reply.events,
                    list(reply.trace_ids) or [""] * len(reply.events),
                    strict=True,
                )
            ),
            key=lambda pair: pair[0].create_time.ToDatetime(),
        )
        detail.events.extend(event for event, _ in traced)
        detail.event_trace_ids.extend(trace_id for _, trace_id in traced)
        detail.ledger_entries.extend(
            sorted(
                (entry for reply in entries for entry in reply.entries),
                key=lambda entry: entry.create_time.ToDatetime(),
                reverse=True,
            )
        )
        return detail
