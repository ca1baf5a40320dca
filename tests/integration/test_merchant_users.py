"""Merchant users through the edge: invitations, sessions, roles, the account's keys and team.

A user's session opens the account API and the merchant API for its own merchant, in the mode
`Paymesh-Mode` names, as far as its role allows; nothing here reaches another merchant.
"""

from __future__ import annotations

import secrets
import time
import uuid
from collections.abc import Callable, Mapping
from urllib.parse import parse_qs, urlparse

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from services.admin import users
from services.admin.models import AuditEntry, MerchantInvite, MerchantUser
from services.common.db import transaction
from tests.conftest import OperatorLogin, UserLogin, user_login
from tests.integration.conftest import MerchantKeys
from tests.integration.test_payments import paid
from tests.rest_errors import api_error, error_code

# The other services cache a session as they cache keys (auth_cache_ttl_s, 5 s by default).
CACHE_DEADLINE_S = 30.0


def _invite(
    api: httpx.Client, operator: OperatorLogin, merchant_id: str, role: str
) -> dict[str, str]:
    email = f"invited-{secrets.token_hex(6)}@merchant.test"
    response = api.post(
        f"/admin/merchants/{merchant_id}/invites",
        json={"email": email, "role": role},
        headers=operator.headers,
    )
    assert response.status_code == 200, response.text
    invite: dict[str, str] = response.json()
    return invite


def _count(sessions: sessionmaker[Session], model: type) -> int:
    with transaction(sessions) as session:
        return int(session.scalar(select(func.count()).select_from(model)) or 0)


def _wait_status(call: Callable[[], httpx.Response], status: int) -> httpx.Response:
    deadline = time.monotonic() + CACHE_DEADLINE_S
    while True:
        response = call()
        if response.status_code == status or time.monotonic() > deadline:
            return response
        time.sleep(0.5)


# Invitations.


def test_operator_invites__the_link_accepts_once_and_signs_the_user_in(
    api: httpx.Client,
    sessions: sessionmaker[Session],
    operator_login: OperatorLogin,
    merchant: MerchantKeys,
) -> None:
    invite = _invite(api, operator_login, merchant.id, "developer")
    assert invite["id"].startswith("inv_") and invite["token"].startswith("pmi_")
    link = urlparse(invite["accept_url"])
    assert link.path == "/merchant/accept"
    assert parse_qs(link.query)["token"] == [invite["token"]]
    listed = api.get(f"/admin/merchants/{merchant.id}/users", headers=operator_login.headers)
    assert [item["email"] for item in listed.json()["invites"]] == [invite["email"]]
    assert not listed.json()["invites"][0]["token"], "a listed invitation shows no token"

    accepted = api.post(
        "/v1/account/invites/accept", json={"token": invite["token"], "password": "long-enough-1"}
    )
    assert accepted.status_code == 200, accepted.text
    body = accepted.json()
    assert body["user"]["email"] == invite["email"] and body["user"]["role"] == "developer"
    assert body["merchant"]["id"] == merchant.id
    headers = {"Authorization": f"Bearer {body['session_token']}"}
    account = api.get("/v1/account", headers=headers)
    assert account.status_code == 200, account.text
    assert account.json()["user"]["id"] == body["user"]["id"]

    again = api.post(
        "/v1/account/invites/accept", json={"token": invite["token"], "password": "another-pw-2"}
    )
    api_error(again, 400, "invite_invalid", param="token")
    signed_in = api.post(
        "/v1/account/sessions", json={"email": invite["email"], "password": "long-enough-1"}
    )
    assert signed_in.status_code == 200, signed_in.text
    with transaction(sessions) as session:
        actions = session.scalars(
            select(AuditEntry.action).where(
                AuditEntry.target_id.in_([invite["id"], body["user"]["id"]])
            )
        ).all()
    assert sorted(actions) == ["account.invite.accept", "merchant_user.invite"]


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"token": "pmi_unknown", "password": "long-enough-1"}, "token"),
        ({"token": "not-a-token", "password": "long-enough-1"}, "token"),
        ({"token": "pmi_x", "password": ""}, "password"),
        ({"password": "long-enough-1"}, "token"),
    ],
)
def test_accept__bad_tokens_and_passwords_are_refused_and_create_no_user(
    api: httpx.Client, sessions: sessionmaker[Session], body: dict[str, str], param: str
) -> None:
    before = _count(sessions, MerchantUser)
    response = api.post("/v1/account/invites/accept", json=body)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == param, response.text
    assert _count(sessions, MerchantUser) == before


def test_accept__a_short_password_keeps_the_invitation_open(
    api: httpx.Client, operator_login: OperatorLogin, merchant: MerchantKeys
) -> None:
    invite = _invite(api, operator_login, merchant.id, "viewer")
    short = api.post("/v1/account/invites/accept", json={"token": invite["token"], "password": "x"})
    api_error(short, 400, "invalid_user", param="password")
    good = api.post(
        "/v1/account/invites/accept", json={"token": invite["token"], "password": "long-enough-1"}
    )
    assert good.status_code == 200, good.text


BAD_INVITES = [
    ({"email": "not-an-email", "role": "admin"}, "invalid_user", "email"),
    ({"email": "someone@merchant.test", "role": "owner"}, "invalid_user", "role"),
    ({"email": "someone@merchant.test", "role": 7}, "invalid_parameter_type", "role"),
    ({"role": "admin"}, "invalid_user", "email"),
]


@pytest.mark.parametrize(("body", "code", "param"), BAD_INVITES)
def test_invite__bad_input_is_refused_and_stores_nothing(
    api: httpx.Client,
    sessions: sessionmaker[Session],
    operator_login: OperatorLogin,
    merchant: MerchantKeys,
    *,
    body: dict[str, object],
    code: str,
    param: str,
) -> None:
    before = _count(sessions, MerchantInvite)
    response = api.post(
        f"/admin/merchants/{merchant.id}/invites", json=body, headers=operator_login.headers
    )
    assert response.status_code == 400, response.text
    assert error_code(response) == code, response.text
    assert response.json()["error"]["param"] == param, response.text
    assert _count(sessions, MerchantInvite) == before


def test_invite__unknown_merchant_is_404_and_an_existing_users_email_is_refused(
    api: httpx.Client,
    sessions: sessionmaker[Session],
    operator_login: OperatorLogin,
    merchant: MerchantKeys,
) -> None:
    response = api.post(
        "/admin/merchants/mer_doesnotexist/invites",
        json={"email": "x@merchant.test", "role": "admin"},
        headers=operator_login.headers,
    )
    api_error(response, 404, "merchant_not_found")
    existing = user_login(sessions, api, merchant.id, "viewer")
    response = api.post(
        f"/admin/merchants/{merchant.id}/invites",
        json={"email": existing.email, "role": "admin"},
        headers=operator_login.headers,
    )
    api_error(response, 400, "invalid_user", param="email")


# Signing in and out.


def test_sign_in__wrong_password_and_unknown_email_get_the_same_401(
    api: httpx.Client, sessions: sessionmaker[Session], merchant: MerchantKeys
) -> None:
    user = user_login(sessions, api, merchant.id, "viewer")
    wrong = api.post("/v1/account/sessions", json={"email": user.email, "password": "wrong-pw-1"})
    unknown = api.post(
        "/v1/account/sessions", json={"email": "nobody@merchant.test", "password": "wrong-pw-1"}
    )
    for response in (wrong, unknown):
        api_error(response, 401, "invalid_credentials")
        assert response.json()["error"]["message"] == wrong.json()["error"]["message"]


def test_sign_in__repeated_failures_are_throttled(
    api: httpx.Client, sessions: sessionmaker[Session], merchant: MerchantKeys
) -> None:
    user = user_login(sessions, api, merchant.id, "viewer")
    statuses = [
        api.post(
            "/v1/account/sessions", json={"email": user.email, "password": "wrong-pw-1"}
        ).status_code
        for _ in range(6)
    ]
    assert statuses[:5] == [401] * 5 and statuses[5] == 429, statuses
    # Even the right password waits out the window.
    right = api.post("/v1/account/sessions", json={"email": user.email, "password": user.password})
    api_error(right, 429, "login_rate_limited")
    assert int(right.headers["retry-after"]) > 0


def test_end_session__the_token_stops_working(
    api: httpx.Client, sessions: sessionmaker[Session], merchant: MerchantKeys
) -> None:
    user = user_login(sessions, api, merchant.id, "viewer")
    assert api.get("/v1/payments", headers=user.headers()).status_code == 200
    ended = api.post("/v1/account/sessions/end", json={}, headers=user.headers())
    assert ended.status_code == 200, ended.text
    api_error(api.get("/v1/account", headers=user.headers()), 401, "session_invalid")
    # The other services cached the session for a few seconds, as they cache keys.
    response = _wait_status(lambda: api.get("/v1/payments", headers=user.headers()), 401)
    assert response.status_code == 401, response.text


def test_sign_up__is_refused_unless_the_platform_allows_it(
    api: httpx.Client, sessions: sessionmaker[Session]
) -> None:
    before = _count(sessions, MerchantUser)
    response = api.post(
        "/v1/account/signup",
        json={"email": "new@merchant.test", "password": "long-enough-1", "business_name": "New"},
    )
    api_error(response, 403, "signup_disabled")
    assert _count(sessions, MerchantUser) == before


def test_signed_up_merchant__is_test_mode_only(
    api: httpx.Client, sessions: sessionmaker[Session]
) -> None:
    email = f"founder-{secrets.token_hex(4)}@merchant.test"
    with transaction(sessions) as session:
        users.sign_up(
            session,
            email=email,
            password="long-enough-1",
            business_name="Garage Startup",
            client_ip="",
            ttl_s=60,
        )
    signed_in = api.post("/v1/account/sessions", json={"email": email, "password": "long-enough-1"})
    assert signed_in.status_code == 200, signed_in.text
    token = signed_in.json()["session_token"]
    test = api.get("/v1/payments", headers={"Authorization": f"Bearer {token}"})
    assert test.status_code == 200, test.text
    live = api.get(
        "/v1/payments", headers={"Authorization": f"Bearer {token}", "Paymesh-Mode": "live"}
    )
    api_error(live, 403, "live_mode_disabled")
    key = api.post(
        "/v1/account/api_keys",
        json={"mode": "live", "kind": "secret"},
        headers={"Authorization": f"Bearer {token}"},
    )
    api_error(key, 403, "live_mode_disabled")


# The merchant API with a session.


def test_session__sees_its_merchants_payments_in_the_mode_asked_for(
    api: httpx.Client,
    sessions: sessionmaker[Session],
    merchant: MerchantKeys,
    other_merchant: MerchantKeys,
) -> None:
    mine = paid(api, merchant.secret_key)
    theirs = paid(api, other_merchant.secret_key)
    user = user_login(sessions, api, merchant.id, "viewer")
    listed = api.get("/v1/payments", headers=user.headers())
    assert [p["id"] for p in listed.json()["payments"]] == [mine["id"]], listed.text
    assert api.get(f"/v1/payments/{mine['id']}", headers=user.headers()).status_code == 200
    api_error(
        api.get(f"/v1/payments/{theirs['id']}", headers=user.headers()), 404, "payment_not_found"
    )
    live = api.get("/v1/payments", headers=user.headers("live"))
    assert live.status_code == 200 and live.json()["payments"] == [], live.text
    api_error(
        api.get(f"/v1/payments/{mine['id']}", headers=user.headers("live")),
        404,
        "payment_not_found",
    )
    bad = api.get("/v1/payments", headers=user.headers("staging"))
    assert bad.status_code == 400, bad.text
    balance = api.get("/v1/balance", headers=user.headers())
    assert balance.status_code == 200, balance.text


def test_roles__viewers_read_developers_manage_webhooks_admins_refund(
    api: httpx.Client, sessions: sessionmaker[Session], merchant: MerchantKeys
) -> None:
    payment = paid(api, merchant.secret_key)
    assert payment["status"] == "succeeded", payment
    logins = {role: user_login(sessions, api, merchant.id, role) for role in users.ROLES}
    endpoint = {"url": "https://example.com/hooks", "enabled_events": ["payment.succeeded"]}

    def write(login: UserLogin, path: str, body: Mapping[str, object]) -> httpx.Response:
        headers = {**login.headers(), "Idempotency-Key": str(uuid.uuid4())}
        return api.post(path, json=body, headers=headers)

    refund = {"payment_id": payment["id"], "amount": 100}
    for role in ("viewer", "developer"):
        api_error(write(logins[role], "/v1/refunds", refund), 403, "merchant_role_required")
    api_error(
        write(logins["viewer"], "/v1/webhook_endpoints", endpoint), 403, "merchant_role_required"
    )
    created = write(logins["developer"], "/v1/webhook_endpoints", endpoint)
    assert created.status_code == 200, created.text
    refunded = write(logins["admin"], "/v1/refunds", refund)
    assert refunded.status_code == 200, refunded.text
    refunds = api.get(
        "/v1/refunds",
        params={"payment_id": payment["id"]},
        headers={"X-API-Key": merchant.secret_key},
    )
    assert [r["amount"] for r in refunds.json()["refunds"]] == [100], refunds.text
    # The team is the admins' alone; keys are also the developers'.
    invite = {"email": f"x-{secrets.token_hex(4)}@merchant.test", "role": "viewer"}
    api_error(
        write(logins["developer"], "/v1/account/invites", invite), 403, "merchant_role_required"
    )
    key = {"mode": "test", "kind": "secret"}
    api_error(write(logins["viewer"], "/v1/account/api_keys", key), 403, "merchant_role_required")
    assert write(logins["developer"], "/v1/account/api_keys", key).status_code == 200
    assert write(logins["admin"], "/v1/account/invites", invite).status_code == 200
    for login in logins.values():
        assert api.get("/v1/account/users", headers=login.headers()).status_code == 200


# The account's API keys.


def test_api_keys__created_once_listed_by_mode_and_replayed_under_a_key(
    api: httpx.Client, sessions: sessionmaker[Session], merchant: MerchantKeys
) -> None:
    admin = user_login(sessions, api, merchant.id, "admin")
    headers = {**admin.headers(), "Idempotency-Key": str(uuid.uuid4())}
    body = {"mode": "test", "kind": "secret"}
    first = api.post("/v1/account/api_keys", json=body, headers=headers)
    assert first.status_code == 200, first.text
    replay = api.post("/v1/account/api_keys", json=body, headers=headers)
    assert replay.json() == first.json() and replay.headers["idempotent-replayed"] == "true"
    created = first.json()
    assert created["key"].startswith("sk_test_") and created["merchant_id"] == merchant.id
    assert api.get("/v1/payments", headers={"X-API-Key": created["key"]}).status_code == 200
    listed = api.get("/v1/account/api_keys", params={"mode": "test"}, headers=admin.headers())
    keys = listed.json()["api_keys"]
    assert created["id"] in [k["id"] for k in keys] and all(not k.get("key") for k in keys)
    assert len([k for k in keys if k["id"] == created["id"]]) == 1, "the replay made no key"
    live = api.get("/v1/account/api_keys", params={"mode": "live"}, headers=admin.headers())
    assert live.json().get("api_keys", []) == [], live.text
    api_error(
        api.get("/v1/account/api_keys", params={"mode": "prod"}, headers=admin.headers()),
        400,
        "invalid_argument",
        param="mode",
    )
    for bad in ({"mode": "prod", "kind": "secret"}, {"mode": "test", "kind": "root"}):
        api_error(
            api.post("/v1/account/api_keys", json=bad, headers=admin.headers()),
            400,
            "invalid_argument",
            param="mode" if bad["mode"] == "prod" else "kind",
        )


def test_roll__the_old_key_works_for_the_window_then_stops(
    api: httpx.Client, sessions: sessionmaker[Session], merchant: MerchantKeys
) -> None:
    admin = user_login(sessions, api, merchant.id, "admin")
    keys = api.get("/v1/account/api_keys", headers=admin.headers()).json()["api_keys"]
    (old,) = [k for k in keys if k["kind"] == "secret"]
    rolled = api.post(
        f"/v1/account/api_keys/{old['id']}/roll",
        json={"expire_in_seconds": 3600},
        headers=admin.headers(),
    )
    assert rolled.status_code == 200, rolled.text
    new_key = rolled.json()["key"]
    assert new_key.startswith("sk_test_") and new_key != merchant.secret_key
    listed = api.get("/v1/account/api_keys", headers=admin.headers()).json()["api_keys"]
    (old_now,) = [k for k in listed if k["id"] == old["id"]]
    assert old_now["expire_time"] and not old_now.get("revoke_time")
    assert api.get("/v1/payments", headers={"X-API-Key": merchant.secret_key}).status_code == 200
    assert api.get("/v1/payments", headers={"X-API-Key": new_key}).status_code == 200
    # Rolled again with no window: it stops at once (within the services' key cache).
    again = api.post(
        f"/v1/account/api_keys/{rolled.json()['id']}/roll",
        json={"expire_in_seconds": 0},
        headers=admin.headers(),
    )
    assert again.status_code == 200, again.text
    stopped = _wait_status(lambda: api.get("/v1/payments", headers={"X-API-Key": new_key}), 401)
    assert stopped.status_code == 401, stopped.text
    api_error(
        api.post(
            f"/v1/account/api_keys/{old['id']}/roll",
            json={"expire_in_seconds": 999999999},
            headers=admin.headers(),
        ),
        400,
        "invalid_argument",
        param="expire_in_seconds",
    )


def test_keys_and_users_of_other_merchants__are_not_found(
    api: httpx.Client,
    sessions: sessionmaker[Session],
    merchant: MerchantKeys,
    other_merchant: MerchantKeys,
) -> None:
    mine = user_login(sessions, api, merchant.id, "admin")
    theirs = user_login(sessions, api, other_merchant.id, "admin")
    their_key = api.get("/v1/account/api_keys", headers=theirs.headers()).json()["api_keys"][0]
    for path, body in [
        (f"/v1/account/api_keys/{their_key['id']}/roll", {"expire_in_seconds": 0}),
        (f"/v1/account/api_keys/{their_key['id']}/revoke", {}),
    ]:
        api_error(api.post(path, json=body, headers=mine.headers()), 404, "api_key_not_found")
    api_error(
        api.patch(
            f"/v1/account/users/{theirs.id}", json={"role": "viewer"}, headers=mine.headers()
        ),
        404,
        "user_not_found",
    )
    api_error(
        api.delete(f"/v1/account/users/{theirs.id}", headers=mine.headers()), 404, "user_not_found"
    )
    assert (
        api.get("/v1/payments", headers={"X-API-Key": other_merchant.secret_key}).status_code == 200
    )
    listed = api.get("/v1/account/users", headers=mine.headers()).json()["users"]
    assert [u["id"] for u in listed] == [mine.id]


# The team.


def test_team__roles_change_the_last_admin_stays_and_removal_ends_sessions(
    api: httpx.Client, sessions: sessionmaker[Session], merchant: MerchantKeys
) -> None:
    admin = user_login(sessions, api, merchant.id, "admin")
    viewer = user_login(sessions, api, merchant.id, "viewer")
    api_error(
        api.patch(
            f"/v1/account/users/{admin.id}", json={"role": "developer"}, headers=admin.headers()
        ),
        400,
        "last_admin",
    )
    api_error(
        api.delete(f"/v1/account/users/{admin.id}", headers=admin.headers()), 400, "last_admin"
    )
    promoted = api.patch(
        f"/v1/account/users/{viewer.id}", json={"role": "developer"}, headers=admin.headers()
    )
    assert promoted.status_code == 200 and promoted.json()["role"] == "developer", promoted.text
    api_error(
        api.patch(
            f"/v1/account/users/{viewer.id}", json={"role": "owner"}, headers=admin.headers()
        ),
        400,
        "invalid_user",
        param="role",
    )
    removed = api.delete(f"/v1/account/users/{viewer.id}", headers=admin.headers())
    assert removed.status_code == 200, removed.text
    api_error(api.get("/v1/account", headers=viewer.headers()), 401, "session_invalid")
    listed = api.get("/v1/account/users", headers=admin.headers()).json()["users"]
    assert [u["id"] for u in listed] == [admin.id]
