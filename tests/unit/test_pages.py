"""Page sizes and page tokens, shared by every service's lists."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime

import pytest
from google.protobuf import descriptor_pb2
from paymesh.payment.v1 import payment_pb2

from services.common.errors import InvalidArgument
from services.common.pages import (
    ANY_TIME,
    TOKEN_LENGTH_MAX,
    CreatedRange,
    PageTokens,
    Scope,
    next_page,
    page_size,
)
from tests.security.contracts import DESCRIPTOR_SET

WHEN = datetime(2026, 11, 26, 5, 0, tzinfo=UTC)
MINE: Scope = {"merchant_id": "mer_mine", "livemode": False}


def _refused(
    tokens: PageTokens, token: str, *, list_name: str = "payments", scope: Scope = MINE
) -> None:
    with pytest.raises(InvalidArgument) as raised:
        tokens.open(token, list_name=list_name, scope=scope)
    assert [violation.field for violation in raised.value.violations] == ["page_token"]


def test_page_tokens__round_trip() -> None:
    tokens = PageTokens("key")

    token = tokens.seal_after(WHEN, "pay_1", list_name="payments", scope=MINE)
    assert tokens.open_after(token, list_name="payments", scope=MINE) == (WHEN, "pay_1")
    assert tokens.open_after("", list_name="payments", scope=MINE) is None
    sealed = tokens.seal([7], list_name="balance_entries", scope=MINE)
    assert tokens.open(sealed, list_name="balance_entries", scope=MINE) == [7]


def test_page_tokens__reveal_no_position() -> None:
    tokens = PageTokens("key")
    token = tokens.seal([7], list_name="balance_entries", scope=MINE)
    raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))

    for clear in (b"balance_entries", b"[7]", b"mer_mine"):
        assert clear not in raw
    # The same position sealed twice gives two tokens (a fresh nonce), so equal tokens tell
    # nothing either.
    assert token != tokens.seal([7], list_name="balance_entries", scope=MINE)


def test_page_tokens__tampered_foreign_or_forged_are_refused() -> None:
    tokens = PageTokens("key")
    token = tokens.seal_after(WHEN, "pay_1", list_name="payments", scope=MINE)
    # What a token looked like before: readable base64 of the position.
    forged = base64.urlsafe_b64encode(json.dumps([WHEN.isoformat(), "p" * 3000]).encode()).decode()

    for bad in [
        "%%%",
        "abc",
        "e30",
        "!!!",
        "é" * 20,
        forged,
        "A" * (TOKEN_LENGTH_MAX + 1),
    ]:
        _refused(tokens, bad)
    _refused(tokens, token, scope={"merchant_id": "mer_other", "livemode": False})
    _refused(tokens, token, scope={**MINE, "livemode": True})
    _refused(tokens, token, list_name="refunds")
    _refused(PageTokens("another key"), token)


def test_page_tokens__a_one_bit_change_anywhere_is_refused() -> None:
    """Flipping a byte's lowest bit turns a digit into another digit: a readable or merely
    encrypted (unauthenticated) position would still open, at another place in the list."""
    tokens = PageTokens("key")
    token = tokens.seal_after(WHEN, "pay_1", list_name="payments", scope=MINE)
    raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))

    for index in range(len(raw)):
        changed = bytearray(raw)
        changed[index] ^= 1
        _refused(tokens, base64.urlsafe_b64encode(bytes(changed)).decode().rstrip("="))


def test_page_size__defaults_and_bounds() -> None:
    assert page_size(0) == 20
    assert page_size(100) == 100
    assert page_size(0, maximum=1000, default=500) == 500
    assert page_size(1000, maximum=1000) == 1000
    for bad in (-1, 101, 2**31 - 1):
        with pytest.raises(InvalidArgument):
            page_size(bad)


def test_every_list_response_says_whether_another_page_follows() -> None:
    # Issue 14, point 5: `has_more` beside `next_page_token` on every list of every service.
    files = descriptor_pb2.FileDescriptorSet()
    files.ParseFromString(DESCRIPTOR_SET.read_bytes())
    lists = [
        (file.package, message)
        for file in files.file
        if file.package.startswith("paymesh.")
        for message in file.message_type
        if any(field.name == "next_page_token" for field in message.field)
    ]
    assert len(lists) >= 17
    for package, message in lists:
        has_more = [field for field in message.field if field.name == "has_more"]
        assert [(f.type, f.label) for f in has_more] == [
            (descriptor_pb2.FieldDescriptorProto.TYPE_BOOL, 1)
        ], f"{package}.{message.name}"


@pytest.mark.parametrize(("token", "more"), [("", False), ("abc", True)])
def test_next_page__has_more_exactly_when_a_token_is_issued(token: str, more: bool) -> None:
    assert next_page(token) == {"next_page_token": token, "has_more": more}


def test_created_range__grpc_callers_get_the_same_refusals_as_the_edge() -> None:
    # The edge refuses a malformed time in a query; a gRPC caller can send any seconds.
    out_of_range = payment_pb2.ListPaymentsRequest()
    out_of_range.created_gte.seconds = 10**12  # year 33,658
    with pytest.raises(InvalidArgument) as raised:
        CreatedRange.of(out_of_range)
    assert [v.field for v in raised.value.violations] == ["created_gte"]
    empty = payment_pb2.ListPaymentsRequest()
    empty.created_gte.FromDatetime(WHEN)
    empty.created_lt.FromDatetime(WHEN)
    with pytest.raises(InvalidArgument) as raised:
        CreatedRange.of(empty)
    assert [v.field for v in raised.value.violations] == ["created_lt"]
    assert CreatedRange.of(payment_pb2.ListPaymentsRequest()) == ANY_TIME
    bounded = payment_pb2.ListPaymentsRequest()
    bounded.created_lt.FromDatetime(WHEN)
    assert CreatedRange.of(bounded) == CreatedRange(None, WHEN)
    assert CreatedRange.of(bounded).scope() != ANY_TIME.scope(), "a token is bound to its range"
