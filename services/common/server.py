"""grpc.aio server bootstrap: health, reflection, auth, error mapping, metrics, graceful stop.

Every service builds its server with `create_server` and runs it with `run_server`. One
interceptor wraps each call: it sets the request id, authenticates the API key where the method
needs one, turns domain errors into `google.rpc.Status`, and records metrics.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import signal
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import grpc
import psycopg
from google.protobuf.message import DecodeError, Message
from google.protobuf.unknown_fields import UnknownFieldSet
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from prometheus_client import REGISTRY, Counter, Histogram, start_http_server
from prometheus_client.registry import Collector
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from sqlalchemy.exc import DataError, InterfaceError, OperationalError

from services.common import tracing, versions
from services.common.auth import (
    ApiKeyAuthenticator,
    AuthPolicy,
    OperatorAuthenticator,
    Principal,
    check_role,
    is_user_session_token,
    key_from_metadata,
    mode_from_metadata,
    operator_var,
    principal_var,
)
from services.common.errors import (
    DomainError,
    FieldViolation,
    InvalidArgument,
    Unauthenticated,
    Unavailable,
    UnknownParameter,
    ValueOutOfRange,
    internal_status,
)
from services.common.logs import bind, request_id_var
from services.common.ratelimit import ApiRateLimiter, RateLimited, client_address

logger = logging.getLogger(__name__)

RPC_TOTAL = Counter("paymesh_rpc_total", "RPCs served", ["method", "code"])
RPC_SECONDS = Histogram("paymesh_rpc_duration_seconds", "RPC latency", ["method"])
STATUS_DETAILS_KEY = "grpc-status-details-bin"
HEALTH_METHOD_PREFIX = "/grpc.health.v1.Health/"
MESSAGE_BYTES_MAX = 4 * 1024 * 1024


@dataclass
class ServiceSpec:
    """What a service registers: its servicers, and the auth policy of its methods."""

    name: str
    register: Callable[[grpc.aio.Server], None]
    service_names: list[str]
    # Full method name ("/pkg.Service/Method") or service name ("pkg.Service") -> policy.
    policies: dict[str, AuthPolicy] = field(default_factory=dict)
    # Checks OPERATOR_* policies; only the admin service has one.
    operator_authenticator: OperatorAuthenticator | None = None
    # Run after the server has drained, e.g. closing the event loop's connections.
    on_stop: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    # More metrics for its /metrics, read when scraped (services/common/metrics.py).
    collectors: list[Collector] = field(default_factory=list)


def _policy_for(policies: dict[str, AuthPolicy], method: str) -> AuthPolicy:
    if method in policies:
        return policies[method]
    service = method.lstrip("/").split("/", 1)[0]
    return policies.get(service, AuthPolicy.NONE)


async def _abort(context: grpc.aio.ServicerContext[Any, Any], error: DomainError | None) -> None:
    status = error.to_status() if error is not None else internal_status()
    await context.abort(
        grpc.StatusCode(_code_from_int(status.code)),
        status.message,
        trailing_metadata=((STATUS_DETAILS_KEY, status.SerializeToString()),),
    )


# What a request deserializer returns for bytes that are not the method's message, so the
# interceptor can answer INVALID_ARGUMENT (grpc itself would answer UNKNOWN, a 500 at the edge).
# The edge's transcoder produces such bytes from some JSON (e.g. an object where a map wants a
# string), so this is hostile input to refuse, not a bug to crash on.
UNDECODABLE = object()


@dataclass(frozen=True)
class _UnknownField:
    """What a request deserializer returns for a message with a field its proto does not have."""

    path: str  # the field's number, after the names of the messages it is in


def _unknown_field(message: Message, prefix: str = "") -> str | None:
    """The path of the first field of `message` (or of a message in it) its proto lacks."""
    unknown = UnknownFieldSet(message)
    if len(unknown):
        return f"{prefix}{unknown[0].field_number}"
    for descriptor, value in message.ListFields():
        if descriptor.message_type is None:
            continue
        if descriptor.message_type.GetOptions().map_entry:
            # A map's keys are data; only message values can hold fields.
            if descriptor.message_type.fields_by_name["value"].message_type is None:
                continue
            items = [(f"[{key!r}]", value[key]) for key in value]
        elif descriptor.is_repeated:
            items = [(f"[{index}]", item) for index, item in enumerate(value)]
        else:
            items = [("", value)]
        for suffix, item in items:
            found = _unknown_field(item, f"{prefix}{descriptor.name}{suffix}.")
            if found is not None:
                return found
    return None


def _tolerant(deserialize: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    if deserialize is None:
        return None

    def wrapped(data: bytes) -> Any:
        try:
            request = deserialize(data)
        except DecodeError:
            return UNDECODABLE
        if not isinstance(request, Message):
            return request
        # protobuf keeps fields it does not know as unknown fields, which the servicers would
        # ignore: a misspelt or newer field would be dropped in silence, as unknown JSON members
        # were. The message's size with and without them differs exactly when it has some
        # (0.75-0.8 us more than the parse alone on a create, bench/README.md); only then is it
        # parsed again to name the field. The size is not compared with len(data): a valid but
        # unusual encoding, such as a map entry that leaves out its empty key, is shorter than
        # protobuf's own and could hide unknown bytes.
        size = request.ByteSize()
        request.DiscardUnknownFields()
        if request.ByteSize() != size:
            found = _unknown_field(deserialize(data))
            assert found is not None, "DiscardUnknownFields dropped a field the walk missed"
            return _UnknownField(found)
        return request

    return wrapped


def _check_decoded(request: Any) -> None:
    if request is UNDECODABLE:
        raise InvalidArgument("the request body could not be decoded")
    if isinstance(request, _UnknownField):
        raise UnknownParameter(
            f"unknown field number {request.path.rpartition('.')[2]} in the request",
            violations=[FieldViolation(request.path, "is not a field of this request")],
        )


def _code_from_int(value: int) -> tuple[int, str]:
    for code in grpc.StatusCode:
        if code.value[0] == value:
            return code.value  # type: ignore[no-any-return]
    return grpc.StatusCode.INTERNAL.value  # type: ignore[no-any-return]


# The headers a call's response carries (gRPC initial metadata, which the edge turns into HTTP
# response headers): sent once, when the method has answered or failed.
response_headers_var: contextvars.ContextVar[list[tuple[str, str]] | None] = contextvars.ContextVar(
    "response_headers", default=None
)


def add_response_header(name: str, value: str) -> None:
    """Adds a header to the response of the call being served (e.g. `idempotent-replayed`)."""
    headers = response_headers_var.get()
    if headers is None:
        raise RuntimeError("add_response_header outside a call")
    headers.append((name, value))


async def _send_response_headers(context: grpc.aio.ServicerContext[Any, Any]) -> None:
    headers = response_headers_var.get()
    if headers:
        response_headers_var.set(None)  # once per call
        await context.send_initial_metadata(tuple(headers))


class KitInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    """Request id, authentication, error mapping and metrics for every method."""

    def __init__(
        self,
        policies: dict[str, AuthPolicy],
        authenticator: ApiKeyAuthenticator | None,
        operator_authenticator: OperatorAuthenticator | None = None,
        rate_limiter: ApiRateLimiter | None = None,
    ) -> None:
        self._policies = policies
        self._authenticator = authenticator
        self._operator_authenticator = operator_authenticator
        self._rate_limiter = rate_limiter

    async def _begin(self, method: str, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        response_headers_var.set([])
        await self._authenticate(method, context)
        # The API version the call is served under: asked for, or the merchant's default.
        asked = versions.requested(tuple(context.invocation_metadata() or ()))  # type: ignore[arg-type]
        principal = principal_var.get()
        if asked is not None or principal is not None:
            add_response_header(versions.HEADER, asked or principal.api_version)  # type: ignore[union-attr]

    async def _authenticate(self, method: str, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        metadata = context.invocation_metadata()
        request_id = ""
        for name, value in metadata or ():
            if name == "x-request-id" and isinstance(value, str):
                request_id = value[:128]
        request_id_var.set(request_id or uuid.uuid4().hex)
        principal_var.set(None)
        operator_var.set(None)
        policy = _policy_for(self._policies, method)
        if policy is AuthPolicy.NONE:
            return
        if policy in (
            AuthPolicy.OPERATOR_SESSION,
            AuthPolicy.OPERATOR_WRITE,
            AuthPolicy.USER_SESSION,
        ):
            if self._operator_authenticator is None:
                raise RuntimeError(f"{method} needs a session but no authenticator is set")
            if policy is AuthPolicy.USER_SESSION:
                principal = await self._operator_authenticator.authenticate_user(
                    tuple(metadata or ())  # type: ignore[arg-type]
                )
                check_role(principal, method)
                principal_var.set(principal)
                bind(merchant_id=principal.merchant_id)
                return
            operator_var.set(
                await self._operator_authenticator.authenticate_operator(
                    tuple(metadata or ()),  # type: ignore[arg-type]
                    policy,
                )
            )
            return
        if self._authenticator is None:
            raise RuntimeError(f"{method} needs an API key but no authenticator is configured")
        key = key_from_metadata(metadata)  # type: ignore[arg-type]
        if policy is AuthPolicy.CLIENT_SECRET and not key:
            return  # the method checks the client secret itself
        principal = await self._authenticate_key(self._authenticator, key, policy, metadata)
        check_role(principal, method)
        principal_var.set(principal)
        bind(merchant_id=principal.merchant_id)

    async def _authenticate_key(
        self,
        authenticator: ApiKeyAuthenticator,
        key: str | None,
        policy: AuthPolicy,
        metadata: Any,
    ) -> Principal:
        """The key's principal, with failures per address and calls per key rate-limited."""
        # A merchant user's session names its mode in a header; a key carries its own.
        mode = mode_from_metadata(tuple(metadata or ())) if is_user_session_token(key) else ""
        limiter = self._rate_limiter
        if limiter is None:
            return await authenticator.authenticate(key, policy, mode)
        address = client_address(tuple(metadata or ()))
        principal = authenticator.cached(key, policy, mode)
        if principal is not None:
            # No admin call to guard: the address's failures and the key's call in one trip.
            await limiter.check(
                address=address, merchant_id=principal.merchant_id, key_id=principal.key_id
            )
            return principal
        await limiter.check_failures(address)
        try:
            principal = await authenticator.authenticate(key, policy, mode)
        except Unauthenticated:
            await limiter.failed(address)
            raise
        # Before the method runs, so a refused call stores nothing (no idempotency record).
        await limiter.check(
            address=address, merchant_id=principal.merchant_id, key_id=principal.key_id
        )
        return principal

    async def _fail(
        self,
        method: str,
        context: grpc.aio.ServicerContext[Any, Any],
        error: Exception,
        *,
        with_headers: bool = True,
    ) -> None:
        """Aborts the call with the error's status; `with_headers` sends the response headers.

        A server stream refused before its first message sends none: its status then comes
        alone (trailers-only), which the edge turns into the error's HTTP status, where headers
        first would have committed a 200.
        """
        error = _as_domain_error(method, error)
        if isinstance(error, DomainError):
            RPC_TOTAL.labels(method, error.code.name).inc()
            if isinstance(error, RateLimited):
                add_response_header("retry-after", str(error.retry_after_s))
            if with_headers:
                await _send_response_headers(context)
            await _abort(context, error)
        logger.exception("unhandled error in %s", method)
        RPC_TOTAL.labels(method, "INTERNAL").inc()
        await _abort(context, None)

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Any]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Any:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        method: str = handler_call_details.method  # type: ignore[attr-defined]
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                self._wrap_unary(method, handler.unary_unary),
                request_deserializer=_tolerant(handler.request_deserializer),
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                self._wrap_stream(method, handler.unary_stream),
                request_deserializer=_tolerant(handler.request_deserializer),
                response_serializer=handler.response_serializer,
            )
        return handler

    def _wrap_unary(self, method: str, inner: Any) -> Any:
        async def wrapper(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            start = time.perf_counter()
            try:
                await self._begin(method, context)
                _check_decoded(request)
                response = await inner(request, context)
                await _send_response_headers(context)
            except asyncio.CancelledError:
                raise
            except Exception as error:
                if context.code() is not None and not isinstance(error, DomainError):
                    raise  # the servicer aborted on purpose
                await self._fail(method, context, error)
                raise
            finally:
                duration_s = time.perf_counter() - start
                RPC_SECONDS.labels(method).observe(duration_s)
                _access_line(method, context, duration_s)
            RPC_TOTAL.labels(method, "OK").inc()
            return response

        return wrapper

    def _wrap_stream(self, method: str, inner: Any) -> Any:
        async def wrapper(
            request: Any, context: grpc.aio.ServicerContext[Any, Any]
        ) -> AsyncIterator[Any]:
            headers_sent = False
            start = time.perf_counter()
            try:
                await self._begin(method, context)
                _check_decoded(request)
                async for item in inner(request, context):
                    # With the first message, not before: see `_fail`.
                    if not headers_sent:
                        await _send_response_headers(context)
                        headers_sent = True
                    yield item
            except asyncio.CancelledError:
                raise
            except Exception as error:
                if context.code() is not None and not isinstance(error, DomainError):
                    raise
                await self._fail(method, context, error, with_headers=headers_sent)
                raise
            finally:
                _access_line(method, context, time.perf_counter() - start)

        return wrapper


def _access_line(
    method: str, context: grpc.aio.ServicerContext[Any, Any], duration_s: float
) -> None:
    """The call's one access line: method, status and latency (with the ids every line has).

    The edge logs its own per HTTP request (route, HTTP status; envoy/envoy.yaml.tmpl); this
    one is the service's, for every call, internal ones too. Both carry the request id and,
    when tracing is on, the trace id.
    """
    if method.startswith(HEALTH_METHOD_PREFIX):
        return  # Envoy's health checks, every 2 s per service: no one's request
    code = context.code()
    logger.info(
        "rpc",
        extra={
            "method": method,
            "code": "OK" if code is None else _code_name(code),
            "duration_ms": round(duration_s * 1000, 3),
        },
    )


def _code_name(code: Any) -> str:
    if isinstance(code, grpc.StatusCode):
        return code.name
    return grpc.StatusCode(_code_from_int(int(code))).name


def _as_domain_error(method: str, error: Exception) -> Exception:
    """Failures of the stores that are not bugs, as the status a client can act on.

    A value PostgreSQL refuses (out of range, malformed) that got past validation is the
    caller's INVALID_ARGUMENT; a database or Redis that cannot be reached is UNAVAILABLE, which
    clients retry (a create with the same Idempotency-Key). Every other error stays INTERNAL.
    The transaction has rolled back either way, so nothing was changed.
    """
    if isinstance(error, (DataError, psycopg.DataError)):
        refused = getattr(error, "orig", error)  # SQLAlchemy wraps the driver's error
        logger.warning("%s: the database refused a value: %s", method, type(refused).__name__)
        return ValueOutOfRange("a value is out of range or malformed")
    if isinstance(
        error,
        (
            OperationalError,
            InterfaceError,
            psycopg.OperationalError,
            psycopg.InterfaceError,
            RedisConnectionError,
            RedisTimeoutError,
        ),
    ):
        logger.warning("%s: a backing store is unreachable: %r", method, error)
        return Unavailable("a backing service is unreachable right now; retry the call")
    return error


def create_server(
    spec: ServiceSpec,
    *,
    port: int,
    authenticator: ApiKeyAuthenticator | None = None,
    host: str = "127.0.0.1",
    rate_limiter: ApiRateLimiter | None = None,
) -> tuple[grpc.aio.Server, int, Any]:
    """A server with the service, health and reflection registered, bound to `port` (0 = any)."""
    server = grpc.aio.server(
        # The tracing interceptor (none when tracing is off) is the outermost, so the kit's
        # log lines and the service's spans fall inside the call's server span.
        interceptors=[
            *tracing.server_interceptors(),
            KitInterceptor(spec.policies, authenticator, spec.operator_authenticator, rate_limiter),
        ],
        options=[
            ("grpc.max_receive_message_length", MESSAGE_BYTES_MAX),
            ("grpc.max_send_message_length", MESSAGE_BYTES_MAX),
            ("grpc.so_reuseport", 0),
        ],
    )
    spec.register(server)
    health_servicer = health.aio.HealthServicer()  # type: ignore[attr-defined]
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        [
            *spec.service_names,
            health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
            reflection.SERVICE_NAME,
        ],
        server,
    )
    bound = server.add_insecure_port(f"{host}:{port}")
    if bound == 0:
        raise OSError(f"cannot listen on {host}:{port}")
    return server, bound, health_servicer


async def run_server(
    spec: ServiceSpec,
    *,
    port: int,
    metrics_port: int | None,
    grace_period_s: float,
    authenticator: ApiKeyAuthenticator | None = None,
    on_stop: Iterable[Callable[[], Awaitable[None]]] = (),
    host: str = "127.0.0.1",
    thread_pool_size: int = 10,
    rate_limiter: ApiRateLimiter | None = None,
) -> None:
    """Serves until SIGTERM or SIGINT, then drains in-flight calls for `grace_period_s`."""
    # Domain code is synchronous SQLAlchemy; it runs here, beside the event loop.
    loop = asyncio.get_running_loop()
    loop.set_default_executor(ThreadPoolExecutor(max_workers=thread_pool_size))
    if metrics_port is not None:
        for collector in spec.collectors:
            REGISTRY.register(collector)
        start_http_server(metrics_port, addr=host)
    server, bound, health_servicer = create_server(
        spec, port=port, authenticator=authenticator, host=host, rate_limiter=rate_limiter
    )
    await server.start()
    for name in ["", *spec.service_names]:
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    logger.info("%s listening", spec.name, extra={"port": bound, "metrics_port": metrics_port})

    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    logger.info("%s stopping", spec.name)
    await health_servicer.enter_graceful_shutdown()
    await server.stop(grace_period_s)
    for callback in [*spec.on_stop, *on_stop]:
        await callback()
