"""Jobs for the worker-process tests (tests/unit/test_worker_threads.py); JSON arguments only."""

from __future__ import annotations

import json
import threading
import time

from rq import get_current_job


def record(log_key: str, index: int, duration_s: float) -> int:
    """Waits `duration_s` in short sleeps, noting its start and end times in Redis list `log_key`.

    Short sleeps, so a job time limit (raised between Python instructions) can interrupt it.
    """
    job = get_current_job()
    assert job is not None
    connection = job.connection
    thread = threading.get_ident()
    connection.rpush(log_key, json.dumps({"index": index, "event": "start", "at": time.time()}))
    deadline = time.monotonic() + duration_s
    while time.monotonic() < deadline:
        time.sleep(min(0.05, max(0.0, deadline - time.monotonic())))
    connection.rpush(
        log_key,
        json.dumps({"index": index, "event": "end", "at": time.time(), "thread": thread}),
    )
    return index
