"""RQ job ids of delivery attempts, built in one place: `whd_<id>-attempt-<n>`.

Each attempt has its own id, so a job left STARTED by a killed worker never blocks the retry,
and a duplicate enqueue of the same attempt collapses into one job.
"""

from __future__ import annotations

from services.common.ids import has_prefix

_SEPARATOR = "-attempt-"  # RQ allows only letters, digits, "_" and "-"
ATTEMPT_NUMBER_DIGITS_MAX = 6


def job_id(delivery_id: str, attempt_number: int) -> str:
    """The job id of one attempt of a delivery."""
    return f"{delivery_id}{_SEPARATOR}{attempt_number}"


def delivery_id_from(value: str) -> str | None:
    """The delivery id in a delivery id or job id; None when it is neither."""
    delivery_id, separator, number = value.partition(_SEPARATOR)
    if separator and not (number.isdigit() and len(number) <= ATTEMPT_NUMBER_DIGITS_MAX):
        return None
    return delivery_id if has_prefix(delivery_id, "whd") else None
