"""The webhook pipeline's metrics (services/common/metrics.py): its gauges (deliveries waiting
or dead), read by the webhook service; the worker's attempts, by outcome."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from services.common.db import transaction
from services.common.metrics import PipelineCollector
from services.common.queue import WEBHOOKS_QUEUE, redis_connection
from services.common.settings import Settings

# Counted by the webhook worker: each HTTP attempt, by outcome: delivered (2xx), rejected
# (another status) or no_response (timeout, refused, blocked address).
ATTEMPTS = Counter(
    "paymesh_webhook_attempts_total", "Webhook delivery attempts, by outcome", ["outcome"]
)
ATTEMPT_SECONDS = Histogram(
    "paymesh_webhook_attempt_duration_seconds",
    "Time a webhook attempt took, until the receiver answered or it failed",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 15, 30),
)

# Deliveries not delivered, by status (ix_deliveries_status), and the oldest due one's wait.
_DELIVERIES = text(
    "SELECT status, count(*) AS total FROM webhook.deliveries"
    " WHERE status IN ('pending', 'failing', 'dead') GROUP BY status"
)
_OLDEST_DUE = text(
    "SELECT coalesce(extract(epoch FROM now() - min(next_attempt_time)), 0) AS late_s"
    " FROM webhook.deliveries WHERE status IN ('pending', 'failing')"
    " AND next_attempt_time <= now()"
)
_DISABLED = text("SELECT count(*) FROM webhook.endpoints WHERE status = 'disabled'")
WAITING = ("pending", "failing", "dead")


def _read(sessions: sessionmaker[Session]) -> Iterator[Metric]:
    with transaction(sessions) as session:
        counts = {row.status: row.total for row in session.execute(_DELIVERIES)}
        late_s = float(session.execute(_OLDEST_DUE).scalar_one())
        disabled = int(session.execute(_DISABLED).scalar_one())
    deliveries = GaugeMetricFamily(
        "paymesh_webhook_deliveries",
        "Deliveries not delivered: pending (first attempt due), failing (retrying), dead"
        " (retries ran out; replayable)",
        labels=["status"],
    )
    for status in WAITING:
        deliveries.add_metric([status], counts.get(status, 0))
    late = GaugeMetricFamily(
        "paymesh_webhook_delivery_lateness_seconds",
        "How long past its due time the most overdue pending or failing delivery is (0: none)",
        value=max(late_s, 0.0),
    )
    endpoints = GaugeMetricFamily(
        "paymesh_webhook_endpoints_disabled",
        "Endpoints disabled (by their merchant, or after failing for too long)",
        value=disabled,
    )
    yield from (deliveries, late, endpoints)


def pipeline_collector(sessions: sessionmaker[Session], settings: Settings) -> PipelineCollector:
    """The webhook service's pipeline gauges, for its /metrics."""
    return PipelineCollector(
        read_database=lambda: _read(sessions),
        redis=redis_connection(settings),
        queues=[WEBHOOKS_QUEUE],
    )
