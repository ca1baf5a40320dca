"""Metrics beyond the RPCs': a service's pipeline gauges, and what the other processes export.

Gauges of a service's pipeline, read from its database and Redis when Prometheus scrapes.

The RPC counters and histograms (services/common/server.py) say how calls went; these say what
is waiting: a service's outbox, its stuck work, its RQ queues. They are computed at scrape
time from the state itself (a few indexed aggregates, two Redis round trips), so they are
right whichever process did the work, and cost nothing between scrapes.

A source that cannot be read answers `paymesh_pipeline_source_up{source=...} 0` and leaves its
gauges out, rather than failing the whole scrape.

The processes that serve no RPC (workers, the relay, the sweeper) serve their own /metrics on
`PAYMESH_<PROCESS>_METRICS_PORT` (`serve_process_metrics`): every RQ job's duration and outcome
(`JOB_SECONDS`, `JOBS`, counted by services/common/queue.py), and what each process counts of
its own work (payments driven, webhook attempts, outbox rows relayed, rows swept).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Sequence

from prometheus_client import Counter, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from redis import Redis
from redis.exceptions import RedisError
from sqlalchemy.exc import SQLAlchemyError

from services.common.settings import Settings

logger = logging.getLogger(__name__)

JOB_SECONDS = Histogram(
    "paymesh_job_duration_seconds",
    "Time an RQ job ran in a worker, by queue and job function",
    ["queue", "job"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
JOBS = Counter(
    "paymesh_jobs_total",
    "RQ jobs a worker finished, by queue, job function and outcome (succeeded or failed)",
    ["queue", "job", "outcome"],
)

SWEEPS = Counter(
    "paymesh_sweeps_total",
    "Sweeper rounds, by sweeper (payment, webhook) and outcome (ok or failed)",
    ["sweeper", "outcome"],
)
SWEPT = Counter(
    "paymesh_swept_total",
    "Rows a sweeper re-drove or deleted, by sweeper and what",
    ["sweeper", "what"],
)


def serve_process_metrics(settings: Settings, process: str) -> None:
    """Serves this process's /metrics (a daemon thread) on its port; 0 turns it off."""
    port = settings.process_metrics_port(process)
    if port:
        start_http_server(port, addr=settings.bind_host)
        logger.info("%s serves metrics", process, extra={"metrics_port": port})


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
        # Here, not at the top: the queue module counts its jobs with this module's metrics.
        from services.common.queue import queue_backlog  # noqa: PLC0415

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
