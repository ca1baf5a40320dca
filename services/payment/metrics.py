"""The payment pipeline's metrics (services/common/metrics.py): its gauges (outbox lag, stuck
payments), read by the payment service; what the worker and the relay count of their work."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from prometheus_client import Counter
from prometheus_client.core import GaugeMetricFamily, Metric
from sqlalchemy import func, select, text
from sqlalchemy.orm import Session, sessionmaker

from services.common.db import transaction
from services.common.metrics import PipelineCollector
from services.common.queue import MAINTENANCE_QUEUE, PAYMENTS_QUEUE, redis_connection
from services.common.settings import Settings
from services.payment import disputes
from services.payment.models import Dispute

# Counted by the payment worker: each payment a drive left, by outcome (succeeded, failed,
# requires_capture, error, busy, nothing_to_do); success rate = succeeded / (succeeded + failed).
PAYMENTS_DRIVEN = Counter(
    "paymesh_payments_driven_total",
    "Payments a worker's drive left, by outcome",
    ["outcome"],
)
# Counted by the relay.
RELAY_ROUNDS = Counter(
    "paymesh_outbox_relay_rounds_total",
    "Outbox relay rounds, by outcome (ok or failed)",
    ["outcome"],
)
RELAY_ROWS = Counter("paymesh_outbox_relay_rows_total", "Outbox rows the relay's rounds handled")

# Rows not relayed yet, by kind, and the oldest one's age (ix_outbox_pending).
_OUTBOX = text(
    "SELECT kind, count(*) AS pending,"
    " coalesce(extract(epoch FROM now() - min(create_time)), 0) AS lag_s"
    " FROM payment.outbox WHERE relay_time IS NULL GROUP BY kind"
)
# What the sweeper would re-drive now (sweeper.redrive_stuck; ix_payments_status_open,
# ix_payouts_unfinished); disputes by disputes.overdue, the sweeper's own condition.
_STUCK = text(
    "SELECT"
    " (SELECT count(*) FROM payment.payments WHERE status = 'processing'"
    "  AND (drive_time IS NULL OR drive_time < now() - make_interval(secs => :after_s)))"
    " AS payments,"
    " (SELECT count(*) FROM payment.refunds WHERE status = 'pending'"
    "  AND (drive_time IS NULL OR drive_time < now() - make_interval(secs => :after_s)))"
    " AS refunds,"
    " (SELECT count(*) FROM payment.payouts WHERE NOT ledger_complete"
    "  AND (drive_time IS NULL OR drive_time < now() - make_interval(secs => :after_s)))"
    " AS stuck_payouts,"
    " (SELECT count(*) FROM payment.payouts WHERE status IN ('pending', 'in_transit'))"
    " AS payouts_in_transit,"
    " (SELECT count(*) FROM payment.payouts WHERE status = 'failed') AS payouts_failed"
)


OUTBOX_KINDS = ("job", "event")


@dataclass(frozen=True)
class Backlog:
    """The payment pipeline's backlog: outbox rows per kind (pending, lag in s), stuck work."""

    outbox: dict[str, tuple[int, float]]
    stuck_payments: int
    stuck_refunds: int
    stuck_payouts: int = 0
    stuck_disputes: int = 0
    payouts_in_transit: int = 0
    payouts_failed: int = 0


def read_backlog(sessions: sessionmaker[Session], stuck_after_s: float) -> Backlog:
    """What the gauges report and the operators' overview shows; one transaction."""
    with transaction(sessions) as session:
        rows = {row.kind: row for row in session.execute(_OUTBOX)}
        stuck = session.execute(_STUCK, {"after_s": stuck_after_s}).one()
        stuck_disputes = session.scalar(
            select(func.count()).select_from(Dispute).where(disputes.overdue(stuck_after_s))
        )
    outbox = {
        kind: (rows[kind].pending, float(rows[kind].lag_s)) if kind in rows else (0, 0.0)
        for kind in OUTBOX_KINDS
    }
    return Backlog(
        outbox=outbox,
        stuck_payments=stuck.payments,
        stuck_refunds=stuck.refunds,
        stuck_payouts=stuck.stuck_payouts,
        stuck_disputes=int(stuck_disputes or 0),
        payouts_in_transit=stuck.payouts_in_transit,
        payouts_failed=stuck.payouts_failed,
    )


def _read(sessions: sessionmaker[Session], stuck_after_s: float) -> Iterator[Metric]:
    backlog = read_backlog(sessions, stuck_after_s)
    pending = GaugeMetricFamily(
        "paymesh_payment_outbox_pending",
        "Outbox rows (RQ jobs, events) written but not relayed yet",
        labels=["kind"],
    )
    lag = GaugeMetricFamily(
        "paymesh_payment_outbox_lag_seconds",
        "Age of the oldest outbox row not relayed yet, by kind (0 when none)",
        labels=["kind"],
    )
    for kind, (count, lag_s) in backlog.outbox.items():
        pending.add_metric([kind], count)
        lag.add_metric([kind], lag_s)
    stuck_family = GaugeMetricFamily(
        "paymesh_payment_stuck",
        "Payments processing, refunds pending, payouts and disputes with a step to go that"
        " nothing has driven for payment_stuck_after_s (the sweeper re-drives them)",
        labels=["object"],
    )
    stuck_family.add_metric(["payment"], backlog.stuck_payments)
    stuck_family.add_metric(["refund"], backlog.stuck_refunds)
    stuck_family.add_metric(["payout"], backlog.stuck_payouts)
    stuck_family.add_metric(["dispute"], backlog.stuck_disputes)
    yield from (pending, lag, stuck_family)


def pipeline_collector(sessions: sessionmaker[Session], settings: Settings) -> PipelineCollector:
    """The payment service's pipeline gauges, for its /metrics."""
    return PipelineCollector(
        read_database=lambda: _read(sessions, settings.payment_stuck_after_s),
        redis=redis_connection(settings),
        queues=[PAYMENTS_QUEUE, MAINTENANCE_QUEUE],
    )
