"""The no-op RQ job and its worker: the baseline for webhook fan-out.

The worker is the platform's own worker model (`services.common.queue.run_worker`: one
process running `PAYMESH_WORKER_CONCURRENCY` SimpleWorkers on threads, JSON serializer,
scheduler on) on a queue of its own, so the ratio of
deliveries per second to no-op jobs per second is what a delivery costs beyond the queue.
"""

from __future__ import annotations

from services.common.queue import run_worker

QUEUE = "paymesh.bench.noop"
FUNC = "bench.noop_worker.noop"


def noop(index: int) -> int:
    """Does nothing; returns its argument so a result is stored like a real job's."""
    return index


def main() -> None:
    """Works the no-op queue until SIGTERM."""
    run_worker(name="bench-noop-worker", queue_names=[QUEUE])


if __name__ == "__main__":
    main()
