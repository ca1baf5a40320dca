"""The REST error shape (docs/api.md, Errors), checked the same way by every test that meets one."""

from __future__ import annotations

import httpx

from services.runtime.errors import catalog

CODES = {entry.code: entry for entry in catalog()}


def api_error(
    response: httpx.Response, status: int, code: str, *, param: str | None = None
) -> dict[str, str]:
    """The response's error, after checking it has the one shape, this status and this code.

    `{"error": {"type", "code", "message", "param", "request_id"}}`: `param` only when a
    parameter is at fault (and then it must be `param`), `request_id` the response's
    X-Request-Id, and the status and `type` the error catalog's for the code.
    """
    assert response.status_code == status, response.text[:1000]
    assert response.headers["content-type"] == "application/json", response.headers
    body = response.json()
    assert list(body) == ["error"], body
    error = body["error"]
    assert {"type", "code", "message", "request_id"} <= set(error), error
    assert set(error) <= {"type", "code", "message", "param", "request_id"}, error
    assert error["code"] == code, error
    entry = CODES[code]
    assert (entry.http_status, entry.error_type) == (status, error["type"]), error
    assert isinstance(error["message"], str)
    assert error["message"], error
    assert error["request_id"] == response.headers["x-request-id"], error
    assert error.get("param") == param, error
    return dict(error)


def error_code(response: httpx.Response) -> str:
    """The code of the error the response carries (its shape checked as above)."""
    error = response.json()["error"]
    return api_error(response, response.status_code, error["code"], param=error.get("param"))[
        "code"
    ]
