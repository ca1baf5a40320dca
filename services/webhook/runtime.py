"""What the webhook service, its worker and its sweeper share, built once from the settings."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cache

from rq import Queue
from sqlalchemy.orm import Session, sessionmaker

from services.common.db import make_engine, make_sessionmaker
from services.common.errors import ConfigurationError
from services.common.queue import WEBHOOKS_QUEUE, make_queue, redis_connection
from services.common.settings import Settings
from services.webhook.crypto import SecretBox
from services.webhook.deliveries import RetryPolicy, parse_schedule
from services.webhook.dispatch import DueAttempt, enqueue_attempts
from services.webhook.sender import Clients

# Connect, send, read: each bounded by the HTTP timeout on its own.
HTTP_PHASES = 3
# A batch starts no attempt after this many HTTP timeouts; what it has not sent by then it
# gives back, so one slow endpoint's batch holds a worker thread for a bounded time.
BATCH_SEND_TIMEOUTS = 1


@dataclass(frozen=True)
class Runtime:
    """Settings, sessions, the delivery queue, the secret box, retry policy and HTTP clients."""

    settings: Settings
    sessions: sessionmaker[Session]
    queue: Queue
    box: SecretBox
    policy: RetryPolicy
    http: Clients = field(default_factory=Clients)

    @property
    def batch_send_s(self) -> float:
        """Seconds into a batch after which it starts no more attempts."""
        return BATCH_SEND_TIMEOUTS * self.settings.webhook_timeout_s

    @property
    def job_timeout_s(self) -> int:
        """RQ's hard limit on one batch: its sending time, then one last attempt, plus a margin.

        The HTTP timeout bounds connecting, sending and each read separately, so an attempt may
        legitimately take a few of them.
        """
        return math.ceil(
            self.batch_send_s
            + HTTP_PHASES * self.settings.webhook_timeout_s
            + self.settings.webhook_lease_margin_s
        )

    @property
    def lease_s(self) -> float:
        """How long a claimed attempt is held before it is presumed lost (outlives the job)."""
        return self.job_timeout_s + self.settings.webhook_lease_margin_s

    def enqueue(self, attempts: list[DueAttempt]) -> None:
        """Queues attempts in per-endpoint batches (after the transaction that made them due)."""
        enqueue_attempts(self.queue, attempts, job_timeout_s=self.job_timeout_s)


def build_runtime(settings: Settings, *, application_name: str, pool_size: int) -> Runtime:
    """The runtime for one process; fails at start when a setting is missing or malformed."""
    try:
        delays = parse_schedule(settings.webhook_retry_schedule)
    except ValueError as error:
        raise ConfigurationError(f"PAYMESH_WEBHOOK_RETRY_SCHEDULE: {error}") from error
    return Runtime(
        settings=settings,
        sessions=make_sessionmaker(
            make_engine(
                settings.require_database_url(),
                pool_size=pool_size,
                application_name=application_name,
            )
        ),
        queue=make_queue(WEBHOOKS_QUEUE, redis_connection(settings)),
        box=SecretBox(settings.require_secret("secret_encryption_key")),
        policy=RetryPolicy(
            delays_s=delays,
            jitter_ratio=settings.webhook_retry_jitter_ratio,
            retry_after_max_s=settings.webhook_retry_after_max_s,
            disable_after_failing_s=settings.webhook_disable_after_failing_s,
        ),
        # A worker's threads may all deliver to one endpoint at once.
        http=Clients(connections_max=settings.worker_concurrency),
    )


@cache
def worker_runtime() -> Runtime:
    """The runtime of this worker process, built at its start (before its threads share it)."""
    settings = Settings()
    # One connection per job in hand (claim, then record), `worker_concurrency` jobs at a time.
    return build_runtime(
        settings,
        application_name="paymesh-webhook-worker",
        pool_size=settings.worker_concurrency,
    )
