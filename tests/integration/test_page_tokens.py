"""Page tokens through the edge: opaque, and refused when tampered with, foreign or forged."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from datetime import UTC, datetime

import grpc
import httpx
import pytest
from paymesh.ledger.v1 import ledger_internal_pb2_grpc
from sqlalchemy import select

from services.common.db import transaction
from services.common.pages import NONCE_BYTES
from services.ledger.models import Entry
from services.runtime.platform import LocalPlatform
from tests.integration.conftest import MerchantKeys
from tests.integration.test_ledger import capture_request
from tests.integration.test_payments import created, violations


@pytest.fixture(scope="module")
def ledger(platform: LocalPlatform) -> Iterator[ledger_internal_pb2_grpc.LedgerInternalServiceStub]:
    """The ledger's internal service, to post entries without running payments."""
    with grpc.insecure_channel(platform.settings.target("ledger")) as channel:
        yield ledger_internal_pb2_grpc.LedgerInternalServiceStub(channel)


def _raw(token: str) -> bytes:
    """What a client gets by base64-decoding a token."""
    return base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))


def _payments_page(
    api: httpx.Client, merchant: MerchantKeys, **params: str | int
) -> httpx.Response:
    return api.get("/v1/payments", params=params, headers={"X-API-Key": merchant.secret_key})


def _refused(response: httpx.Response) -> None:
    assert response.status_code == 400, response.text
    assert "page_token" in violations(response)


@pytest.fixture
def token(api: httpx.Client, merchant: MerchantKeys) -> str:
    """The next-page token of the merchant's first page of two payments (of three)."""
    for amount in (100, 200, 300):
        created(api, merchant.secret_key, amount=amount)
    page = _payments_page(api, merchant, page_size=2)
    assert page.status_code == 200, page.text
    token: str = page.json()["next_page_token"]
    assert token
    return token


def test_balance_entries_token__reveals_no_entry_count(
    api: httpx.Client,
    ledger: ledger_internal_pb2_grpc.LedgerInternalServiceStub,
    sessions,
    merchant: MerchantKeys,
) -> None:  # type: ignore[no-untyped-def]
    for amount in (100, 200, 300):
        ledger.PostTransaction(capture_request(merchant.id, amount, 1))
    headers = {"X-API-Key": merchant.secret_key}
    page = api.get("/v1/balance/entries", params={"page_size": 2}, headers=headers).json()
    with transaction(sessions) as session:
        seq = session.scalar(select(Entry.seq).where(Entry.id == page["entries"][-1]["id"]))

    raw = _raw(page["next_page_token"])

    # The old token was "balance_entries:<seq>", the entry's rank among every merchant's.
    for clear in (b"balance_entries", f":{seq}".encode(), merchant.id.encode()):
        assert clear not in raw
    with pytest.raises(UnicodeDecodeError):
        raw.decode()
    rest = api.get(
        "/v1/balance/entries",
        params={"page_size": 2, "page_token": page["next_page_token"]},
        headers=headers,
    ).json()
    assert [e["amount"] for e in rest["entries"]] == [99]


def test_payments_token__reveals_no_id_or_time(
    api: httpx.Client, merchant: MerchantKeys, token: str
) -> None:
    last_shown = _payments_page(api, merchant, page_size=2).json()["payments"][-1]

    raw = _raw(token)

    for clear in (last_shown["id"], merchant.id, str(datetime.now(UTC).year)):
        assert clear.encode() not in raw
    rest = _payments_page(api, merchant, page_size=2, page_token=token)
    assert [p["amount"] for p in rest.json()["payments"]] == [100]


def test_payments_token__tampered_is_400(
    api: httpx.Client, merchant: MerchantKeys, token: str
) -> None:
    # One bit of a byte past the nonce: in a readable token (or one encrypted without a tag)
    # it is a digit of the position's time and turns into another digit, which would open.
    raw = bytearray(_raw(token))
    raw[NONCE_BYTES + 2] ^= 1
    tampered = base64.urlsafe_b64encode(bytes(raw)).decode().rstrip("=")

    _refused(_payments_page(api, merchant, page_token=tampered))


def test_payments_token__of_another_merchant_is_400(
    api: httpx.Client, merchant: MerchantKeys, other_merchant: MerchantKeys, token: str
) -> None:
    created(api, other_merchant.secret_key, amount=400)

    _refused(_payments_page(api, other_merchant, page_token=token))


def test_payments_token__of_another_list_or_other_filters_is_400(
    api: httpx.Client, merchant: MerchantKeys, token: str
) -> None:
    refunds = api.get(
        "/v1/refunds", params={"page_token": token}, headers={"X-API-Key": merchant.secret_key}
    )
    _refused(refunds)
    _refused(_payments_page(api, merchant, page_token=token, status="succeeded"))


def test_payments_token__forged_with_a_3000_character_id_is_400(
    api: httpx.Client, merchant: MerchantKeys
) -> None:
    position = [datetime.now(UTC).isoformat(), "pay_" + "x" * 2996]
    forged = base64.urlsafe_b64encode(json.dumps(position).encode()).decode().rstrip("=")

    _refused(_payments_page(api, merchant, page_token=forged))
