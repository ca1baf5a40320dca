"""Lists through the edge (issue 14, point 5): `has_more`, and created-time range filters named
the same on every list that has them (`created_gte`, `created_lt`: a half-open range)."""

from __future__ import annotations

import time

import httpx
import pytest

from services.admin import merchants
from services.common.db import transaction
from tests.integration.test_payments import created, violations
from tests.integration.webhook_receiver import create_endpoint

FUTURE = "2999-01-01T00:00:00Z"
PAST = "2000-01-01T00:00:00Z"


def test_payments__created_range_filters_and_pages_within_it(api: httpx.Client, sessions) -> None:  # type: ignore[no-untyped-def]
    with transaction(sessions) as session:
        shop = merchants.create_merchant(session, name="Range Shop")
        key = merchants.create_api_key(session, merchant_id=shop.id, mode="test", kind="secret").key
    headers = {"X-API-Key": key}
    first = created(api, key, amount=100)
    time.sleep(0.01)
    later = [created(api, key, amount=200 + n) for n in range(3)]
    since = later[0]["create_time"]

    def listed(**params: str | int) -> dict:  # type: ignore[type-arg]
        response = api.get("/v1/payments", params=params, headers=headers)
        assert response.status_code == 200, response.text
        return response.json()  # type: ignore[no-any-return]

    assert [p["id"] for p in listed(created_gte=since)["payments"]] == [
        p["id"] for p in reversed(later)
    ]
    assert [p["id"] for p in listed(created_lt=since)["payments"]] == [first["id"]]
    assert [p["id"] for p in listed(created_gte=PAST, created_lt=since)["payments"]] == [
        first["id"]
    ]
    # Pages stay within the range; a token is bound to the range it was issued under.
    page = listed(created_gte=since, page_size=2)
    assert page["has_more"] is True and len(page["payments"]) == 2
    rest = listed(created_gte=since, page_size=2, page_token=page["next_page_token"])
    assert [p["id"] for p in rest["payments"]] == [later[0]["id"]] and rest["has_more"] is False
    other_range = api.get(
        "/v1/payments",
        params={"page_token": page["next_page_token"], "page_size": 2},
        headers=headers,
    )
    assert other_range.status_code == 400
    assert "page_token" in violations(other_range)


@pytest.fixture
def list_paths(api: httpx.Client, merchant) -> list[str]:  # type: ignore[no-untyped-def]
    endpoint = create_endpoint(api, merchant.secret_key, "https://example.com/hook")
    return [
        "/v1/payments",
        "/v1/refunds",
        "/v1/events",
        "/v1/balance/entries",
        f"/v1/webhook_endpoints/{endpoint['id']}/deliveries",
    ]


def test_every_filtered_list__takes_the_same_created_range(
    api: httpx.Client, merchant, list_paths: list[str]
) -> None:  # type: ignore[no-untyped-def]
    headers = {"X-API-Key": merchant.secret_key}
    created(api, merchant.secret_key, amount=100)
    for path in list_paths:
        future = api.get(path, params={"created_gte": FUTURE}, headers=headers)
        assert future.status_code == 200, (path, future.text)
        body = future.json()
        items = [value for value in body.values() if isinstance(value, list)]
        assert items == [[]], path
        assert body["has_more"] is False, path

        empty = api.get(path, params={"created_gte": FUTURE, "created_lt": PAST}, headers=headers)
        assert empty.status_code == 400, (path, empty.text)
        assert "created_lt" in violations(empty), path

        malformed = api.get(path, params={"created_gte": "yesterday"}, headers=headers)
        assert malformed.status_code == 400, (path, malformed.text)
    payments = api.get("/v1/payments", params={"created_lt": FUTURE}, headers=headers).json()
    assert payments["payments"], "a range that holds them lists them"
