"""`python -m services.common.worker_health KIND`: the liveness check of a worker process.

Exit status 0 when a `KIND` worker process on this host (the pod, on Kubernetes) heartbeated
in Redis within `WORKER_HEARTBEAT_STALE_S`, 1 otherwise (dead, hung, or cut off from Redis).
"""

from __future__ import annotations

import argparse
import socket
import sys
from datetime import UTC, datetime

from redis.exceptions import RedisError

from services.common.queue import redis_connection, worker_processes
from services.common.settings import Settings


def main(argv: list[str] | None = None) -> int:
    """Checks this host's `KIND` workers; prints why when none is healthy."""
    parser = argparse.ArgumentParser(prog="worker_health", description=__doc__)
    parser.add_argument("kind", help="the worker kind, such as payment-worker")
    args = parser.parse_args(argv)
    host = socket.gethostname()
    connection = redis_connection(Settings())
    try:
        processes = [
            p for p in worker_processes(connection) if p.kind == args.kind and p.host == host
        ]
    except RedisError as error:
        sys.stderr.write(f"unhealthy: Redis cannot be read: {error}\n")
        return 1
    finally:
        connection.close()
    now = datetime.now(UTC)
    if any(process.healthy(at=now) for process in processes):
        return 0
    last = max((p.last_heartbeat_time for p in processes), default=None)
    sys.stderr.write(f"unhealthy: no {args.kind} on {host} heartbeated (last: {last})\n")
    return 1


if __name__ == "__main__":
    sys.exit(main())
