"""The relay's pieces that need no servers: backoff, event requests, idempotency helpers."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from google.protobuf.struct_pb2 import Struct

from services.common.errors import InvalidArgument
from services.payment.idempotency import request_hash, validate_key
from services.payment.payments import decode_page_token, encode_page_token
from services.payment.relay import event_request, retry_delay_s


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


def test_page_token__round_trips_and_rejects_garbage() -> None:
    moment = datetime(2026, 11, 26, 5, 0, tzinfo=UTC)
    assert decode_page_token(encode_page_token(moment, "pay_1")) == (moment, "pay_1")
    for garbage in ["", "abc", "e30", "!!!"]:
        with pytest.raises(InvalidArgument):
            decode_page_token(garbage)
