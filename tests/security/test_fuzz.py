"""Property-based fuzzing of every REST endpoint the descriptors list: no 5xx, no hang.

For each method Hypothesis draws path ids, query parameters and JSON bodies made of the
request's own field names (and a few strangers) with values of any JSON type, and sends them
with a valid credential (a merchant's secret key, or an operator session for admin methods), so
the requests get past authentication into validation and the domain code.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy.orm import Session, sessionmaker

from services.admin import merchants
from services.common.db import transaction
from services.runtime.platform import LocalPlatform
from tests.conftest import _operator_login, user_login
from tests.security.contracts import RestMethod, rest_methods

EXAMPLES = int(os.environ.get("PAYMESH_FUZZ_EXAMPLES", "10"))
# The client gives up long before a hang could stall the suite; a timeout fails the example.
REQUEST_TIMEOUT_S = 90.0
# Logout and EndSession end the fuzzing operator's and user's sessions, so they go last.
METHODS = sorted(rest_methods(), key=lambda method: method.name in {"Logout", "EndSession"})

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=40),
    st.sampled_from(["pay_", "re_", "we_", "evt_", "whd_", "mer_", "-1", "9" * 30, "\x00"]),
)
json_values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=3), st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=8,
)
path_ids = st.one_of(
    st.text(min_size=1, max_size=40),
    st.sampled_from(["pay_", "re_x", "we_1", "evt_..", "whd_%", "a" * 200, "0"]),
)


def _names(method: RestMethod) -> st.SearchStrategy[str]:
    own = [item.name for item in method.fields] or ["id"]
    return st.one_of(st.sampled_from(own), st.text(min_size=1, max_size=12))


def requests_for(method: RestMethod) -> st.SearchStrategy[dict[str, Any]]:
    """Random path values, query parameters and JSON body for one method."""
    return st.fixed_dictionaries(
        {
            "path": st.fixed_dictionaries({name: path_ids for name in method.path_params}),
            "query": st.dictionaries(
                _names(method), st.one_of(st.text(max_size=30), st.integers()), max_size=4
            ),
            "body": st.dictionaries(_names(method), json_values, max_size=6)
            if method.body
            else st.none(),
        }
    )


@pytest.fixture(scope="module")
def credentials(platform: LocalPlatform, sessions: sessionmaker[Session]) -> dict[str, str]:
    """A merchant's secret key, an admin user's and an operator's session tokens."""
    with transaction(sessions) as session:
        made = merchants.create_merchant(session, name="Fuzzed Shop")
        key = merchants.create_api_key(session, merchant_id=made.id, mode="test", kind="secret").key
    with httpx.Client(base_url=platform.base_url, timeout=30) as client:
        login = _operator_login(sessions, client, "operator")
        user = user_login(sessions, client, made.id, "admin")
    return {"merchant": key, "operator": login.token, "user": user.token}


@pytest.fixture(scope="module")
def client(platform: LocalPlatform) -> Iterator[httpx.Client]:
    """An HTTP client for the edge with a bounded timeout."""
    with httpx.Client(base_url=platform.base_url, timeout=REQUEST_TIMEOUT_S) as made:
        yield made


@pytest.mark.parametrize("method", METHODS, ids=lambda m: f"{m.service.split('.')[1]}.{m.name}")
def test_random_input__never_a_5xx(
    client: httpx.Client, credentials: dict[str, str], method: RestMethod
) -> None:
    if method.is_admin:
        headers = {"Authorization": f"Bearer {credentials['operator']}"}
    elif method.is_account:
        headers = {"Authorization": f"Bearer {credentials['user']}"}
    else:
        headers = {"X-API-Key": credentials["merchant"]}

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    )
    @given(drawn=requests_for(method))
    def check(drawn: dict[str, Any]) -> None:
        path = method.url({name: quote(value, safe="") for name, value in drawn["path"].items()})
        # A stream that opens stays open (keepalives): its status line is the answer to check.
        # json.dumps, not httpx's encoder: NaN and Infinity go out as the invalid JSON they are.
        content = None if drawn["body"] is None else json.dumps(drawn["body"]).encode()
        with client.stream(
            method.verb,
            path,
            params={name: str(value) for name, value in drawn["query"].items()},
            content=content,
            headers={**headers, "Content-Type": "application/json"},
        ) as response:
            body = "" if method.streaming else response.read().decode(errors="replace")
            assert response.status_code < 500, (method.name, drawn, body)

    check()
