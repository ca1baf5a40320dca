"""The `webhook-worker` process: runs delivery attempts from the webhooks queue."""

from __future__ import annotations

import logging

# Loaded at start, not inside the first job's time limit (RQ imports job functions lazily).
import services.webhook.jobs  # noqa: F401
from services.common.queue import WEBHOOKS_QUEUE, run_worker
from services.webhook import sender
from services.webhook.runtime import worker_runtime


def main() -> None:
    """Runs until SIGTERM."""
    # httpx logs every request URL at INFO; merchants' URLs may carry tokens.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    run_worker(name="webhook-worker", queue_names=[WEBHOOKS_QUEUE], prepare=_prepare)


def _prepare() -> None:
    sender.prepare()
    worker_runtime()


if __name__ == "__main__":
    main()
