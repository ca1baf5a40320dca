"""Page sizes and page tokens, shared by every service's lists."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime

import pytest

from services.common.errors import InvalidArgument
from services.common.pages import TOKEN_LENGTH_MAX, PageTokens, Scope, page_size

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
