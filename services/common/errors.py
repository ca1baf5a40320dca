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
a status with one `ErrorInfo` and, where fields are at fault, a `BadRequest`.
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


class DomainError(PaymeshError):
    """An error a client caused or must handle; becomes a gRPC status."""

    code: grpc.StatusCode = grpc.StatusCode.FAILED_PRECONDITION
    reason: str = "FAILED_PRECONDITION"

    def __init__(
        self,
        message: str,
        *,
        reason: str | None = None,
        violations: list[FieldViolation] | None = None,
        metadata: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if reason is not None:
            self.reason = reason
        self.violations = violations or []
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


def _pack(message: error_details_pb2.ErrorInfo | error_details_pb2.BadRequest) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


class InvalidArgument(DomainError):
    """The request is malformed; `violations` says which fields and why."""

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


class PermissionDenied(DomainError):
    """The credential is valid but does not allow this call."""

    code = grpc.StatusCode.PERMISSION_DENIED
    reason = "PERMISSION_DENIED"


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
    reason = "RATE_LIMITED"


class Unavailable(DomainError):
    """A dependency is down; retry later."""

    code = grpc.StatusCode.UNAVAILABLE
    reason = "UNAVAILABLE"


def internal_status() -> status_pb2.Status:
    """The status for an unexpected exception: it says nothing about the cause."""
    info = error_details_pb2.ErrorInfo(reason="INTERNAL", domain=ERROR_DOMAIN)
    return status_pb2.Status(
        code=grpc.StatusCode.INTERNAL.value[0],
        message="internal error",
        details=[_pack(info)],
    )


_CODE_NAMES = {code.value[0]: code.name for code in grpc.StatusCode}


def status_code_name(code: int) -> str:
    """The name of a `google.rpc.Status` code (`UNAVAILABLE`), or the number when unknown."""
    return _CODE_NAMES.get(code, str(code))
