"""Idempotency-Key on every merchant and operator write, through the edge (issue 14, point 4).

The payment service's writes are tested in test_payments_idempotency.py; these are the webhook
service's (the key and the write in one transaction) and the admin service's (its own rows in
one transaction; the writes through another service claim the key on its own first).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import delete, func, select

from services.admin.models import AuditEntry, Merchant, ReconciliationRun
from services.admin.models import IdempotencyKey as AdminKey
from services.common.db import transaction
from services.webhook.models import Endpoint
from services.webhook.models import IdempotencyKey as WebhookKey
from tests.conftest import OperatorLogin
from tests.integration.conftest import MerchantKeys
from tests.integration.test_admin_views import SUCCESS_CARD, _iso, _pay
from tests.rest_errors import error_code

URL = "https://hooks.example.com/paymesh"
REPLAYED = "idempotent-replayed"


def _merchant_headers(merchant: MerchantKeys, key: str) -> dict[str, str]:
    return {"X-API-Key": merchant.secret_key, "Idempotency-Key": key}


def _operator_headers(login: OperatorLogin, key: str) -> dict[str, str]:
    return {**login.headers, "Idempotency-Key": key}


def _count(sessions, model: Any, *where: Any) -> int:  # type: ignore[no-untyped-def]
    with transaction(sessions) as session:
        return int(session.scalar(select(func.count()).select_from(model).where(*where)) or 0)


def _create_endpoint(api: httpx.Client, merchant: MerchantKeys, key: str, **fields: Any) -> Any:
    body = {"url": URL, "enabled_events": ["payment.succeeded"], **fields}
    return api.post("/v1/webhook_endpoints", json=body, headers=_merchant_headers(merchant, key))


def _replays(send: Callable[[], httpx.Response]) -> dict[str, Any]:
    """Sends a write twice with one key: the second answers the first's body, marked replayed."""
    first = send()
    assert first.status_code == 200, first.text
    assert REPLAYED not in first.headers
    second = send()
    assert second.status_code == 200, second.text
    assert second.headers.get(REPLAYED) == "true"
    assert second.json() == first.json()
    body: dict[str, Any] = first.json()
    return body


# The webhook service: merchants' writes.


def test_create_endpoint__a_retry_replays_the_same_endpoint_and_secret(
    api: httpx.Client, merchant: MerchantKeys, sessions
) -> None:  # type: ignore[no-untyped-def]
    endpoint = _replays(lambda: _create_endpoint(api, merchant, "ep-1", description="orders"))
    assert endpoint["secret"].startswith("whsec_")
    assert _count(sessions, Endpoint, Endpoint.merchant_id == merchant.id) == 1
    # The stored response shows the signing secret: it is kept sealed, not in the clear.
    with transaction(sessions) as session:
        row = session.scalars(select(WebhookKey).where(WebhookKey.merchant_id == merchant.id)).one()
        assert row.operation == "create_webhook_endpoint" and row.state == "completed"
        assert row.response is not None
        assert endpoint["secret"].encode() not in row.response
        assert endpoint["id"].encode() not in row.response


def test_create_endpoint__the_key_with_another_body_is_refused_and_writes_nothing(
    api: httpx.Client, merchant: MerchantKeys, sessions
) -> None:  # type: ignore[no-untyped-def]
    assert _create_endpoint(api, merchant, "ep-2").status_code == 200
    other = _create_endpoint(api, merchant, "ep-2", description="something else")
    assert other.status_code == 400, other.text
    assert error_code(other) == "idempotency_key_reused"
    assert _count(sessions, Endpoint, Endpoint.merchant_id == merchant.id) == 1


def test_create_endpoint__keys_are_each_merchants_own(
    api: httpx.Client, merchant: MerchantKeys, other_merchant: MerchantKeys
) -> None:
    mine = _create_endpoint(api, merchant, "shared-key")
    theirs = _create_endpoint(api, other_merchant, "shared-key")
    assert mine.status_code == theirs.status_code == 200
    assert REPLAYED not in theirs.headers
    assert mine.json()["id"] != theirs.json()["id"]


def test_create_endpoint__a_failed_write_is_not_replayed_and_frees_its_key(
    api: httpx.Client, merchant: MerchantKeys
) -> None:
    bad = _create_endpoint(api, merchant, "ep-3", url="ftp://hooks.example.com/paymesh")
    assert bad.status_code == 400, bad.text
    again = _create_endpoint(api, merchant, "ep-3", url="ftp://hooks.example.com/paymesh")
    assert again.status_code == 400 and REPLAYED not in again.headers
    # The same key may then carry the corrected request.
    good = _create_endpoint(api, merchant, "ep-3")
    assert good.status_code == 200 and REPLAYED not in good.headers


def test_update_rotate_delete__each_replays_under_its_key(
    api: httpx.Client, merchant: MerchantKeys, sessions
) -> None:  # type: ignore[no-untyped-def]
    endpoint = _create_endpoint(api, merchant, "setup").json()
    path = f"/v1/webhook_endpoints/{endpoint['id']}"

    updated = _replays(
        lambda: api.patch(
            path, json={"description": "v2"}, headers=_merchant_headers(merchant, "upd")
        )
    )
    assert updated["description"] == "v2"

    rotated = _replays(
        lambda: api.post(
            f"{path}/rotate_secret", json={}, headers=_merchant_headers(merchant, "rot")
        )
    )
    # One rotation: the retry shows the same new secret rather than rotating again.
    assert rotated["secret"].startswith("whsec_") and rotated["secret"] != endpoint["secret"]

    deleted = _replays(lambda: api.delete(path, headers=_merchant_headers(merchant, "del")))
    assert deleted == {"id": endpoint["id"], "deleted": True}
    # Without a key a second delete finds nothing.
    assert api.delete(path, headers={"X-API-Key": merchant.secret_key}).status_code == 404


def test_bad_idempotency_keys_are_refused_before_anything_is_written(
    api: httpx.Client, merchant: MerchantKeys, operator_login: OperatorLogin, sessions
) -> None:  # type: ignore[no-untyped-def]
    for bad in ("x" * 256, "a\tb"):
        response = _create_endpoint(api, merchant, bad)
        assert response.status_code == 400, response.text
        assert response.json()["error"]["param"] == "Idempotency-Key"
    assert _count(sessions, Endpoint, Endpoint.merchant_id == merchant.id) == 0
    name = f"Bad key {secrets.token_hex(4)}"
    refused = api.post(
        "/admin/merchants",
        json={"name": name},
        headers=_operator_headers(operator_login, "y" * 256),
    )
    assert refused.status_code == 400, refused.text
    assert _count(sessions, Merchant, Merchant.name == name) == 0


# The admin service: operators' writes of its own rows.


def test_create_merchant_and_api_key__replay_under_the_operators_key(
    api: httpx.Client, operator_login: OperatorLogin, sessions
) -> None:  # type: ignore[no-untyped-def]
    name = f"Keyed {secrets.token_hex(4)}"
    merchant = _replays(
        lambda: api.post(
            "/admin/merchants",
            json={"name": name},
            headers=_operator_headers(operator_login, "m-1"),
        )
    )
    assert _count(sessions, Merchant, Merchant.name == name) == 1
    created_lines = _count(
        sessions,
        AuditEntry,
        AuditEntry.action == "merchant.create",
        AuditEntry.target_id == merchant["id"],
    )
    assert created_lines == 1

    key = _replays(
        lambda: api.post(
            f"/admin/merchants/{merchant['id']}/api_keys",
            json={"mode": "test", "kind": "secret"},
            headers=_operator_headers(operator_login, "k-1"),
        )
    )
    # The retry shows the one key that was made, secret included; it is stored sealed.
    assert key["key"].startswith("sk_test_")
    listed = api.get(
        f"/admin/merchants/{merchant['id']}/api_keys", headers=operator_login.headers
    ).json()["api_keys"]
    assert [k["id"] for k in listed] == [key["id"]]
    with transaction(sessions) as session:
        row = session.scalars(
            select(AdminKey).where(AdminKey.operator_id == operator_login.id, AdminKey.key == "k-1")
        ).one()
        assert row.response is not None and key["key"].encode() not in row.response
        assert row.livemode is False


def test_operator_keys__are_each_operators_own(
    api: httpx.Client, operator_login: OperatorLogin, sessions
) -> None:  # type: ignore[no-untyped-def]
    from tests.conftest import _operator_login

    second = _operator_login(sessions, api, "operator")
    name = f"Two operators {secrets.token_hex(4)}"
    for login in (operator_login, second):
        response = api.post(
            "/admin/merchants", json={"name": name}, headers=_operator_headers(login, "same")
        )
        assert response.status_code == 200 and REPLAYED not in response.headers
    assert _count(sessions, Merchant, Merchant.name == name) == 2


# The admin service: writes through another service (claimed on their own first).


def test_reconcile__a_retry_replays_the_run_and_keeps_one(
    api: httpx.Client, operator_login: OperatorLogin, sessions
) -> None:  # type: ignore[no-untyped-def]
    now = datetime.now(UTC)
    body = {"start_time": _iso(now - timedelta(hours=1)), "end_time": _iso(now)}
    run = _replays(
        lambda: api.post(
            "/admin/reconciliation", json=body, headers=_operator_headers(operator_login, "r-1")
        )
    )
    assert (
        _count(sessions, ReconciliationRun, ReconciliationRun.operator_id == operator_login.id) == 1
    )
    assert run["operator_id"] == operator_login.id


def test_operator_refund__a_retry_replays_and_audits_once(
    api: httpx.Client, operator_login: OperatorLogin, merchant: MerchantKeys, sessions
) -> None:  # type: ignore[no-untyped-def]
    paid = _pay(api, merchant.secret_key, amount=700, currency="EUR", card=SUCCESS_CARD)
    path = f"/admin/payments/{paid['id']}/refund"
    refund = _replays(
        lambda: api.post(
            path, json={"amount": 200}, headers=_operator_headers(operator_login, "ref-1")
        )
    )
    assert refund["amount"] == 200
    refunds = api.get(
        "/v1/refunds",
        params={"payment_id": paid["id"]},
        headers={"X-API-Key": merchant.secret_key},
    ).json()["refunds"]
    assert [r["id"] for r in refunds] == [refund["id"]]
    audited = _count(
        sessions,
        AuditEntry,
        AuditEntry.action == "payment.refund",
        AuditEntry.operator_id == operator_login.id,
    )
    assert audited == 1


def test_remote_write__a_failed_call_frees_its_key(
    api: httpx.Client, operator_login: OperatorLogin, sessions
) -> None:  # type: ignore[no-untyped-def]
    unknown = api.post(
        "/admin/payments/pay_unknown/refund",
        json={},
        headers=_operator_headers(operator_login, "ref-unknown"),
    )
    assert unknown.status_code == 404, unknown.text
    with transaction(sessions) as session:
        left = session.scalars(
            select(AdminKey).where(AdminKey.operator_id == operator_login.id)
        ).all()
    assert left == []


def _leave_claim(sessions, operator_id: str, key: str, *, age_s: float) -> None:  # type: ignore[no-untyped-def]
    """A key as an admin process that died between the remote call and its finish left it."""
    now = datetime.now(UTC)
    with transaction(sessions) as session:
        session.add(
            AdminKey(
                operator_id=operator_id,
                livemode=False,
                operation="reconcile",
                key=key,
                request_hash="0" * 64,
                state="in_progress",
                response=None,
                lock_time=now - timedelta(seconds=age_s),
                create_time=now - timedelta(seconds=age_s),
                expire_time=now + timedelta(hours=24),
            )
        )


@pytest.mark.parametrize("age_s", [5.0, 3600.0])
def test_remote_write__a_claim_left_by_a_dead_process_is_in_use_then_taken_over(
    api: httpx.Client, operator_login: OperatorLogin, sessions, age_s: float
) -> None:  # type: ignore[no-untyped-def]
    _leave_claim(sessions, operator_login.id, "crashed", age_s=age_s)
    now = datetime.now(UTC)
    body = {"start_time": _iso(now - timedelta(hours=1)), "end_time": _iso(now)}
    response = api.post(
        "/admin/reconciliation", json=body, headers=_operator_headers(operator_login, "crashed")
    )
    runs = _count(sessions, ReconciliationRun, ReconciliationRun.operator_id == operator_login.id)
    if age_s < 60:
        # Within the lock timeout (twice the call's) the first may still run: 409, nothing run.
        assert response.status_code == 409, response.text
        assert error_code(response) == "idempotency_key_in_use"
        assert runs == 0
    else:
        # Past it, the retry takes the key over and runs the write once.
        assert response.status_code == 200, response.text
        assert runs == 1
        again = api.post(
            "/admin/reconciliation",
            json=body,
            headers=_operator_headers(operator_login, "crashed"),
        )
        assert again.headers.get(REPLAYED) == "true" and again.json() == response.json()
    with transaction(sessions) as session:
        session.execute(delete(AdminKey).where(AdminKey.operator_id == operator_login.id))
