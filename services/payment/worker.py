"""The payment worker (`payment-worker`): runs the jobs of `services.payment.jobs` from RQ."""

from __future__ import annotations

from services.common.queue import PAYMENTS_QUEUE, run_worker


def main() -> None:
    """Works the payments queue until SIGTERM."""
    run_worker(name="payment-worker", queue_names=[PAYMENTS_QUEUE])


if __name__ == "__main__":
    main()
