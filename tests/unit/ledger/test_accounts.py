"""Paging rules of the ledger's lists."""

from __future__ import annotations

import pytest

from services.common.errors import InvalidArgument
from services.common.pages import page_size
from services.ledger.accounts import _decode_token, _encode_token
from services.ledger.errors import InvalidPageToken


def test_page_size_defaults_and_bounds() -> None:
    assert page_size(0) == 20
    assert page_size(100) == 100
    for bad in (-1, 101, 2**31 - 1):
        with pytest.raises(InvalidArgument):
            page_size(bad)


def test_tokens_belong_to_one_list() -> None:
    token = _encode_token("accounts", "acct_1")
    assert _decode_token(token, "accounts") == "acct_1"
    assert _decode_token("", "accounts") is None
    for bad in (token, "%%%", "YWJj", "x" * 1000):
        with pytest.raises(InvalidPageToken):
            _decode_token(bad, "account_entries")
