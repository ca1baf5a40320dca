"""The payment worker (`payment-worker`): runs the jobs of `services.payment.jobs` from RQ."""

from __future__ import annotations

from services.common.queue import PAYMENTS_QUEUE, run_worker
from services.payment import jobs


def main() -> None:
    """Works the payments queue until SIGTERM."""
    # Built at start, before the worker threads share it, rather than inside the first job.
    run_worker(name="payment-worker", queue_names=[PAYMENTS_QUEUE], prepare=jobs.context)


if __name__ == "__main__":
    main()
