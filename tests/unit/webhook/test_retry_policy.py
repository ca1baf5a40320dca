"""Retry schedule, jitter, Retry-After; job ids; page tokens."""

from __future__ import annotations

import pytest

from services.webhook.deliveries import RetryPolicy, parse_schedule
from services.webhook.job_ids import batch_job_id, delivery_id_from, job_id

POLICY = RetryPolicy(
    delays_s=(5.0, 300.0, 1800.0),
    jitter_ratio=0.1,
    retry_after_max_s=600.0,
    disable_after_failing_s=5 * 86400,
)


def test_parse_schedule__the_default_has_seven_delays() -> None:
    assert parse_schedule("5,300,1800,7200,18000,36000,36000") == (
        5.0,
        300.0,
        1800.0,
        7200.0,
        18000.0,
        36000.0,
        36000.0,
    )
    assert parse_schedule(" 1, 1 ,1 ") == (1.0, 1.0, 1.0)


@pytest.mark.parametrize("value", ["", ",", "5,soon", "5,-1"])
def test_parse_schedule__malformed_is_refused(value: str) -> None:
    with pytest.raises(ValueError, match=r"retry schedule|could not convert"):
        parse_schedule(value)


def test_policy__attempts_are_one_more_than_delays() -> None:
    assert POLICY.attempts_max == 4


@pytest.mark.parametrize(("failed", "base"), [(1, 5.0), (2, 300.0), (3, 1800.0)])
def test_policy__delay_follows_the_schedule_within_the_jitter(failed: int, base: float) -> None:
    delays = [POLICY.delay_s(failed, retry_after_s=None) for _ in range(200)]

    assert all(base * 0.9 <= delay <= base * 1.1 for delay in delays)
    assert len(set(delays)) > 1


def test_policy__retry_after_is_honoured_when_longer_and_capped() -> None:
    assert POLICY.delay_s(1, retry_after_s=60) == 60
    assert POLICY.delay_s(1, retry_after_s=86400) == 600
    assert POLICY.delay_s(3, retry_after_s=1) >= 1800 * 0.9


def test_job_ids__name_the_delivery_and_the_attempt() -> None:
    assert job_id("whd_abc123", 3) == "whd_abc123-attempt-3"
    assert delivery_id_from("whd_abc123-attempt-3") == "whd_abc123"
    assert delivery_id_from("whd_abc123") == "whd_abc123"


def test_batch_job_id__the_same_attempts_in_any_order_name_one_job() -> None:
    one = batch_job_id("we_a", [("whd_1", 1), ("whd_2", 3)])
    assert one.startswith("we_a-batch-")
    assert batch_job_id("we_a", [("whd_2", 3), ("whd_1", 1)]) == one
    # Another attempt number (a retry), another batch or another endpoint: another job.
    assert batch_job_id("we_a", [("whd_1", 2), ("whd_2", 3)]) != one
    assert batch_job_id("we_a", [("whd_1", 1)]) != one
    assert batch_job_id("we_b", [("whd_1", 1), ("whd_2", 3)]) != one


@pytest.mark.parametrize(
    "value",
    ["", "abc", "we_abc", "whd_", "whd_abc-attempt-x", "whd_abc-attempt-1234567", "whd_a;b"],
)
def test_job_ids__anything_else_names_no_delivery(value: str) -> None:
    assert delivery_id_from(value) is None
