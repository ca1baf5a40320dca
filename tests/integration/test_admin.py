"""The admin API through Envoy: sessions, roles, merchants and keys, the audit log."""

from __future__ import annotations

import secrets
import time
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from sqlalchemy import func, select, text, update
from sqlalchemy.exc import DBAPIError

from services.admin import operators
from services.admin.models import ApiKey, AuditEntry, Merchant, OperatorSession
from services.common.db import transaction
from services.runtime.platform import LocalPlatform
from tests.integration.conftest import MerchantKeys, OperatorLogin
from tests.rest_errors import error_code

REVOCATION_DEADLINE_S = 15.0


def _count(sessions, model) -> int:  # type: ignore[no-untyped-def]
    with transaction(sessions) as session:
        return int(session.scalar(select(func.count()).select_from(model)) or 0)


def _audit(sessions, *, operator_id: str, action: str) -> list[AuditEntry]:  # type: ignore[no-untyped-def]
    with transaction(sessions) as session:
        return list(
            session.scalars(
                select(AuditEntry)
                .where(AuditEntry.operator_id == operator_id, AuditEntry.action == action)
                .order_by(AuditEntry.id)
            )
        )


def _audit_via_api(
    api: httpx.Client, login: OperatorLogin, *, action: str, target_id: str = ""
) -> list[dict[str, object]]:
    response = api.get(
        "/admin/audit_log",
        params={"operator_id": login.id, "action": action, "target_id": target_id},
        headers=login.headers,
    )
    assert response.status_code == 200, response.text
    entries: list[dict[str, object]] = response.json()["entries"]
    return entries


# Sessions.


def test_login__returns_a_session_and_is_audited_with_client_address(
    api: httpx.Client, operator_login: OperatorLogin
) -> None:
    response = api.post(
        "/admin/login",
        json={"email": operator_login.email.upper(), "password": operator_login.password},
        headers={"User-Agent": "admin-test/1.0"},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["session_token"].startswith("pms_")
    assert body["role"] == "operator"
    expire = datetime.fromisoformat(body["expire_time"].replace("Z", "+00:00"))
    assert timedelta(hours=11) < expire - datetime.now(UTC) <= timedelta(hours=12)

    logins = _audit_via_api(api, operator_login, action="login")
    assert len(logins) == 2  # the fixture's and this one
    newest = logins[0]
    assert newest["operator_email"] == operator_login.email
    assert newest["client_ip"] == "127.0.0.1"
    assert newest["user_agent"] == "admin-test/1.0"
    assert str(newest["target_id"]).startswith("ses_")


def test_session_token_is_stored_only_as_a_hash(
    sessions,  # type: ignore[no-untyped-def]
    operator_login: OperatorLogin,
) -> None:
    with transaction(sessions) as session:
        stored = session.scalars(
            select(OperatorSession.token_hash).where(
                OperatorSession.operator_id == operator_login.id
            )
        ).all()
    assert len(stored) == 1
    assert operator_login.token not in stored[0]
    assert len(stored[0]) == 64


def test_login__wrong_password_is_401_then_429_per_email_and_address(
    api: httpx.Client,
    platform: LocalPlatform,
    sessions,  # type: ignore[no-untyped-def]
) -> None:
    email = f"throttled-{secrets.token_hex(4)}@paymesh.test"
    with transaction(sessions) as session:
        operator_id = operators.create_operator(
            session, email=email, password="right-password", role="viewer"
        ).id
    for _ in range(5):
        wrong = api.post("/admin/login", json={"email": email, "password": "wrong-password"})
        assert wrong.status_code == 401
        assert error_code(wrong) == "invalid_credentials"
    # A forged X-Forwarded-For does not buy new attempts: only the edge's own entry counts.
    for headers in ({}, {"X-Forwarded-For": "203.0.113.9"}):
        limited = api.post(
            "/admin/login", json={"email": email, "password": "right-password"}, headers=headers
        )
        assert limited.status_code == 429, limited.text
        assert error_code(limited) == "login_rate_limited"
        assert "too many failed logins" in limited.json()["error"]["message"]
        # As the API's 429s do: when the oldest failure leaves the window, in seconds.
        retry_after = int(limited.headers["retry-after"])
        assert 1 <= retry_after <= platform.settings.admin_login_failure_window_s
    assert len(_audit(sessions, operator_id=operator_id, action="login_failed")) == 5
    assert _audit(sessions, operator_id=operator_id, action="login") == []


def test_login__unknown_email_gets_the_same_answer_as_a_wrong_password(
    api: httpx.Client,
) -> None:
    response = api.post(
        "/admin/login", json={"email": "nobody@paymesh.test", "password": "whatever-123"}
    )
    assert response.status_code == 401
    assert error_code(response) == "invalid_credentials"
    assert response.json()["error"]["message"] == "the email or password is wrong"


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"email": "a@b.c"},
        {"password": "something-long"},
        {"email": "", "password": "something-long"},
        {"email": "a@b.c", "password": "x" * 2000},
        {"email": "x" * 400 + "@b.c", "password": "something-long"},
    ],
)
def test_login__missing_or_oversized_fields_are_400(
    api: httpx.Client,
    sessions,  # type: ignore[no-untyped-def]
    body: dict[str, str],
) -> None:
    before = _count(sessions, OperatorSession)
    response = api.post("/admin/login", json=body)
    assert response.status_code == 400, response.text
    assert error_code(response) == "invalid_argument"
    assert _count(sessions, OperatorSession) == before


@pytest.mark.parametrize(
    "content", ['{"email": ', '{"email": 5, "password": []}', "not json", '["a"]']
)
def test_login__malformed_json_is_400(api: httpx.Client, content: str) -> None:
    response = api.post(
        "/admin/login", content=content, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 400, response.text


def test_admin_methods__without_a_valid_session_are_401(api: httpx.Client) -> None:
    for headers in (
        {},
        {"Authorization": "Bearer pms_made-up-token"},
        {"Authorization": "Bearer " + "x" * 300},
        {"Authorization": "Basic abc"},
    ):
        response = api.get("/admin/merchants", headers=headers)
        assert response.status_code == 401, headers
        assert error_code(response) == "session_invalid"


def test_admin_methods__merchant_keys_are_403(api: httpx.Client, merchant: MerchantKeys) -> None:
    for headers in (
        {"X-API-Key": merchant.secret_key},
        {"Authorization": f"Bearer {merchant.secret_key}"},
        {"Authorization": f"Bearer {merchant.publishable_key}"},
        {"X-API-Key": merchant.publishable_key},
    ):
        for method, path in (
            ("GET", "/admin/merchants"),
            ("GET", "/admin/overview"),
            ("POST", "/admin/merchants"),
            ("GET", "/admin/audit_log"),
        ):
            # A GET takes no body: the edge would refuse its members before auth (400).
            body = {"name": "x"} if method == "POST" else None
            response = api.request(method, path, headers=headers, json=body)
            assert response.status_code == 403, (headers, path)
            assert error_code(response) == "operator_session_required"


def test_expired_session_is_401(
    api: httpx.Client,
    sessions,  # type: ignore[no-untyped-def]
    viewer_login: OperatorLogin,
) -> None:
    assert api.get("/admin/merchants", headers=viewer_login.headers).status_code == 200
    with transaction(sessions) as session:
        session.execute(
            update(OperatorSession)
            .where(OperatorSession.operator_id == viewer_login.id)
            .values(expire_time=datetime.now(UTC) - timedelta(seconds=1))
        )
    response = api.get("/admin/merchants", headers=viewer_login.headers)
    assert response.status_code == 401
    assert error_code(response) == "session_invalid"


def test_logout__revokes_the_session_at_once_and_is_audited(
    api: httpx.Client, viewer_login: OperatorLogin
) -> None:
    other = api.post(
        "/admin/login", json={"email": viewer_login.email, "password": viewer_login.password}
    ).json()["session_token"]
    # No body at all, as a browser's fetch may send it.
    response = api.post("/admin/logout", headers=viewer_login.headers)
    assert response.status_code == 200, response.text
    assert api.get("/admin/merchants", headers=viewer_login.headers).status_code == 401
    assert api.post("/admin/logout", json={}, headers=viewer_login.headers).status_code == 401
    # Another session of the same operator lives on.
    still = {"Authorization": f"Bearer {other}"}
    assert api.get("/admin/merchants", headers=still).status_code == 200
    logouts = _audit_via_api(
        api, OperatorLogin(viewer_login.id, "", "", "", other), action="logout"
    )
    assert len(logouts) == 1
    assert logouts[0]["client_ip"] == "127.0.0.1"


# Roles.


def test_viewer__reads_but_every_write_is_403_and_changes_nothing(
    api: httpx.Client,
    sessions,  # type: ignore[no-untyped-def]
    viewer_login: OperatorLogin,
    merchant: MerchantKeys,
) -> None:
    with transaction(sessions) as session:
        key_id = session.scalars(
            select(ApiKey.id).where(ApiKey.merchant_id == merchant.id).limit(1)
        ).one()
    merchants_before = _count(sessions, Merchant)
    keys_before = _count(sessions, ApiKey)
    writes = [
        ("/admin/merchants", {"name": "Nope"}),
        (f"/admin/merchants/{merchant.id}/fees", {"fee_bps": 1, "fee_fixed": 1}),
        (f"/admin/merchants/{merchant.id}/api_keys", {"mode": "test", "kind": "secret"}),
        (f"/admin/api_keys/{key_id}/revoke", {}),
        ("/admin/payments/pay_whatever/refund", {"idempotency_key": "k"}),
        ("/admin/webhooks/replay/job_whatever", {}),
        ("/admin/webhooks/replay", {}),
        (
            "/admin/reconciliation",
            {"start_time": "2026-01-01T00:00:00Z", "end_time": "2026-01-02T00:00:00Z"},
        ),
    ]
    for path, body in writes:
        response = api.post(path, json=body, headers=viewer_login.headers)
        assert response.status_code == 403, (path, response.text)
        assert error_code(response) == "operator_role_required"
    assert _count(sessions, Merchant) == merchants_before
    assert _count(sessions, ApiKey) == keys_before
    with transaction(sessions) as session:
        assert session.get(ApiKey, key_id).revoke_time is None  # type: ignore[union-attr]
        assert session.get(Merchant, merchant.id).fee_bps == 290  # type: ignore[union-attr]
    for path in (
        "/admin/merchants",
        f"/admin/merchants/{merchant.id}",
        f"/admin/merchants/{merchant.id}/api_keys",
        "/admin/audit_log",
        "/admin/reconciliation",
    ):
        response = api.get(path, headers=viewer_login.headers)
        assert response.status_code == 200, (path, response.text)


# Merchants and keys.


def test_create_get_and_list_merchants_with_paging(
    api: httpx.Client,
    operator_login: OperatorLogin,
    sessions,  # type: ignore[no-untyped-def]
) -> None:
    created = []
    for index in range(3):
        response = api.post(
            "/admin/merchants",
            json={"name": f"  Shop {index}  ", "fee_bps": 150 + index, "fee_fixed": 25},
            headers=operator_login.headers,
        )
        assert response.status_code == 200, response.text
        created.append(response.json())
    first = created[0]
    assert first["id"].startswith("mer_")
    assert first["name"] == "Shop 0"
    assert first["fee_bps"] == 150
    assert first["fee_fixed"] == 25

    fetched = api.get(f"/admin/merchants/{first['id']}", headers=operator_login.headers)
    assert fetched.status_code == 200
    assert fetched.json() == first

    default = api.post(
        "/admin/merchants", json={"name": "Defaults"}, headers=operator_login.headers
    ).json()
    assert (default["fee_bps"], default["fee_fixed"]) == (290, 30)

    page = api.get(
        "/admin/merchants", params={"page_size": 2}, headers=operator_login.headers
    ).json()
    assert [m["id"] for m in page["merchants"]] == [default["id"], created[2]["id"]]
    assert page["next_page_token"]
    following = api.get(
        "/admin/merchants",
        params={"page_size": 2, "page_token": page["next_page_token"]},
        headers=operator_login.headers,
    ).json()
    assert [m["id"] for m in following["merchants"]] == [created[1]["id"], created[0]["id"]]

    audited = _audit_via_api(api, operator_login, action="merchant.create")
    assert {e["target_id"] for e in audited} == {m["id"] for m in [*created, default]}
    assert audited[-1]["details"] == {"name": "Shop 0", "fee_bps": "150", "fee_fixed": "25"}


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"name": "   "},
        {"name": "x" * 201},
        {"name": "Shop", "fee_bps": 10001},
        {"name": "Shop", "fee_bps": -1},
        {"name": "Shop", "fee_fixed": "-5"},
        {"name": "Shop", "fee_fixed": "1000001"},
        {"name": "Shop", "fee_bps": "many"},
        {"name": "Shop", "fee_bps": 99999999999},
        {"name": ["Shop"]},
    ],
)
def test_create_merchant__bad_input_is_400_and_stores_nothing(
    api: httpx.Client,
    operator_login: OperatorLogin,
    sessions,  # type: ignore[no-untyped-def]
    body: dict[str, object],
) -> None:
    before = _count(sessions, Merchant)
    response = api.post("/admin/merchants", json=body, headers=operator_login.headers)
    assert response.status_code == 400, response.text
    assert _count(sessions, Merchant) == before


def test_unknown_ids_are_404(api: httpx.Client, operator_login: OperatorLogin) -> None:
    headers = operator_login.headers
    for method, path, body in (
        ("GET", "/admin/merchants/mer_unknown", None),
        ("GET", "/admin/merchants/mer_unknown/api_keys", None),
        ("POST", "/admin/merchants/mer_unknown/api_keys", {"mode": "test", "kind": "secret"}),
        ("POST", "/admin/merchants/mer_unknown/fees", {"fee_bps": 1, "fee_fixed": 1}),
        ("POST", "/admin/api_keys/key_unknown/revoke", {}),
        ("GET", "/admin/reconciliation/rec_unknown", None),
    ):
        response = api.request(method, path, json=body, headers=headers)
        assert response.status_code == 404, (path, response.text)


def test_list_merchants__bad_paging_is_400(
    api: httpx.Client, operator_login: OperatorLogin
) -> None:
    for params in ({"page_size": 101}, {"page_size": -1}, {"page_token": "garbage!"}):
        response = api.get("/admin/merchants", params=params, headers=operator_login.headers)
        assert response.status_code == 400, (params, response.text)


def test_update_fees__changes_the_schedule_and_audits_old_and_new(
    api: httpx.Client, operator_login: OperatorLogin, merchant: MerchantKeys
) -> None:
    response = api.post(
        f"/admin/merchants/{merchant.id}/fees",
        json={"fee_bps": 100, "fee_fixed": 10},
        headers=operator_login.headers,
    )
    assert response.status_code == 200, response.text
    assert (response.json()["fee_bps"], response.json()["fee_fixed"]) == (100, 10)
    for bad in ({"fee_bps": 10001, "fee_fixed": 0}, {"fee_bps": 1, "fee_fixed": -1}):
        rejected = api.post(
            f"/admin/merchants/{merchant.id}/fees", json=bad, headers=operator_login.headers
        )
        assert rejected.status_code == 400
    fetched = api.get(f"/admin/merchants/{merchant.id}", headers=operator_login.headers).json()
    assert (fetched["fee_bps"], fetched["fee_fixed"]) == (100, 10)
    [entry] = _audit_via_api(
        api, operator_login, action="merchant.fees_update", target_id=merchant.id
    )
    assert entry["details"] == {
        "old_fee_bps": "290",
        "old_fee_fixed": "30",
        "fee_bps": "100",
        "fee_fixed": "10",
    }


def test_api_key__shown_once_listed_by_prefix_and_revoked_through_the_edge(
    api: httpx.Client, operator_login: OperatorLogin, merchant: MerchantKeys
) -> None:
    created = api.post(
        f"/admin/merchants/{merchant.id}/api_keys",
        json={"mode": "test", "kind": "secret"},
        headers=operator_login.headers,
    )
    assert created.status_code == 200, created.text
    key = created.json()
    assert key["key"].startswith("sk_test_")
    assert key["key"].startswith(key["prefix"])
    assert key["prefix"] != key["key"]

    listed = api.get(
        f"/admin/merchants/{merchant.id}/api_keys", headers=operator_login.headers
    ).json()["api_keys"]
    assert len(listed) == 3  # the fixture's two and this one
    assert {k["key"] for k in listed} == {""}
    assert key["id"] in {k["id"] for k in listed}

    # The new key works at the edge: an unknown payment is 404, not 401.
    probe = {"X-API-Key": key["key"]}
    assert api.get("/v1/payments/pay_unknown", headers=probe).status_code == 404

    revoked = api.post(
        f"/admin/api_keys/{key['id']}/revoke", json={}, headers=operator_login.headers
    )
    assert revoked.status_code == 200
    assert revoked.json()["revoke_time"]
    again = api.post(f"/admin/api_keys/{key['id']}/revoke", json={}, headers=operator_login.headers)
    assert again.json()["revoke_time"] == revoked.json()["revoke_time"]

    deadline = time.monotonic() + REVOCATION_DEADLINE_S
    while api.get("/v1/payments/pay_unknown", headers=probe).status_code != 401:
        assert time.monotonic() < deadline, "a revoked key still works"
        time.sleep(0.2)
    # The merchant's other keys are untouched.
    other = {"X-API-Key": merchant.secret_key}
    assert api.get("/v1/payments/pay_unknown", headers=other).status_code == 404

    created_entries = _audit_via_api(
        api, operator_login, action="api_key.create", target_id=key["id"]
    )
    assert created_entries[0]["details"] == {
        "merchant_id": merchant.id,
        "prefix": key["prefix"],
        "mode": "test",
        "kind": "secret",
    }
    assert key["key"] not in str(created_entries)
    revocations = _audit_via_api(api, operator_login, action="api_key.revoke", target_id=key["id"])
    assert len(revocations) == 2


@pytest.mark.parametrize(
    "body",
    [
        {"mode": "prod", "kind": "secret"},
        {"mode": "test", "kind": "restricted"},
        {"mode": "test"},
        {"kind": "secret"},
        {"mode": 1, "kind": "secret"},
    ],
)
def test_create_api_key__bad_mode_or_kind_is_400_and_stores_nothing(
    api: httpx.Client,
    operator_login: OperatorLogin,
    merchant: MerchantKeys,
    sessions,  # type: ignore[no-untyped-def]
    body: dict[str, object],
) -> None:
    before = _count(sessions, ApiKey)
    response = api.post(
        f"/admin/merchants/{merchant.id}/api_keys", json=body, headers=operator_login.headers
    )
    assert response.status_code == 400, response.text
    assert _count(sessions, ApiKey) == before


def test_live_publishable_key_has_its_format(
    api: httpx.Client, operator_login: OperatorLogin, merchant: MerchantKeys
) -> None:
    response = api.post(
        f"/admin/merchants/{merchant.id}/api_keys",
        json={"mode": "live", "kind": "publishable"},
        headers=operator_login.headers,
    )
    assert response.status_code == 200
    assert response.json()["key"].startswith("pk_live_")


# The audit log.


def test_audit_log__the_database_refuses_update_delete_and_truncate(
    sessions,  # type: ignore[no-untyped-def]
    operator_login: OperatorLogin,
) -> None:
    for statement in (
        "UPDATE admin.audit_log SET action = 'x'",
        "DELETE FROM admin.audit_log",
        "TRUNCATE admin.audit_log",
    ):
        with pytest.raises(DBAPIError, match="append-only"), transaction(sessions) as session:
            session.execute(text(statement))
    assert _audit(sessions, operator_id=operator_login.id, action="login")


def test_audit_log__pages_newest_first_and_rejects_bad_paging(
    api: httpx.Client, operator_login: OperatorLogin
) -> None:
    for index in range(3):
        api.post("/admin/merchants", json={"name": f"A{index}"}, headers=operator_login.headers)
    first = api.get(
        "/admin/audit_log",
        params={"operator_id": operator_login.id, "page_size": 2},
        headers=operator_login.headers,
    ).json()
    assert [e["action"] for e in first["entries"]] == ["merchant.create", "merchant.create"]
    rest = api.get(
        "/admin/audit_log",
        params={"operator_id": operator_login.id, "page_token": first["next_page_token"]},
        headers=operator_login.headers,
    ).json()
    assert [e["action"] for e in rest["entries"]] == ["merchant.create", "login"]
    assert rest["next_page_token"] == ""
    ids = [int(e["id"]) for e in first["entries"] + rest["entries"]]
    assert ids == sorted(ids, reverse=True)
    for params in ({"page_size": 500}, {"page_token": "abc"}):
        response = api.get("/admin/audit_log", params=params, headers=operator_login.headers)
        assert response.status_code == 400
