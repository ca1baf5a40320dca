"""Conformance (issue 14, point 7): schemathesis drives every operation of gen/openapi.json
against the live platform through the edge, with valid and invalid data, and fails on any 5xx,
any response that breaks the document (status, content type, schema), and any invalid request
that is accepted. A bounded run here; `make fuzz` runs a longer one (FUZZ_EXAMPLES).

Merchant operations are called with a merchant's own secret key, so the generated writes touch
no other test's data; the operators' operations with a viewer's session, which may read
everything and change nothing (its writes answer 403 in the error shape); the merchant users'
account operations likewise with a viewer user's session.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, settings
from schemathesis import GenerationMode

from services.admin import merchants
from services.common.db import transaction
from services.runtime.platform import LocalPlatform
from tests.conftest import MerchantKeys, OperatorLogin, UserLogin, _operator_login, user_login

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "12"))

# Every check runs but two. The document does not express every rule a service applies
# (`page_size` 1 to 100, a fee up to 10,000 bps...), so a request it allows may still be refused
# with 400: refusing what should be taken is not what this run is for (the bar is 5xx,
# responses off the document, and invalid requests accepted). And Envoy's HTTP/1 parser answers
# a method it does not know (QUERY) 400 before any route: known methods a path does not take
# answer 405, which tests/integration/test_edge.py checks.
NOT_CHECKED = [
    schemathesis.checks.positive_data_acceptance,
    schemathesis.checks.unsupported_method,
]

schema = schemathesis.openapi.from_dict(json.loads((ROOT / "gen" / "openapi.json").read_text()))
schema.config.generation.update(
    modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE],
    max_examples=EXAMPLES,
    deterministic=True,
)


@pytest.fixture(scope="module")
def fuzz_merchant(sessions) -> MerchantKeys:  # type: ignore[no-untyped-def]
    """A merchant of its own, so the generated writes touch no other test's data."""
    with transaction(sessions) as session:
        created = merchants.create_merchant(session, name="Fuzz Merchant")
        secret = merchants.create_api_key(
            session, merchant_id=created.id, mode="test", kind="secret"
        )
        return MerchantKeys(created.id, secret.key, "")


@pytest.fixture(scope="module")
def viewer(sessions, platform: LocalPlatform) -> OperatorLogin:  # type: ignore[no-untyped-def]
    with httpx.Client(base_url=platform.base_url, timeout=30) as client:
        return _operator_login(sessions, client, "viewer")


@pytest.fixture(scope="module")
def merchant_viewer(sessions, platform: LocalPlatform, fuzz_merchant: MerchantKeys) -> UserLogin:  # type: ignore[no-untyped-def]
    """A viewer of the fuzz merchant: reads its account, and its writes answer 403."""
    with httpx.Client(base_url=platform.base_url, timeout=30) as client:
        return user_login(sessions, client, fuzz_merchant.id, "viewer")


def _headers(
    path: str, platform: LocalPlatform, viewer: OperatorLogin, merchant_viewer: UserLogin
) -> dict[str, str]:
    """Operators' calls as a viewer operator; account calls as a viewer user (a session of its
    own for ending one); merchant calls with the fuzz merchant's key (also the payout settings,
    which live under /v1/account but belong to the payment service and take a secret key)."""
    if path.startswith("/admin/"):
        return viewer.headers
    if not path.startswith("/v1/account") or path == "/v1/account/payout_settings":
        return {}
    if path == "/v1/account/sessions/end":
        with httpx.Client(base_url=platform.base_url, timeout=30) as client:
            response = client.post(
                "/v1/account/sessions",
                json={"email": merchant_viewer.email, "password": merchant_viewer.password},
            )
            assert response.status_code == 200, response.text
            return {"Authorization": f"Bearer {response.json()['session_token']}"}
    return merchant_viewer.headers()


@schema.parametrize()
@settings(
    deadline=None,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=list(HealthCheck),
    derandomize=True,
    database=None,
)
def test_every_operation_conforms_to_the_document(
    case: schemathesis.Case[Any],
    platform: LocalPlatform,
    fuzz_merchant: MerchantKeys,
    viewer: OperatorLogin,
    merchant_viewer: UserLogin,
) -> None:
    headers = _headers(case.operation.path, platform, viewer, merchant_viewer) or {
        "X-API-Key": fuzz_merchant.secret_key
    }
    case.call_and_validate(base_url=platform.base_url, headers=headers, excluded_checks=NOT_CHECKED)
