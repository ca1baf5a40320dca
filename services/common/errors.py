"""Domain errors shared by every service, and their mapping to `google.rpc.Status`.

    PaymeshError
    ├── ConfigurationError      (a process cannot start: not an RPC error)
    └── DomainError             (carries a gRPC code and an UPPER_SNAKE reason)
        ├── InvalidArgument     (INVALID_ARGUMENT, with field violations)
        ├── Unauthenticated     (UNAUTHENTICATED)
        ├── PermissionDenied    (PERMISSION_DENIED)
        ├── NotFound            (NOT_FOUND)
        ├── FailedPrecondition  (FAILED_PRECONDITION)
        ├── Conflict            (ABORTED)
        ├── AlreadyExists       (ALREADY_EXISTS)
        ├── ResourceExhausted   (RESOURCE_EXHAUSTED)
        └── Unavailable         (UNAVAILABLE)

Each service's own `errors` module subclasses these; the server kit turns any DomainError into
a status with one `ErrorInfo` and, where fields are at fault, a `BadRequest`. The edge prints
it for REST clients as `{"error": {"type", "code", "message", "param", "request_id"}}`: `code`
is the reason in lower case, `type` the class's `error_type`, the HTTP status the gRPC code's
(`http_status`). The errors only the edge answers (a bad body, an unknown route, 413, 503...)
are classes here too, so that services/runtime/errors.py lists every code the API can return.
"""

from __future__ import annotations

from dataclasses import dataclass

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2

ERROR_DOMAIN = "paymesh.dev"


class PaymeshError(Exception):
    """Base of every error paymesh raises on purpose."""


class ConfigurationError(PaymeshError):
    """A required setting is missing or wrong; the process cannot start."""


@dataclass(frozen=True)
class FieldViolation:
    """One field at fault, named by its JSON path (e.g. `payment_method.card.number`)."""

    field: str
    description: str


# The HTTP status of each gRPC code, as Envoy's transcoder (and grpc-gateway) map them.
HTTP_STATUS = {
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNKNOWN: 500,
    grpc.StatusCode.INTERNAL: 500,
    grpc.StatusCode.DATA_LOSS: 500,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
}

# A REST error's `type`: what kind of mistake it is, as Stripe's API groups them.
INVALID_REQUEST = "invalid_request_error"  # the request is wrong; sent again it fails again
AUTHENTICATION = "authentication_error"  # no valid API key or session
PERMISSION = "permission_error"  # the key or session may not make this call
IDEMPOTENCY = "idempotency_error"  # the Idempotency-Key clashes with an earlier request
RATE_LIMIT = "rate_limit_error"  # too many requests: retry after a pause
API = "api_error"  # paymesh could not answer: retry later (with the same Idempotency-Key)


class DomainError(PaymeshError):
    """An error a client caused or must handle; becomes a gRPC status."""

    code: grpc.StatusCode = grpc.StatusCode.FAILED_PRECONDITION
    reason: str = "FAILED_PRECONDITION"
    error_type: str = INVALID_REQUEST
    status: int | None = None  # the HTTP status, when not the gRPC code's (edge errors only)

    def __init__(
        self,
        message: str,
        *,
        reason: str | None = None,
        violations: list[FieldViolation] | None = None,
        metadata: dict[str, str] | None = None,
    ) -> None:
        self.violations = violations or []
        # The message names every field at fault: a REST error shows one `param`.
        listed = "; ".join(f"{v.field}: {v.description}" for v in self.violations)
        if listed and listed not in message:
            message = f"{message} ({listed})"
        super().__init__(message)
        self.message = message
        if reason is not None:
            self.reason = reason
        self.metadata = metadata or {}

    def to_status(self) -> status_pb2.Status:
        """The rich status sent to the client."""
        info = error_details_pb2.ErrorInfo(
            reason=self.reason, domain=ERROR_DOMAIN, metadata=self.metadata
        )
        details = [_pack(info)]
        if self.violations:
            bad_request = error_details_pb2.BadRequest(
                field_violations=[
                    error_details_pb2.BadRequest.FieldViolation(
                        field=v.field, description=v.description
                    )
                    for v in self.violations
                ]
            )
            details.append(_pack(bad_request))
        return status_pb2.Status(code=self.code.value[0], message=self.message, details=details)

    @classmethod
    def http_status(cls) -> int:
        """The HTTP status a REST client gets."""
        return cls.status or HTTP_STATUS[cls.code]


def _pack(message: error_details_pb2.ErrorInfo | error_details_pb2.BadRequest) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


class InvalidArgument(DomainError):
    """The request is malformed; `param` (gRPC: a BadRequest) names the field at fault."""

    code = grpc.StatusCode.INVALID_ARGUMENT
    reason = "INVALID_ARGUMENT"

    @classmethod
    def field(cls, field: str, description: str) -> InvalidArgument:
        """An error about one field."""
        return cls(f"{field}: {description}", violations=[FieldViolation(field, description)])


class Unauthenticated(DomainError):
    """No valid credential came with the call."""

    code = grpc.StatusCode.UNAUTHENTICATED
    reason = "UNAUTHENTICATED"
    error_type = AUTHENTICATION


class PermissionDenied(DomainError):
    """The credential is valid but does not allow this call."""

    code = grpc.StatusCode.PERMISSION_DENIED
    reason = "PERMISSION_DENIED"
    error_type = PERMISSION


class NotFound(DomainError):
    """No such object, or not the caller's."""

    code = grpc.StatusCode.NOT_FOUND
    reason = "NOT_FOUND"


class FailedPrecondition(DomainError):
    """The object is not in a state that allows the call."""

    code = grpc.StatusCode.FAILED_PRECONDITION
    reason = "FAILED_PRECONDITION"


class Conflict(DomainError):
    """A concurrent request got there first; safe to retry."""

    code = grpc.StatusCode.ABORTED
    reason = "CONFLICT"


class AlreadyExists(DomainError):
    """The object exists already."""

    code = grpc.StatusCode.ALREADY_EXISTS
    reason = "ALREADY_EXISTS"


class ResourceExhausted(DomainError):
    """A limit was reached (rate limit, quota)."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED
    reason = "RESOURCE_EXHAUSTED"
    error_type = RATE_LIMIT


class Unavailable(DomainError):
    """A dependency is down; retry later."""

    code = grpc.StatusCode.UNAVAILABLE
    reason = "UNAVAILABLE"
    error_type = API


class Internal(DomainError):
    """An unexpected failure inside paymesh; it says nothing about the cause (see the logs)."""

    code = grpc.StatusCode.INTERNAL
    reason = "INTERNAL"
    error_type = API


class SecretKeyRequired(PermissionDenied):
    """The call needs a secret key; a publishable key may only confirm with a client secret."""

    reason = "SECRET_KEY_REQUIRED"


class MerchantRoleRequired(PermissionDenied):
    """A merchant user's role does not allow the method (viewers read; developers also manage
    keys and webhooks)."""

    reason = "MERCHANT_ROLE_REQUIRED"


class LiveModeDisabled(PermissionDenied):
    """The merchant is in test mode only: no live session or key until an operator enables it."""

    reason = "LIVE_MODE_DISABLED"


class UnknownParameter(InvalidArgument):
    """A body member or query parameter that the operation does not have (`param` names it)."""

    reason = "UNKNOWN_PARAMETER"


class InvalidParameterType(InvalidArgument):
    """A value of the wrong type, e.g. `"amount": 10.5` (`param` names it), or a body that is
    no JSON object."""

    reason = "INVALID_PARAMETER_TYPE"


class ValueOutOfRange(InvalidArgument):
    """A value the database cannot hold (a gRPC caller's; REST sees INVALID_PARAMETER_TYPE)."""

    reason = "VALUE_OUT_OF_RANGE"


# The edge's own refusals: Envoy answers these before any service sees the request.


class InvalidJson(InvalidArgument):
    """The body is not strict JSON (RFC 8259, UTF-8, each object naming each member once)."""

    reason = "INVALID_JSON"


class InvalidRequest(InvalidArgument):
    """The request could not be read as this operation's (the transcoder refused it)."""

    reason = "INVALID_REQUEST"


class UnsupportedMediaType(InvalidArgument):
    """A body sent with a Content-Type other than application/json (HTTP 415)."""

    reason = "UNSUPPORTED_MEDIA_TYPE"
    status = 415


class RouteNotFound(NotFound):
    """No operation has this path."""

    reason = "ROUTE_NOT_FOUND"


class MethodNotAllowed(DomainError):
    """The path exists but takes another HTTP method (HTTP 405)."""

    code = grpc.StatusCode.UNIMPLEMENTED
    reason = "METHOD_NOT_ALLOWED"
    status = 405


class BodyTooLarge(InvalidArgument):
    """The body is larger than 1 MiB (HTTP 413)."""

    reason = "BODY_TOO_LARGE"
    status = 413


class HeadersTooLarge(InvalidArgument):
    """The request's headers are larger than the edge takes (HTTP 431)."""

    reason = "HEADERS_TOO_LARGE"
    status = 431


class RequestTimeout(InvalidArgument):
    """The request was not received in full in time (HTTP 408)."""

    reason = "REQUEST_TIMEOUT"
    status = 408


class ServiceUnavailable(Unavailable):
    """No copy of the service could take the call: retry later, with the same Idempotency-Key."""

    reason = "SERVICE_UNAVAILABLE"


class GatewayTimeout(DomainError):
    """The service did not answer in time; the call may or may not have taken effect: retry it
    with the same Idempotency-Key."""

    code = grpc.StatusCode.DEADLINE_EXCEEDED
    reason = "GATEWAY_TIMEOUT"
    error_type = API


def internal_status() -> status_pb2.Status:
    """The status for an unexpected exception: it says nothing about the cause."""
    return Internal("internal error").to_status()


_CODE_NAMES = {code.value[0]: code.name for code in grpc.StatusCode}


def status_code_name(code: int) -> str:
    """The name of a `google.rpc.Status` code (`UNAVAILABLE`), or the number when unknown."""
    return _CODE_NAMES.get(code, str(code))
