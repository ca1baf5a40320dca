"""The server kit in-process on port 0: error mapping, auth policies, health.

pytest-grpc builds synchronous `grpc.server`s from its own fixtures; the kit's servers are
grpc.aio with an interceptor, so these tests start the kit's own server on port 0 instead.
"""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import psycopg
from google.rpc import error_details_pb2, status_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from psycopg.errors import NumericValueOutOfRange
from sqlalchemy.exc import DataError, OperationalError

from services.common.api_keys import generate_key
from services.common.auth import ApiKeyAuthenticator, AuthPolicy, current_principal
from services.common.errors import FieldViolation, InvalidArgument
from services.common.server import STATUS_DETAILS_KEY, ServiceSpec, create_server

SERVICE = "paymesh.test.v1.EchoService"


def _identity(value: bytes) -> bytes:
    return value


async def _ok(request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
    return request


async def _invalid(request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
    raise InvalidArgument("bad", violations=[FieldViolation("amount", "must be positive")])


async def _crash(request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
    raise RuntimeError("database password is hunter2")


async def _bad_value(request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
    raise DataError("INSERT ...", {}, NumericValueOutOfRange("integer out of range"))


async def _database_down(request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
    raise OperationalError("SELECT 1", {}, psycopg.OperationalError("connection refused"))


async def _whoami(request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
    return current_principal().merchant_id.encode()


def _spec() -> ServiceSpec:
    handlers = {
        name: grpc.unary_unary_rpc_method_handler(
            behaviour, request_deserializer=_identity, response_serializer=_identity
        )
        for name, behaviour in {
            "Ok": _ok,
            "Invalid": _invalid,
            "Crash": _crash,
            "BadValue": _bad_value,
            "DatabaseDown": _database_down,
            "WhoAmI": _whoami,
        }.items()
    }

    def register(server: grpc.aio.Server) -> None:
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))

    return ServiceSpec(
        name="test",
        register=register,
        service_names=[SERVICE],
        policies={f"/{SERVICE}/WhoAmI": AuthPolicy.SECRET_KEY},
    )


async def _call(
    method: str, metadata: tuple[tuple[str, str], ...] = ()
) -> tuple[grpc.StatusCode, bytes | None, status_pb2.Status | None]:
    # Missing and malformed keys are refused before any lookup, so no admin service is needed.
    authenticator = ApiKeyAuthenticator(
        grpc.aio.insecure_channel("127.0.0.1:9"), ttl_s=1, timeout_s=1
    )
    server, port, health_servicer = create_server(_spec(), port=0, authenticator=authenticator)
    await server.start()
    await health_servicer.set(SERVICE, health_pb2.HealthCheckResponse.SERVING)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            call = channel.unary_unary(
                f"/{SERVICE}/{method}",
                request_serializer=_identity,
                response_deserializer=_identity,
            )
            try:
                reply = await call(b"ping", timeout=5, metadata=metadata)
                return grpc.StatusCode.OK, reply, None
            except grpc.aio.AioRpcError as error:
                # grpc's stubs type trailers loosely; at run time they are (key, value) pairs.
                trailers: Any = error.trailing_metadata() or ()
                value = dict(trailers).get(STATUS_DETAILS_KEY)
                details = status_pb2.Status.FromString(value) if isinstance(value, bytes) else None
                return error.code(), None, details
    finally:
        await server.stop(None)


def test_a_plain_call_passes_through() -> None:
    assert asyncio.run(_call("Ok")) == (grpc.StatusCode.OK, b"ping", None)


def test_a_domain_error_becomes_a_rich_status() -> None:
    code, _, status = asyncio.run(_call("Invalid"))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert status is not None
    info = error_details_pb2.ErrorInfo()
    assert status.details[0].Unpack(info)
    assert info.reason == "INVALID_ARGUMENT"
    bad_request = error_details_pb2.BadRequest()
    assert status.details[1].Unpack(bad_request)
    assert bad_request.field_violations[0].field == "amount"


def test_an_unexpected_exception_is_internal_and_leaks_nothing() -> None:
    code, _, status = asyncio.run(_call("Crash"))
    assert code == grpc.StatusCode.INTERNAL
    assert status is not None
    assert "hunter2" not in status.SerializeToString().decode(errors="replace")
    assert status.message == "internal error"


def test_a_method_needing_a_key_refuses_a_call_without_one() -> None:
    code, _, status = asyncio.run(_call("WhoAmI"))
    assert code == grpc.StatusCode.UNAUTHENTICATED
    assert status is not None


def test_a_malformed_key_is_refused_without_a_lookup() -> None:
    code, _, _ = asyncio.run(_call("WhoAmI", (("x-api-key", "sk_test_nope"),)))
    assert code == grpc.StatusCode.UNAUTHENTICATED


def test_a_publishable_key_is_refused_where_a_secret_key_is_needed() -> None:
    key = generate_key(kind="publishable", mode="test")
    code, _, status = asyncio.run(_call("WhoAmI", (("authorization", f"Bearer {key}"),)))
    assert code == grpc.StatusCode.PERMISSION_DENIED
    assert status is not None


def test_health_answers_for_the_service() -> None:
    async def check() -> int:
        server, port, health_servicer = create_server(_spec(), port=0)
        await server.start()
        await health_servicer.set(SERVICE, health_pb2.HealthCheckResponse.SERVING)
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                reply = await health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(service=SERVICE), timeout=5
                )
                return int(reply.status)
        finally:
            await server.stop(None)

    assert asyncio.run(check()) == health_pb2.HealthCheckResponse.SERVING


def test_a_value_the_database_refuses_is_invalid_argument() -> None:
    code, _, status = asyncio.run(_call("BadValue"))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert status is not None
    info = error_details_pb2.ErrorInfo()
    assert status.details[0].Unpack(info)
    assert info.reason == "VALUE_OUT_OF_RANGE"
    assert "integer" not in status.message


def test_an_unreachable_database_is_unavailable_so_clients_retry() -> None:
    code, _, status = asyncio.run(_call("DatabaseDown"))
    assert code == grpc.StatusCode.UNAVAILABLE
    assert status is not None
    assert "refused" not in status.message
