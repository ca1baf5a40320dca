"""The relay's pieces that need no servers: backoff, event requests, idempotency helpers."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from google.protobuf.struct_pb2 import Struct

from services.common.errors import InvalidArgument
from services.common.idempotency import request_hash, validate_key
from services.common.queue import JobRequest
from services.payment import outbox
from services.payment.relay import (
    EVENT_CALL_BYTES_MAX,
    EVENTS_PER_CALL_MAX,
    PAYMENTS_PER_JOB_MAX,
    TargetDown,
    event_calls,
    event_request,
    hand_over,
    job_requests,
    retry_delay_s,
)


def test_retry_delay__grows_then_caps() -> None:
    delays = [retry_delay_s(attempt, maximum_s=30) for attempt in range(1, 12)]
    assert all(0 < delay <= 30 for delay in delays)
    assert delays[0] < delays[3] < delays[6]
    assert retry_delay_s(10_000, maximum_s=30) <= 30


def test_event_request__carries_the_object_and_ids() -> None:
    request = event_request(
        {
            "id": "evt_1",
            "type": "payment.succeeded",
            "merchant_id": "mer_1",
            "livemode": False,
            "object": {"id": "pay_1", "amount": "100", "metadata": {"a": "b"}},
            "create_time": datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC).isoformat(),
        }
    )
    assert (request.id, request.type, request.merchant_id) == (
        "evt_1",
        "payment.succeeded",
        "mer_1",
    )
    assert request.object["amount"] == "100"
    metadata = request.object["metadata"]
    assert isinstance(metadata, Struct) and metadata["a"] == "b"
    assert request.create_time.ToDatetime(tzinfo=UTC) == datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def test_request_hash__differs_by_body_operation_and_secret() -> None:
    base = request_hash(secret="s", operation="create_payment", body=b"x")
    assert base == request_hash(secret="s", operation="create_payment", body=b"x")
    assert base != request_hash(secret="s", operation="create_payment", body=b"y")
    assert base != request_hash(secret="s", operation="create_refund", body=b"x")
    assert base != request_hash(secret="t", operation="create_payment", body=b"x")


@pytest.mark.parametrize("key", ["", "k" * 256, "caf\u00e9", "tab\there"])
def test_validate_key__rejects(key: str) -> None:
    with pytest.raises(InvalidArgument):
        validate_key(key)


def _event_payload(index: int, *, blob_bytes: int = 0) -> dict[str, Any]:
    return {
        "id": f"evt_{index}",
        "type": "payment.succeeded",
        "merchant_id": "mer_1",
        "livemode": False,
        "object": {"id": f"pay_{index}", "blob": "x" * blob_bytes},
        "create_time": datetime(2026, 1, 2, tzinfo=UTC).isoformat(),
    }


def test_event_calls__split_by_count_and_by_size_in_order() -> None:
    small = [event_request(_event_payload(i)) for i in range(EVENTS_PER_CALL_MAX + 5)]
    by_count = list(event_calls(small))
    large = [event_request(_event_payload(i, blob_bytes=300 * 1024)) for i in range(7)]
    by_size = list(event_calls(large))

    assert [len(call) for call in by_count] == [EVENTS_PER_CALL_MAX, 5]
    assert [r.id for call in by_count for r in call] == [r.id for r in small]
    assert [len(call) for call in by_size] == [3, 3, 1]
    assert all(sum(r.ByteSize() for r in call) <= EVENT_CALL_BYTES_MAX for call in by_size)
    assert [r.id for call in by_size for r in call] == [r.id for r in large]


def test_event_calls__an_event_over_the_size_goes_alone() -> None:
    huge = event_request(_event_payload(0, blob_bytes=2 * EVENT_CALL_BYTES_MAX))
    calls = list(event_calls([event_request(_event_payload(1)), huge]))

    assert [[r.id for r in call] for call in calls] == [["evt_1"], ["evt_0"]]


def test_hand_over__a_failed_batch_goes_one_at_a_time_so_one_bad_row_waits_alone() -> None:
    calls: list[list[str]] = []

    def handler(payloads: list[dict[str, Any]]) -> list[str | None]:
        calls.append([p["id"] for p in payloads])
        if any(p["id"] == "bad" for p in payloads):
            raise ValueError("bad row")
        return [None] * len(payloads)

    outcomes = hand_over(handler, [{"id": "a"}, {"id": "bad"}, {"id": "c"}])

    assert outcomes[0] is None and outcomes[2] is None
    assert outcomes[1] is not None and "bad row" in outcomes[1]
    assert calls == [["a", "bad", "c"], ["a"], ["bad"], ["c"]]


def test_hand_over__target_down_is_not_retried_row_by_row() -> None:
    calls: list[int] = []

    def handler(payloads: list[dict[str, Any]]) -> list[str | None]:
        calls.append(len(payloads))
        raise TargetDown("redis: connection refused")

    with pytest.raises(TargetDown):
        hand_over(handler, [{"id": "a"}, {"id": "b"}])
    assert calls == [2]


def test_job_requests__payment_drives_go_in_batches_and_other_jobs_alone() -> None:
    drives = [outbox.payment_drive_job(f"pay_{n}", 1)["payload"] for n in range(120)]
    redrive = outbox.payment_drive_job("pay_3", 2)["payload"]
    refund = outbox.job_row(
        func=outbox.PROCESS_REFUND, job_id="refund-re_1-process-1", args=["re_1"]
    )

    requests = job_requests([*drives[:10], refund["payload"], redrive, *drives[10:]])

    assert requests[0] == JobRequest(outbox.PROCESS_REFUND, "refund-re_1-process-1", ("re_1",))
    batches = requests[1:]
    assert [request.func for request in batches] == [outbox.PROCESS_PAYMENTS] * 3
    # Rows of 50 (PAYMENTS_PER_JOB_MAX) per job; the first 50 hold pay_3 twice.
    assert PAYMENTS_PER_JOB_MAX == 50
    assert [len(request.args[0]) for request in batches] == [49, 50, 21]
    # Every payment once, in the rows' order; pay_3's re-drive in the same batch is one drive.
    assert [pid for request in batches for pid in request.args[0]] == [
        f"pay_{n}" for n in range(120)
    ]
    # The same rows, the same job ids (a relay that dies before its commit collapses into them).
    again = job_requests([*drives[:10], refund["payload"], redrive, *drives[10:]])
    assert [request.job_id for request in again] == [request.job_id for request in requests]
    assert len({request.job_id for request in batches}) == 3
    fewer = job_requests(drives[:10])
    assert fewer[0].job_id != batches[0].job_id
