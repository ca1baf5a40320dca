"""Writes the REST API's OpenAPI 3.1 document, and the event types' object schemas, from the protos.

`tools/gen.sh` runs it into gen/openapi.json (`make test` fails when gen/ is stale); the edge
serves it at `GET /v1/openapi.json` and renders it at `/docs/`. Everything comes from the
contracts: the `google.api.http` rules give the operations, the messages the schemas, the
proto comments the descriptions, `field_behavior = REQUIRED` the required members. What the
edge adds to the transcoder's JSON (docs/api.md) is written here once: 64-bit integers are
JSON integers, bodies take no unknown members, and every error has the REST error shape.

The same schema builder writes gen/event_types.json: the event type catalog (read from the
`EventType` enum's options by services/webhook/catalog.py) with a self-contained JSON Schema of
each type's `data.object`, which the webhook service serves at `GET /v1/event_types`.

    python tools/openapi.py DESCRIPTOR_SET_WITH_SOURCE_INFO OPENAPI.json EVENT_TYPES.json
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

from google.api import annotations_pb2, field_behavior_pb2
from google.protobuf import descriptor_pb2

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from services.common import errors
from services.runtime.errors import catalog
from services.webhook import catalog as event_catalog

FieldType = descriptor_pb2.FieldDescriptorProto.Type
EXAMPLES = Path(__file__).resolve().parents[1] / "protos" / "examples.json"
Label = descriptor_pb2.FieldDescriptorProto.Label

# The public services, as the edge exposes them (services/runtime/envoy.py PUBLIC_SERVICES).
SERVICES = {
    "paymesh.payment.v1.PaymentService": "Payments",
    "paymesh.ledger.v1.LedgerService": "Balance",
    "paymesh.webhook.v1.WebhookService": "Webhooks",
    "paymesh.admin.v1.AdminService": "Operators",
    "paymesh.admin.v1.AccountService": "Account",
}
# Calls made with an operator's session token (or none: logging in, the checkout page).
OPERATOR_SERVICE = "paymesh.admin.v1.AdminService"
# Calls made with a merchant user's session token (or none: signing in, up, or by invitation).
ACCOUNT_SERVICE = "paymesh.admin.v1.AccountService"
NO_CREDENTIAL = {"Login", "GetCheckout", "CreateSession", "AcceptInvite", "SignUp"}
# Every POST, PATCH and DELETE takes Idempotency-Key (docs/api.md, Idempotency) but these:
# signing in (or up, or by invitation) has no caller to scope a key to, and signing out ends
# the session it would have.
NOT_KEYED = {"Login", "Logout", "CreateSession", "EndSession", "AcceptInvite", "SignUp"}
WRITES = {"post", "patch", "delete"}

_INT32 = {FieldType.TYPE_INT32, FieldType.TYPE_SINT32, FieldType.TYPE_SFIXED32}
_UINT32 = {FieldType.TYPE_UINT32, FieldType.TYPE_FIXED32}
_INT64 = {FieldType.TYPE_INT64, FieldType.TYPE_SINT64, FieldType.TYPE_SFIXED64}
_UINT64 = {FieldType.TYPE_UINT64, FieldType.TYPE_FIXED64}
# Where the OpenAPI document keeps its schemas; an event type's schema keeps them under $defs.
COMPONENTS = "#/components/schemas/"
JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
_WELL_KNOWN: dict[str, dict[str, Any]] = {
    ".google.protobuf.Timestamp": {"type": "string", "format": "date-time"},
    ".google.protobuf.Struct": {"type": "object"},
    ".google.protobuf.Value": {},
}


class Contracts:
    """The messages, comments and methods of a descriptor set, and the messages' examples."""

    def __init__(
        self,
        files: list[descriptor_pb2.FileDescriptorProto],
        examples: dict[str, Any] | None = None,
    ) -> None:
        # protos/examples.json: one JSON example per message full name ("//" is its comment).
        self.examples = dict(examples if examples is not None else load_examples())
        self.messages: dict[str, descriptor_pb2.DescriptorProto] = {}
        self.comments: dict[str, str] = {}
        # Each message's file and source path, where its comments are found.
        self._message_paths: dict[str, tuple[str, list[int]]] = {}
        for file in files:
            for index, message in enumerate(file.message_type):
                self._collect(file.name, f".{file.package}", message, [4, index])
            for location in file.source_code_info.location:
                if location.leading_comments:
                    key = f"{file.name}:{','.join(map(str, location.path))}"
                    self.comments[key] = _clean(location.leading_comments)

    def _collect(self, file: str, prefix: str, message: Any, path: list[int]) -> None:
        name = f"{prefix}.{message.name}"
        self.messages[name] = message
        self._message_paths[name] = (file, path)
        for index, nested in enumerate(message.nested_type):
            self._collect(file, name, nested, [*path, 3, index])

    def message_comment(self, name: str) -> str:
        file, path = self._message_paths[name]
        return self.comments.get(f"{file}:{','.join(map(str, path))}", "")

    def field_comment(self, name: str, index: int) -> str:
        file, path = self._message_paths[name]
        return self.comments.get(f"{file}:{','.join(map(str, [*path, 2, index]))}", "")


def _sse_event(message: dict[str, Any]) -> dict[str, Any]:
    """One Server-Sent Event of a server stream: its `data` is the message's JSON.

    Before OpenAPI 3.2 (which adds `itemSchema`), a text/event-stream `schema` describes each
    event, which tools read as an object of the event's fields.
    """
    return {
        "type": "object",
        "required": ["data"],
        "properties": {
            "data": {
                "type": "string",
                "contentMediaType": "application/json",
                "contentSchema": message,
            },
            "event": {"type": "string"},
            "id": {"type": "string"},
            "retry": {"type": "integer"},
        },
    }


def load_examples() -> dict[str, Any]:
    """protos/examples.json: each message's example JSON, by full name (without the dot)."""
    examples: dict[str, Any] = json.loads(EXAMPLES.read_text())
    examples.pop("//", None)
    return examples


def _clean(comment: str) -> str:
    return "\n".join(line.strip() for line in comment.strip().splitlines()).strip()


def _schema_name(full_name: str) -> str:
    """`.paymesh.payment.v1.Payment` → `payment.v1.Payment`: unique and readable."""
    return full_name.removeprefix(".paymesh.")


class Builder:
    """Builds the schemas of messages as they reference one another, under `ref_prefix`."""

    def __init__(self, contracts: Contracts, *, ref_prefix: str = COMPONENTS) -> None:
        self.contracts = contracts
        self.ref_prefix = ref_prefix
        self.schemas: dict[str, Any] = {}

    def ref(self, full_name: str, *, request: bool) -> dict[str, Any]:
        """A reference to a message's schema (requests and responses differ: see `_scalar`)."""
        if full_name in _WELL_KNOWN:
            return dict(_WELL_KNOWN[full_name])
        name = _schema_name(full_name) + ("" if not request else ".Input")
        if name not in self.schemas:
            self.schemas[name] = {}  # placeholder: a message may refer to itself
            self.schemas[name] = self.message(full_name, request=request, exclude=set())
        return {"$ref": f"{self.ref_prefix}{name}"}

    def message(self, full_name: str, *, request: bool, exclude: set[str]) -> dict[str, Any]:
        """A message's object schema, without the fields in `exclude` (path-bound)."""
        message = self.contracts.messages[full_name]
        properties: dict[str, Any] = {}
        required: list[str] = []
        for index, field in enumerate(message.field):
            if field.name in exclude:
                continue
            property_schema = self.field(field, request=request)
            if request:
                property_schema = _nullable(property_schema)
            comment = self.contracts.field_comment(full_name, index)
            if comment:
                property_schema = {**property_schema, "description": comment}
            properties[field.name] = property_schema
            behaviors = field.options.Extensions[field_behavior_pb2.field_behavior]
            if (request and field_behavior_pb2.FieldBehavior.REQUIRED in behaviors) or (
                not request and _always_printed(field)
            ):
                required.append(field.name)
        schema: dict[str, Any] = {"type": "object", "properties": properties}
        if required:
            schema["required"] = required
        if request:
            schema["additionalProperties"] = False  # strict input: unknown members are refused
        description = self.contracts.message_comment(full_name)
        if description:
            schema["description"] = description
        example = self.contracts.examples.get(full_name.removeprefix("."))
        if example is not None:
            schema["examples"] = [{k: v for k, v in example.items() if k not in exclude}]
        return schema

    def field(self, field: Any, *, request: bool) -> dict[str, Any]:
        """A field's schema: its value's, in an array when repeated, an object when a map."""
        entry = self.contracts.messages.get(field.type_name)
        if entry is not None and entry.options.map_entry:
            return {"type": "object", "additionalProperties": self.value(entry.field[1], request)}
        value = self.value(field, request)
        if field.label == Label.LABEL_REPEATED:
            return {"type": "array", "items": value}
        return value

    def value(self, field: Any, request: bool) -> dict[str, Any]:
        if field.type == FieldType.TYPE_MESSAGE:
            return self.ref(field.type_name, request=request)
        return _scalar(field.type, request=request)


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    """A request member's schema that also takes null: proto3 JSON reads it as "not set"."""
    kind = schema.get("type")
    if isinstance(kind, str):
        return {**schema, "type": [kind, "null"]}
    if isinstance(kind, list):
        return {**schema, "type": [*kind, "null"]}
    return {"anyOf": [schema, {"type": "null"}]}


def _always_printed(field: Any) -> bool:
    """The transcoder prints every field without presence (always_print_primitive_fields)."""
    if field.proto3_optional or field.HasField("oneof_index"):
        return False
    return bool(field.type != FieldType.TYPE_MESSAGE or field.label == Label.LABEL_REPEATED)


def _scalar(kind: int, *, request: bool) -> dict[str, Any]:
    if kind in _INT32:
        return {"type": "integer", "format": "int32"}
    if kind in _UINT32:
        return {"type": "integer", "format": "int32", "minimum": 0}
    if kind in _INT64 or kind in _UINT64:
        bounds: dict[str, Any] = {"minimum": 0} if kind in _UINT64 else {}
        if request:
            # protobuf's JSON (and protobuf-es) also sends a 64-bit integer as a digit string.
            return {"type": ["integer", "string"], "format": "int64", "pattern": r"^-?[0-9]+$"}
        return {"type": "integer", "format": "int64", **bounds}
    if kind in (FieldType.TYPE_DOUBLE, FieldType.TYPE_FLOAT):
        return {"type": "number"}
    if kind == FieldType.TYPE_BOOL:
        return {"type": "boolean"}
    if kind == FieldType.TYPE_BYTES:
        return {"type": "string", "contentEncoding": "base64"}
    return {"type": "string"}


def _error_schema() -> dict[str, Any]:
    entries = catalog()
    types = sorted({entry.error_type for entry in entries} | {errors.API})
    return {
        "type": "object",
        "description": "Every error, whoever answers it (docs/api.md, Errors).",
        "required": ["error"],
        "additionalProperties": False,
        "properties": {
            "error": {
                "type": "object",
                "required": ["type", "code", "message", "request_id"],
                "additionalProperties": False,
                "properties": {
                    "type": {"type": "string", "enum": types},
                    "code": {
                        "type": "string",
                        "enum": [entry.code for entry in entries],
                        "description": "The error; docs/errors.md lists each with its meaning.",
                    },
                    "message": {"type": "string"},
                    "param": {"type": "string", "description": "The parameter at fault."},
                    "request_id": {
                        "type": ["string", "null"],
                        "description": (
                            "The response's X-Request-Id; null when the edge refused the "
                            "request before giving it one (malformed HTTP)."
                        ),
                    },
                },
            }
        },
    }


def _operation(
    builder: Builder, service: str, method: Any, *, verb: str, template: str, body: str
) -> dict[str, Any]:
    contracts = builder.contracts
    bound = re.findall(r"{([^}=]*)", template)
    # The account's key methods share their names with the operators' (ListApiKeys...).
    prefix = (
        "Account" if service == ACCOUNT_SERVICE and not method.name.startswith("Account") else ""
    )
    operation: dict[str, Any] = {
        "operationId": f"{prefix}{method.name}",
        "tags": [SERVICES[service]],
    }
    parameters: list[dict[str, Any]] = []
    input_message = contracts.messages[method.input_type]
    fields = {field.name: field for field in input_message.field}
    for name in bound:
        parameters.append(
            {
                "name": name,
                "in": "path",
                "required": True,
                "schema": builder.field(fields[name], request=True),
            }
        )
    if body == "*":
        schema = builder.message(method.input_type, request=True, exclude=set(bound))
        # The edge takes a missing body as `{}`: it may be left out when nothing is required.
        operation["requestBody"] = {
            "required": bool(schema.get("required")),
            "content": {"application/json": {"schema": schema}},
        }
    else:
        for index, field in enumerate(input_message.field):
            if field.name in bound:
                continue
            parameter: dict[str, Any] = {
                "name": field.name,
                "in": "query",
                "schema": builder.field(field, request=True),
            }
            comment = contracts.field_comment(method.input_type, index)
            if comment:
                parameter["description"] = comment
            parameters.append(parameter)
    if verb in WRITES and method.name not in NOT_KEYED:
        parameters.append({"$ref": "#/components/parameters/IdempotencyKey"})
    if parameters:
        operation["parameters"] = parameters
    output = builder.ref(method.output_type, request=False)
    content = (
        {"text/event-stream": {"schema": _sse_event(output), "x-event-schema": output}}
        if method.server_streaming
        else {"application/json": {"schema": output}}
    )
    operation["responses"] = {
        "200": {"description": "OK", "content": content},
        "4XX": {"$ref": "#/components/responses/Error"},
        "5XX": {"$ref": "#/components/responses/Error"},
    }
    if method.name in NO_CREDENTIAL:
        operation["security"] = []
    elif service == OPERATOR_SERVICE:
        operation["security"] = [{"OperatorSession": []}]
    elif service == ACCOUNT_SERVICE:
        operation["security"] = [{"UserSession": []}]
    return operation


def document(descriptor: Path) -> dict[str, Any]:
    """The OpenAPI document for the descriptor set."""
    files = list(descriptor_pb2.FileDescriptorSet.FromString(descriptor.read_bytes()).file)
    contracts = Contracts(files)
    builder = Builder(contracts)
    paths: dict[str, dict[str, Any]] = {}
    for file in files:
        for service_index, service in enumerate(file.service):
            full = f"{file.package}.{service.name}"
            if full not in SERVICES:
                continue
            for method_index, method in enumerate(service.method):
                rule = method.options.Extensions[annotations_pb2.http]
                for number, binding in enumerate([rule, *rule.additional_bindings]):
                    verb = binding.WhichOneof("pattern")
                    if verb is None:
                        continue
                    template = getattr(binding, verb)
                    operation = _operation(
                        builder, full, method, verb=verb, template=template, body=binding.body
                    )
                    comment = contracts.comments.get(
                        f"{file.name}:6,{service_index},2,{method_index}", ""
                    )
                    if comment:
                        operation["summary"] = comment.split(".")[0].replace("\n", " ")
                        operation["description"] = comment
                    if number:
                        operation["operationId"] = f"{method.name}{number}"
                        operation["deprecated"] = True  # an alias, e.g. POST /payments
                    paths.setdefault(template, {})[verb] = operation
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "paymesh API",
            "version": "v1",
            "description": (
                "Card payments, refunds, balance, events and webhook endpoints for merchants, "
                "and the operators' API. Generated from protos/ by tools/openapi.py; the "
                "conventions (errors, amounts, idempotency, lists) are in docs/api.md."
            ),
        },
        "servers": [{"url": "/"}],
        "security": [{"ApiKey": []}, {"BearerKey": []}, {"UserSession": []}],
        "tags": [{"name": tag} for tag in SERVICES.values()],
        "paths": dict(sorted(paths.items())),
        "components": {
            "securitySchemes": {
                "ApiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
                "BearerKey": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "A secret API key as a bearer token.",
                },
                "OperatorSession": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "An operator's session token from POST /admin/login.",
                },
                "UserSession": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": (
                        "A merchant user's session token from POST /v1/account/sessions; on the "
                        "merchant API, the Paymesh-Mode header (test or live) picks the mode."
                    ),
                },
            },
            "parameters": {
                "IdempotencyKey": {
                    "name": "Idempotency-Key",
                    "in": "header",
                    "description": (
                        "Makes the write safe to retry: the same key with the same request "
                        "within 24 h answers the first response again "
                        "(Idempotent-Replayed: true)."
                    ),
                    "schema": {"type": "string", "minLength": 1, "maxLength": 255},
                }
            },
            "responses": {
                "Error": {
                    "description": "An error in the one REST error shape.",
                    "content": {
                        "application/json": {"schema": {"$ref": "#/components/schemas/Error"}}
                    },
                }
            },
            "schemas": {"Error": _error_schema(), **dict(sorted(builder.schemas.items()))},
        },
    }


def object_schema(contracts: Contracts, full_name: str) -> dict[str, Any]:
    """A message's JSON Schema as responses print it, the messages it uses under `$defs`."""
    name = f".{full_name}"
    if name not in contracts.messages:
        raise SystemExit(f"the event type catalog names {full_name}, which is no message")
    builder = Builder(contracts, ref_prefix="#/$defs/")
    schema = {
        "$schema": JSON_SCHEMA_DIALECT,
        "title": _schema_name(name),
        **builder.message(name, request=False, exclude=set()),
    }
    if builder.schemas:
        schema["$defs"] = dict(sorted(builder.schemas.items()))
    return schema


def event_types(descriptor: Path) -> dict[str, Any]:
    """The event type catalog with each type's `data.object` schema (gen/event_types.json)."""
    files = list(descriptor_pb2.FileDescriptorSet.FromString(descriptor.read_bytes()).file)
    contracts = Contracts(files)
    return {
        "event_types": [
            {
                "name": entry.name,
                "description": entry.description,
                "object_type": entry.object_type,
                "object_schema": object_schema(contracts, entry.object_type),
            }
            for entry in event_catalog.entries()
        ]
    }


def main() -> None:
    """Writes the document and the event type catalog."""
    descriptor, out, types_out = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
    out.write_text(json.dumps(document(descriptor), indent=1, sort_keys=False) + "\n")
    types_out.write_text(json.dumps(event_types(descriptor), indent=1, sort_keys=False) + "\n")


if __name__ == "__main__":
    main()
