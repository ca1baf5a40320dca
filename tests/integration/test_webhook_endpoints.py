"""Webhook endpoints through the edge: create, read, list, update, delete, rotate; bad input."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from sqlalchemy import select

from services.common.db import transaction
from services.webhook.models import EndpointSecret
from tests.integration.conftest import MerchantKeys
from tests.rest_errors import error_code

URL = "https://hooks.example.com/paymesh"


def _auth(merchant: MerchantKeys) -> dict[str, str]:
    return {"X-API-Key": merchant.secret_key}


def _create(api: httpx.Client, merchant: MerchantKeys, **fields: Any) -> httpx.Response:
    body = {"url": URL, "enabled_events": ["payment.succeeded"], **fields}
    return api.post("/v1/webhook_endpoints", headers=_auth(merchant), json=body)


def _listed(api: httpx.Client, merchant: MerchantKeys) -> list[Any]:
    response = api.get("/v1/webhook_endpoints", headers=_auth(merchant))
    assert response.status_code == 200, response.text
    endpoints: list[Any] = response.json().get("webhook_endpoints", [])
    return endpoints


def test_create__returns_the_secret_once(api: httpx.Client, merchant: MerchantKeys) -> None:
    created = _create(api, merchant, description="orders")
    assert created.status_code == 200, created.text
    endpoint = created.json()

    shown = api.get(f"/v1/webhook_endpoints/{endpoint['id']}", headers=_auth(merchant)).json()

    assert endpoint["id"].startswith("we_")
    assert endpoint["secret"].startswith("whsec_")
    assert (endpoint["url"], endpoint["enabled_events"], endpoint["description"]) == (
        URL,
        ["payment.succeeded"],
        "orders",
    )
    assert endpoint["status"] == "enabled"
    assert shown.get("secret", "") == ""
    assert [e["id"] for e in _listed(api, merchant)] == [endpoint["id"]]
    assert all(e.get("secret", "") == "" for e in _listed(api, merchant))


def test_create__secret_is_encrypted_at_rest(
    api: httpx.Client, merchant: MerchantKeys, sessions: Any
) -> None:
    endpoint = _create(api, merchant).json()

    with transaction(sessions) as session:
        stored = session.scalars(
            select(EndpointSecret.ciphertext).where(EndpointSecret.endpoint_id == endpoint["id"])
        ).all()

    secret = endpoint["secret"].encode()
    assert len(stored) == 1
    assert secret not in stored[0]
    assert secret.removeprefix(b"whsec_") not in stored[0]


def test_create__star_subsumes_other_types(api: httpx.Client, merchant: MerchantKeys) -> None:
    created = _create(api, merchant, enabled_events=["payment.succeeded", "*"])

    assert created.json()["enabled_events"] == ["*"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"enabled_events": ["*"]}, "url"),
        ({"url": "", "enabled_events": ["*"]}, "url"),
        ({"url": "ftp://hooks.example.com/x", "enabled_events": ["*"]}, "url"),
        ({"url": "javascript:alert(1)", "enabled_events": ["*"]}, "url"),
        ({"url": "https://user:pw@hooks.example.com/", "enabled_events": ["*"]}, "url"),
        ({"url": "https://hooks.example.com/" + "a" * 2100, "enabled_events": ["*"]}, "url"),
        ({"url": URL}, "enabled_events"),
        ({"url": URL, "enabled_events": []}, "enabled_events"),
        ({"url": URL, "enabled_events": ["Not A Type"]}, "enabled_events"),
        ({"url": URL, "enabled_events": ["payment.succeeded"] * 65}, "enabled_events"),
        ({"url": URL, "enabled_events": ["payment.succeeded", "payment.sucess"]}, "enabled_events"),
        ({"url": URL, "enabled_events": ["*"], "description": "d" * 1001}, "description"),
    ],
)
def test_create__bad_input_is_400_and_stores_nothing(
    api: httpx.Client, merchant: MerchantKeys, body: dict[str, Any], field: str
) -> None:
    response = api.post("/v1/webhook_endpoints", headers=_auth(merchant), json=body)

    assert response.status_code == 400, response.text
    assert field in response.text
    assert _listed(api, merchant) == []


@pytest.mark.parametrize(
    "content",
    [
        b"{not json",
        b'{"url": 12, "enabled_events": ["*"]}',
        b'{"url": "https://x.example", "enabled_events": [1]}',
        b'{"url": "https://x.example", "enabled_events": {"a": 1}}',
    ],
)
def test_create__malformed_json_or_wrong_types_are_400(
    api: httpx.Client, merchant: MerchantKeys, content: bytes
) -> None:
    response = api.post(
        "/v1/webhook_endpoints",
        headers={**_auth(merchant), "Content-Type": "application/json"},
        content=content,
    )

    assert response.status_code == 400, response.text
    assert _listed(api, merchant) == []


def test_create__at_most_16_endpoints_per_mode(api: httpx.Client, merchant: MerchantKeys) -> None:
    for _ in range(16):
        assert _create(api, merchant).status_code == 200

    refused = _create(api, merchant)

    assert refused.status_code == 429
    assert error_code(refused) == "webhook_endpoint_limit"
    assert (
        len(
            api.get(
                "/v1/webhook_endpoints", params={"page_size": 100}, headers=_auth(merchant)
            ).json()["webhook_endpoints"]
        )
        == 16
    )


def test_list__paginates_newest_first(api: httpx.Client, merchant: MerchantKeys) -> None:
    ids = [_create(api, merchant).json()["id"] for _ in range(3)]

    first = api.get(
        "/v1/webhook_endpoints", params={"page_size": 2}, headers=_auth(merchant)
    ).json()
    second = api.get(
        "/v1/webhook_endpoints",
        params={"page_size": 2, "page_token": first["next_page_token"]},
        headers=_auth(merchant),
    ).json()

    assert [e["id"] for e in first["webhook_endpoints"] + second["webhook_endpoints"]] == ids[::-1]
    assert second.get("next_page_token", "") == ""
    assert (first["has_more"], second["has_more"]) == (True, False)


def test_update__changes_only_the_given_fields(api: httpx.Client, merchant: MerchantKeys) -> None:
    endpoint = _create(api, merchant, description="before").json()

    moved = api.patch(
        f"/v1/webhook_endpoints/{endpoint['id']}",
        headers=_auth(merchant),
        json={"url": "https://new.example.com/hook", "enabled_events": ["refund.succeeded"]},
    )
    disabled = api.patch(
        f"/v1/webhook_endpoints/{endpoint['id']}", headers=_auth(merchant), json={"enabled": False}
    )
    enabled = api.patch(
        f"/v1/webhook_endpoints/{endpoint['id']}", headers=_auth(merchant), json={"enabled": True}
    )

    assert moved.status_code == 200, moved.text
    assert (moved.json()["url"], moved.json()["enabled_events"], moved.json()["description"]) == (
        "https://new.example.com/hook",
        ["refund.succeeded"],
        "before",
    )
    assert (disabled.json()["status"], disabled.json()["disabled_reason"]) == (
        "disabled",
        "merchant",
    )
    assert enabled.json()["status"] == "enabled"
    assert enabled.json().get("disabled_reason", "") == ""
    assert enabled.json().get("secret", "") == ""


@pytest.mark.parametrize(
    "body",
    [
        {"url": "gopher://x.example"},
        {"enabled_events": ["BAD"]},
        {"enabled_events": ["refund.succeeded", "refund.created"]},
        {"description": "d" * 1001},
        {"enabled": "maybe"},
    ],
)
def test_update__bad_input_is_400_and_changes_nothing(
    api: httpx.Client, merchant: MerchantKeys, body: dict[str, Any]
) -> None:
    endpoint = _create(api, merchant).json()

    response = api.patch(
        f"/v1/webhook_endpoints/{endpoint['id']}", headers=_auth(merchant), json=body
    )
    shown = api.get(f"/v1/webhook_endpoints/{endpoint['id']}", headers=_auth(merchant)).json()

    assert response.status_code == 400, response.text
    assert (shown["url"], shown["enabled_events"], shown["status"]) == (
        URL,
        ["payment.succeeded"],
        "enabled",
    )


def test_delete__removes_the_endpoint(api: httpx.Client, merchant: MerchantKeys) -> None:
    endpoint = _create(api, merchant).json()

    deleted = api.delete(f"/v1/webhook_endpoints/{endpoint['id']}", headers=_auth(merchant))
    again = api.delete(f"/v1/webhook_endpoints/{endpoint['id']}", headers=_auth(merchant))

    assert deleted.status_code == 200
    assert deleted.json() == {"id": endpoint["id"], "deleted": True}
    assert again.status_code == 404
    assert (
        api.get(f"/v1/webhook_endpoints/{endpoint['id']}", headers=_auth(merchant)).status_code
        == 404
    )
    assert _listed(api, merchant) == []


def test_rotate__issues_a_new_secret(api: httpx.Client, merchant: MerchantKeys) -> None:
    endpoint = _create(api, merchant).json()

    rotated = api.post(
        f"/v1/webhook_endpoints/{endpoint['id']}/rotate_secret", headers=_auth(merchant), json={}
    )

    assert rotated.status_code == 200, rotated.text
    assert rotated.json()["secret"].startswith("whsec_")
    assert rotated.json()["secret"] != endpoint["secret"]


@pytest.mark.parametrize(
    ("method", "suffix"),
    [
        ("GET", ""),
        ("PATCH", ""),
        ("DELETE", ""),
        ("POST", "/rotate_secret"),
        ("GET", "/deliveries"),
        ("POST", "/replay"),
    ],
)
def test_other_merchants_endpoints_are_not_found(
    api: httpx.Client,
    merchant: MerchantKeys,
    other_merchant: MerchantKeys,
    method: str,
    suffix: str,
) -> None:
    endpoint = _create(api, merchant).json()
    body = {"since": "2020-01-01T00:00:00Z"} if suffix == "/replay" else {}

    theirs = api.request(
        method,
        f"/v1/webhook_endpoints/{endpoint['id']}{suffix}",
        headers=_auth(other_merchant),
        json=body if method not in {"GET", "DELETE"} else None,
    )
    unknown = api.request(
        method,
        f"/v1/webhook_endpoints/we_doesnotexist{suffix}",
        headers=_auth(merchant),
        json=body if method not in {"GET", "DELETE"} else None,
    )

    assert theirs.status_code == 404, theirs.text
    assert unknown.status_code == 404, unknown.text
    shown = api.get(f"/v1/webhook_endpoints/{endpoint['id']}", headers=_auth(merchant)).json()
    assert shown["status"] == "enabled"


def test_endpoints__need_a_secret_key(api: httpx.Client, merchant: MerchantKeys) -> None:
    anonymous = api.post("/v1/webhook_endpoints", json={"url": URL, "enabled_events": ["*"]})
    publishable = api.get("/v1/webhook_endpoints", headers={"X-API-Key": merchant.publishable_key})

    assert anonymous.status_code == 401
    assert publishable.status_code == 403


def test_deliveries__bad_filters_are_400(api: httpx.Client, merchant: MerchantKeys) -> None:
    endpoint = _create(api, merchant).json()
    path = f"/v1/webhook_endpoints/{endpoint['id']}/deliveries"

    assert api.get(path, params={"status": "bogus"}, headers=_auth(merchant)).status_code == 400
    assert api.get(path, params={"page_size": 1000}, headers=_auth(merchant)).status_code == 400
    assert api.get(path, params={"page_token": "%%%"}, headers=_auth(merchant)).status_code == 400
    assert api.get(path, headers=_auth(merchant)).json().get("deliveries", []) == []
