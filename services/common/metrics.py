"""Gauges of a service's pipeline, read from its database and Redis when Prometheus scrapes.

The RPC counters and histograms (services/common/server.py) say how calls went; these say what
is waiting: a service's outbox, its stuck work, its RQ queues. They are computed at scrape
time from the state itself (a few indexed aggregates, two Redis round trips), so they are
right whichever process did the work, and cost nothing between scrapes.

A source that cannot be read answers `paymesh_pipeline_source_up{source=...} 0` and leaves its
gauges out, rather than failing the whole scrape.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Sequence

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from redis import Redis
from redis.exceptions import RedisError
from sqlalchemy.exc import SQLAlchemyError

from services.common.queue import queue_backlog

logger = logging.getLogger(__name__)


class PipelineCollector(Collector):
    """One service's pipeline gauges: `read_database()`'s, and its queues' backlog."""

    def __init__(
        self,
        *,
        read_database: Callable[[], Iterable[Metric]],
        redis: Redis,
        queues: Sequence[str],
    ) -> None:
        self._read_database = read_database
        self._redis = redis
        self._queues = list(queues)

    def describe(self) -> Iterable[Metric]:
        # Unchecked: registering must not query anything.
        return []

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily(
            "paymesh_pipeline_source_up",
            "Whether the pipeline gauges could be read from the source (1) or not (0)",
            labels=["source"],
        )
        try:
            database = list(self._read_database())
        except SQLAlchemyError:
            logger.warning("pipeline metrics: the database could not be read", exc_info=True)
            database = None
        up.add_metric(["database"], 0 if database is None else 1)
        yield from database or []
        try:
            backlog = queue_backlog(self._redis, self._queues)
        except RedisError:
            logger.warning("pipeline metrics: Redis could not be read", exc_info=True)
            backlog = None
        up.add_metric(["redis"], 0 if backlog is None else 1)
        if backlog is not None:
            jobs = GaugeMetricFamily(
                "paymesh_queue_jobs", "Jobs waiting in an RQ queue", labels=["queue"]
            )
            age = GaugeMetricFamily(
                "paymesh_queue_oldest_job_age_seconds",
                "How long the oldest waiting job of an RQ queue has waited (0 when empty)",
                labels=["queue"],
            )
            for name, (count, oldest_s) in sorted(backlog.items()):
                jobs.add_metric([name], count)
                age.add_metric([name], oldest_s)
            yield jobs
            yield age
        yield up
