"""The OpenAPI document (gen/openapi.json, from tools/openapi.py): a valid OpenAPI 3.1 document
that covers every public REST binding, with the error responses, the auth schemes and the
idempotency header, and amounts as integers. `make test`'s check-gen fails when it is stale."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator
from openapi_spec_validator import validate

from services.runtime.envoy import rest_paths

ROOT = Path(__file__).resolve().parents[2]
DOCUMENT: dict[str, Any] = json.loads((ROOT / "gen" / "openapi.json").read_text())


def test_it_is_a_valid_openapi_3_1_document() -> None:
    assert DOCUMENT["openapi"] == "3.1.0"
    validate(DOCUMENT)


def test_every_rest_binding_is_an_operation_with_the_error_responses() -> None:
    documented = {
        (path, verb.upper())
        for path, operations in DOCUMENT["paths"].items()
        for verb in operations
    }
    bound = {(path, verb) for path, verbs in rest_paths().items() for verb in verbs}
    assert documented == bound
    for operations in DOCUMENT["paths"].values():
        for operation in operations.values():
            assert operation["responses"]["4XX"] == {"$ref": "#/components/responses/Error"}
            assert operation["summary"], operation["operationId"]


def test_auth_idempotency_and_amounts_are_described() -> None:
    schemes = DOCUMENT["components"]["securitySchemes"]
    assert schemes["ApiKey"] == {"type": "apiKey", "in": "header", "name": "X-API-Key"}
    create = DOCUMENT["paths"]["/v1/payments"]["post"]
    assert {"$ref": "#/components/parameters/IdempotencyKey"} in create["parameters"]
    body = create["requestBody"]["content"]["application/json"]["schema"]
    assert body["additionalProperties"] is False
    assert body["required"] == ["amount", "currency"]
    payment = DOCUMENT["components"]["schemas"]["payment.v1.Payment"]
    assert payment["properties"]["amount"]["type"] == "integer"
    assert "amount" in payment["required"]
    login = DOCUMENT["paths"]["/admin/login"]["post"]
    assert login["security"] == []
    error = DOCUMENT["components"]["schemas"]["Error"]["properties"]["error"]
    assert "payment_not_found" in error["properties"]["code"]["enum"]


def _schemas_with_examples() -> list[dict[str, Any]]:
    """Every schema of the document that carries examples: components and request bodies."""
    found = [s for s in DOCUMENT["components"]["schemas"].values() if "examples" in s]
    for operations in DOCUMENT["paths"].values():
        for operation in operations.values():
            body = operation.get("requestBody", {}).get("content", {}).get("application/json")
            if body is not None and "examples" in body["schema"]:
                found.append(body["schema"])
    return found


def test_every_example_is_in_the_document_and_valid_against_its_schema() -> None:
    examples = json.loads((ROOT / "protos" / "examples.json").read_text())
    examples.pop("//")
    schemas = _schemas_with_examples()
    shown = [example for schema in schemas for example in schema["examples"]]
    for name, example in examples.items():
        # A request body's example leaves out the fields its path binds.
        assert any(
            candidate == {k: v for k, v in example.items() if k in candidate} for candidate in shown
        ), f"{name}'s example is not in the document (is the message name right?)"
    for schema in schemas:
        validator = Draft202012Validator({**schema, "components": DOCUMENT["components"]})
        for example in schema["examples"]:
            errors = [error.message for error in validator.iter_errors(example)]
            assert not errors, (schema.get("description", ""), errors)


def test_an_invalid_example_is_caught() -> None:
    # The check above can fail: a string amount breaks the Payment schema.
    payment = DOCUMENT["components"]["schemas"]["payment.v1.Payment"]
    validator = Draft202012Validator({**payment, "components": DOCUMENT["components"]})
    assert list(validator.iter_errors({**payment["examples"][0], "amount": "2000"}))
