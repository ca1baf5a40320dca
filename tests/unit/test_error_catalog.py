"""The error catalog (services/runtime/errors.py): docs/errors.md is generated from it and
current, each code is defined once with a type, and the edge knows every code's type."""

from __future__ import annotations

import re
from pathlib import Path

from services.common import errors
from services.runtime import envoy
from services.runtime.errors import DOC, catalog, render

ROOT = Path(__file__).resolve().parents[2]
TYPES = {
    errors.INVALID_REQUEST,
    errors.AUTHENTICATION,
    errors.PERMISSION,
    errors.IDEMPOTENCY,
    errors.RATE_LIMIT,
    errors.API,
}


def test_docs_errors_md_is_current() -> None:
    assert DOC.read_text() == render(), "docs/errors.md is stale: python -m services.runtime.errors"


def test_every_code_has_a_known_type_and_an_error_status() -> None:
    entries = catalog()
    assert len({e.code for e in entries}) == len(entries)
    for entry in entries:
        assert entry.error_type in TYPES, entry
        assert 400 <= entry.http_status < 600, entry
        assert re.fullmatch(r"[a-z][a-z0-9_]*", entry.code), entry
        assert entry.meaning, entry
    assert {e.code for e in entries if e.error_type == errors.IDEMPOTENCY} == {
        "idempotency_key_reused",
        "idempotency_key_in_use",
    }


def test_the_edge_knows_each_code_and_refuses_only_with_catalog_codes() -> None:
    lua = "\n".join(envoy._error_types_lua())
    codes = {e.code: e for e in catalog()}
    for code, entry in codes.items():
        assert f'ERROR_TYPES.{code.upper()} = "{entry.error_type}"' in lua
    edge = (ROOT / "envoy" / "edge.lua").read_text()
    refused = set(re.findall(r'"([A-Z][A-Z_]+)"', edge)) - {"BODY"}
    grpc_names = set(re.findall(r'"([A-Z_]+)",?', edge.split("GRPC_CODES = {")[1].split("}")[0]))
    assert {name.lower() for name in refused - grpc_names} <= set(codes)


def test_local_replies_map_each_edge_status_to_its_code() -> None:
    config = "\n".join(envoy._local_reply())
    for status, error in envoy._EDGE_ERRORS.items():
        assert error.http_status() == status
        assert f"default_value: {status}," in config
        assert f'code: "{error.reason.lower()}"' in config
