"""Who may call what, for every public method the descriptors list.

Merchant keys (secret and publishable) never open an admin method; publishable keys open only
the client-secret methods; missing, malformed, unknown, revoked and wrong-mode keys are 401.
"""

from __future__ import annotations

import time

import httpx
import pytest
from sqlalchemy.orm import Session, sessionmaker

from services.admin import merchants
from services.common.api_keys import generate_key
from services.common.db import transaction
from tests.conftest import OperatorLogin, user_login
from tests.integration.conftest import MerchantKeys
from tests.rest_errors import error_code
from tests.security.contracts import (
    CLIENT_SECRET_METHODS,
    RestMethod,
    account_methods,
    admin_methods,
    merchant_methods,
    placeholder_url,
)

REVOCATION_TIMEOUT_S = 60.0
# Login is how an operator gets a session, so it takes no credentials. WatchOverview is opened
# with a short-lived stream token in its query string (browsers' EventSource sends no headers).
ADMIN_PUBLIC = frozenset({"Login", "WatchOverview"})
SECRET_KEY_METHODS = [m for m in merchant_methods() if m.name not in CLIENT_SECRET_METHODS]
OPERATOR_METHODS = [m for m in admin_methods() if m.name not in ADMIN_PUBLIC]
# Signing in, up, or by invitation is how a merchant user gets a session.
ACCOUNT_PUBLIC = frozenset({"CreateSession", "AcceptInvite", "SignUp"})
USER_METHODS = [m for m in account_methods() if m.name not in ACCOUNT_PUBLIC]


def call(api: httpx.Client, method: RestMethod, headers: dict[str, str]) -> httpx.Response:
    """Calls a method with placeholder ids and an empty body (auth comes before validation)."""
    body: dict[str, str] | None = {} if method.body else None
    return api.request(method.verb, placeholder_url(method), json=body, headers=headers)


def test_the_descriptors_list_the_methods_this_suite_reasons_about() -> None:
    names = {method.name for method in merchant_methods()}
    assert names >= CLIENT_SECRET_METHODS
    assert {method.name for method in admin_methods()} >= ADMIN_PUBLIC
    assert len(SECRET_KEY_METHODS) >= 20
    assert {method.name for method in account_methods()} >= ACCOUNT_PUBLIC
    assert len(USER_METHODS) >= 10


@pytest.mark.parametrize("method", USER_METHODS, ids=lambda m: m.name)
def test_account_methods__api_keys_and_operators_are_forbidden_and_no_session_is_401(
    api: httpx.Client, merchant: MerchantKeys, operator_login: OperatorLogin, method: RestMethod
) -> None:
    for key in [merchant.secret_key, merchant.publishable_key]:
        for headers in [{"X-API-Key": key}, {"Authorization": f"Bearer {key}"}]:
            response = call(api, method, headers)
            assert response.status_code == 403, (method.name, headers, response.text)
            assert error_code(response) == "user_session_required", response.text
    response = call(api, method, operator_login.headers)
    assert response.status_code == 403, response.text
    for headers in [{}, {"Authorization": "Bearer pmu_not-a-session"}]:
        response = call(api, method, headers)
        assert response.status_code == 401, (method.name, headers, response.text)


@pytest.mark.parametrize("method", OPERATOR_METHODS, ids=lambda m: m.name)
def test_admin_methods__merchant_users_sessions_are_forbidden(
    api: httpx.Client, sessions: sessionmaker[Session], merchant: MerchantKeys, method: RestMethod
) -> None:
    user = user_login(sessions, api, merchant.id, "admin")
    response = call(api, method, user.headers())
    assert response.status_code == 403, (method.name, response.text)


@pytest.mark.parametrize("method", OPERATOR_METHODS, ids=lambda m: m.name)
def test_admin_methods__merchant_keys_are_forbidden(
    api: httpx.Client, merchant: MerchantKeys, method: RestMethod
) -> None:
    for key in [merchant.secret_key, merchant.publishable_key]:
        for headers in [{"X-API-Key": key}, {"Authorization": f"Bearer {key}"}]:
            response = call(api, method, headers)
            assert response.status_code == 403, (method.name, headers, response.text)


def test_admin_stream__a_merchant_key_as_stream_token_opens_nothing(
    api: httpx.Client, merchant: MerchantKeys
) -> None:
    (watch,) = [method for method in admin_methods() if method.name == "WatchOverview"]
    for key in [merchant.secret_key, merchant.publishable_key]:
        response = api.get(
            placeholder_url(watch),
            headers={"Authorization": f"Bearer {key}"},
        )
        assert response.status_code in (401, 403), response.text


@pytest.mark.parametrize("method", SECRET_KEY_METHODS, ids=lambda m: m.name)
def test_merchant_methods__publishable_keys_are_forbidden(
    api: httpx.Client, merchant: MerchantKeys, method: RestMethod
) -> None:
    response = call(api, method, {"X-API-Key": merchant.publishable_key})
    assert response.status_code == 403, response.text
    assert error_code(response) == "secret_key_required"


def bad_keys(merchant: MerchantKeys) -> dict[str, dict[str, str]]:
    """Credentials that identify no one, by kind."""
    wrong_mode = merchant.secret_key.replace("sk_test_", "sk_live_", 1)
    altered_last = "1" if merchant.secret_key.endswith("0") else "0"
    return {
        "missing": {},
        "empty": {"X-API-Key": ""},
        "malformed": {"X-API-Key": "sk_test_not-a-key"},
        "bad checksum": {"X-API-Key": merchant.secret_key[:-1] + altered_last},
        "unknown": {"X-API-Key": generate_key(kind="secret", mode="test")},
        "wrong mode": {"X-API-Key": wrong_mode},
        "basic auth": {"Authorization": f"Basic {merchant.secret_key}"},
    }


@pytest.mark.parametrize("method", SECRET_KEY_METHODS, ids=lambda m: m.name)
def test_merchant_methods__missing_malformed_unknown_and_wrong_mode_keys_are_401(
    api: httpx.Client, merchant: MerchantKeys, method: RestMethod
) -> None:
    for kind, headers in bad_keys(merchant).items():
        response = call(api, method, headers)
        assert response.status_code == 401, (kind, response.text)


def test_client_secret_methods__a_bad_key_is_401_even_though_none_is_needed(
    api: httpx.Client, merchant: MerchantKeys
) -> None:
    for method in merchant_methods():
        if method.name not in CLIENT_SECRET_METHODS:
            continue
        for kind, headers in bad_keys(merchant).items():
            if not headers or kind in {"empty", "basic auth"}:
                continue  # no key at all: the method checks the client secret instead
            response = call(api, method, headers)
            assert response.status_code == 401, (method.name, kind, response.text)


def test_revoked_key__is_401_everywhere_once_caches_expire(
    api: httpx.Client, sessions: sessionmaker[Session], merchant: MerchantKeys
) -> None:
    with transaction(sessions) as session:
        issued = merchants.create_api_key(
            session, merchant_id=merchant.id, mode="test", kind="secret"
        )
    headers = {"X-API-Key": issued.key}
    assert api.get("/v1/payments", headers=headers).status_code == 200
    with transaction(sessions) as session:
        merchants.revoke_api_key(session, key_id=issued.api_key.id)
    deadline = time.monotonic() + REVOCATION_TIMEOUT_S
    while api.get("/v1/payments", headers=headers).status_code != 401:
        assert time.monotonic() < deadline, "the revoked key still works"
        time.sleep(0.5)
    for method in SECRET_KEY_METHODS:
        response = call(api, method, headers)
        assert response.status_code == 401, (method.name, response.text)
