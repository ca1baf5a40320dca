"""Page sizes and page tokens, shared by every service's lists."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from services.common.errors import InvalidArgument
from services.common.pages import decode_token, encode_token, page_size


def test_page_tokens__round_trip_and_forgeries_are_refused() -> None:
    when = datetime(2026, 11, 26, 5, 0, tzinfo=UTC)

    assert decode_token(encode_token(when, "evt_1")) == (when, "evt_1")
    assert decode_token("") is None
    for forged in ["%%%", "abc", "e30", "!!!", "bm90IGpzb24", "WzEsMl0"]:
        with pytest.raises(InvalidArgument):
            decode_token(forged)


def test_page_size__defaults_and_bounds() -> None:
    assert page_size(0) == 20
    assert page_size(100) == 100
    assert page_size(0, maximum=1000, default=500) == 500
    assert page_size(1000, maximum=1000) == 1000
    for bad in (-1, 101, 2**31 - 1):
        with pytest.raises(InvalidArgument):
            page_size(bad)
