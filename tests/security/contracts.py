"""The public API as the descriptor set describes it, so security tests cover every new RPC.

Every method with a `google.api.http` rule is listed with its verb, path template, body rule and
request fields; which fields carry an object id, and where (path, body or query), is derived
from the field names (`id`, `<resource>_id`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import grpc
from google.api import annotations_pb2
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import Message
from paymesh.admin.v1 import admin_pb2  # noqa: F401 - registers the messages in the pool
from paymesh.ledger.v1 import ledger_pb2  # noqa: F401 - registers the messages in the pool
from paymesh.payment.v1 import payment_pb2  # noqa: F401 - registers the messages in the pool
from paymesh.webhook.v1 import webhook_pb2  # noqa: F401 - registers the messages in the pool

DESCRIPTOR_SET = Path(__file__).resolve().parents[2] / "gen" / "paymesh.binpb"
ADMIN_SERVICE = "paymesh.admin.v1.AdminService"
# Merchant users' own account: their sessions only, never API keys.
ACCOUNT_SERVICE = "paymesh.admin.v1.AccountService"
# Methods a publishable key (or no key at all, with the client secret) may call.
CLIENT_SECRET_METHODS = frozenset({"ConfirmPayment", "GetCheckout"})
_VARIABLE = re.compile(r"\{([^}=]+)(?:=[^}]*)?\}")
_STRING = descriptor_pb2.FieldDescriptorProto.TYPE_STRING
_REPEATED = descriptor_pb2.FieldDescriptorProto.LABEL_REPEATED


@dataclass(frozen=True)
class Field:
    """One request field."""

    name: str
    type: int
    repeated: bool
    message_type: str


@dataclass(frozen=True)
class RestMethod:
    """One public RPC and its REST mapping."""

    service: str
    name: str
    verb: str
    path: str
    body: str
    input_type: str
    fields: tuple[Field, ...]
    # Server streaming: the answer is a long-lived stream, not one message.
    streaming: bool = False

    @property
    def full_name(self) -> str:
        """The gRPC method path, `/pkg.Service/Method`."""
        return f"/{self.service}/{self.name}"

    @property
    def path_params(self) -> list[str]:
        """The variables of the path template, in order."""
        return _VARIABLE.findall(self.path)

    @property
    def is_admin(self) -> bool:
        """Whether it belongs to the operators' admin API."""
        return self.service == ADMIN_SERVICE

    @property
    def is_account(self) -> bool:
        """Whether it belongs to merchant users' account API."""
        return self.service == ACCOUNT_SERVICE

    def id_fields(self) -> list[tuple[str, str]]:
        """(field, where) for each string field naming an object: where is path, body or query."""
        found = []
        for item in self.fields:
            if item.type != _STRING or item.repeated:
                continue
            if item.name != "id" and not item.name.endswith("_id"):
                continue
            if item.name in self.path_params:
                where = "path"
            elif self.body == "*":
                where = "body"
            else:
                where = "query"
            found.append((item.name, where))
        return found

    def url(self, values: dict[str, str]) -> str:
        """The path with its variables filled in from `values`."""
        return _VARIABLE.sub(lambda match: values[match.group(1)], self.path)

    def request_message(self, values: dict[str, Any]) -> Message:
        """The gRPC request message with `values` set."""
        pool = descriptor_pool.Default()
        cls = message_factory.GetMessageClass(
            pool.FindMessageTypeByName(self.input_type.lstrip("."))
        )
        return cls(**values)

    def response_class(self) -> type[Message]:
        """The gRPC response message class."""
        pool = descriptor_pool.Default()
        method = pool.FindMethodByName(f"{self.service}.{self.name}")
        return message_factory.GetMessageClass(method.output_type)

    def call_grpc(
        self, channel: grpc.Channel, request: Message, *, key: str, timeout_s: float = 30.0
    ) -> Message:
        """Calls the method over gRPC with an API key."""
        stub = channel.unary_unary(
            self.full_name,
            request_serializer=lambda message: message.SerializeToString(),
            response_deserializer=self.response_class().FromString,
        )
        reply: Message = stub(request, metadata=(("x-api-key", key),), timeout=timeout_s)
        return reply


@cache
def rest_methods() -> tuple[RestMethod, ...]:
    """Every RPC of the descriptor set that has a REST mapping (the public API)."""
    files = descriptor_pb2.FileDescriptorSet()
    files.ParseFromString(DESCRIPTOR_SET.read_bytes())
    messages = {
        f".{proto.package}.{message.name}": message
        for proto in files.file
        for message in proto.message_type
    }
    found = []
    for proto in files.file:
        if not proto.package.startswith("paymesh."):
            continue
        for service in proto.service:
            for method in service.method:
                if not method.options.HasExtension(annotations_pb2.http):
                    continue
                rule = method.options.Extensions[annotations_pb2.http]
                verb = rule.WhichOneof("pattern")
                assert verb is not None and verb != "custom", method.name
                fields = tuple(
                    Field(item.name, item.type, item.label == _REPEATED, item.type_name)
                    for item in messages[method.input_type].field
                )
                found.append(
                    RestMethod(
                        service=f"{proto.package}.{service.name}",
                        name=method.name,
                        verb=verb.upper(),
                        path=getattr(rule, verb),
                        body=rule.body,
                        input_type=method.input_type,
                        fields=fields,
                        streaming=method.server_streaming,
                    )
                )
    assert found, "no REST methods in the descriptor set"
    return tuple(found)


def merchant_methods() -> list[RestMethod]:
    """The public methods merchants call with API keys (or a merchant user's session)."""
    return [method for method in rest_methods() if not method.is_admin and not method.is_account]


def account_methods() -> list[RestMethod]:
    """Merchant users' account methods."""
    return [method for method in rest_methods() if method.is_account]


def admin_methods() -> list[RestMethod]:
    """The operators' admin methods."""
    return [method for method in rest_methods() if method.is_admin]


def placeholder_url(method: RestMethod, value: str = "xyz_doesnotexist") -> str:
    """The method's path with every variable set to `value`."""
    return method.url({name: value for name in method.path_params})
