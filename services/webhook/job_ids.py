"""Ids of delivery attempts and of the RQ jobs that carry them, built in one place.

An attempt is named `whd_<id>-attempt-<n>` (shown to operators as a delivery's job id, and
accepted wherever a delivery id is). A job carries a batch of attempts to one endpoint and is
named `<endpoint id>-batch-<digest of its attempts>`: each attempt number is new, so a job left
STARTED by a killed worker never blocks the retry, and a duplicate enqueue of the same batch
collapses into one job.
"""

from __future__ import annotations

from collections.abc import Sequence

from services.common import queue
from services.common.ids import has_prefix

_SEPARATOR = "-attempt-"  # RQ allows only letters, digits, "_" and "-"
ATTEMPT_NUMBER_DIGITS_MAX = 6


def job_id(delivery_id: str, attempt_number: int) -> str:
    """The name of one attempt of a delivery."""
    return f"{delivery_id}{_SEPARATOR}{attempt_number}"


def batch_job_id(endpoint_id: str, attempts: Sequence[tuple[str, int]]) -> str:
    """The RQ job id of a batch of attempts to one endpoint (the same attempts, the same id)."""
    return queue.batch_job_id(
        endpoint_id, (job_id(delivery_id, number) for delivery_id, number in attempts)
    )


def delivery_id_from(value: str) -> str | None:
    """The delivery id in a delivery id or attempt name; None when it is neither."""
    delivery_id, separator, number = value.partition(_SEPARATOR)
    if separator and not (number.isdigit() and len(number) <= ATTEMPT_NUMBER_DIGITS_MAX):
        return None
    return delivery_id if has_prefix(delivery_id, "whd") else None
