"""Errors of the admin service."""

import grpc

from services.common.errors import (
    DomainError,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Unauthenticated,
    Unavailable,
)
from services.common.ratelimit import RateLimited


class MerchantNotFound(NotFound):
    """No merchant with this id."""

    reason = "MERCHANT_NOT_FOUND"


class ApiKeyNotFound(NotFound):
    """No API key with this id."""

    reason = "API_KEY_NOT_FOUND"


class InvalidOperator(InvalidArgument):
    """An operator's email, password or role is unacceptable."""

    reason = "INVALID_OPERATOR"


class InvalidCredentials(Unauthenticated):
    """The email or the password is wrong (which one is not said)."""

    reason = "INVALID_CREDENTIALS"


class SessionInvalid(Unauthenticated):
    """No session token, or an unknown, expired or ended one."""

    reason = "SESSION_INVALID"


class OperatorSessionRequired(PermissionDenied):
    """A merchant API key was used on an admin method."""

    reason = "OPERATOR_SESSION_REQUIRED"


class OperatorRoleRequired(PermissionDenied):
    """A viewer called a method that changes something."""

    reason = "OPERATOR_ROLE_REQUIRED"


class InvalidUser(InvalidArgument):
    """A merchant user's email, password or role is unacceptable."""

    reason = "INVALID_USER"


class InviteInvalid(InvalidArgument):
    """The invitation token is unknown, expired or already used."""

    reason = "INVITE_INVALID"


class UserNotFound(NotFound):
    """No user with this id in the caller's merchant."""

    reason = "USER_NOT_FOUND"


class LastAdmin(FailedPrecondition):
    """The change would leave the merchant with no admin."""

    reason = "LAST_ADMIN"


class SignupDisabled(PermissionDenied):
    """This platform does not let anyone create a merchant (PAYMESH_MERCHANT_SIGNUP)."""

    reason = "SIGNUP_DISABLED"


class UserSessionRequired(PermissionDenied):
    """An API key or an operator session was used on a merchant user's account method."""

    reason = "USER_SESSION_REQUIRED"


class LoginRateLimited(RateLimited):
    """Too many failed logins for this email from this address; `retry_after_s` says when."""

    reason = "LOGIN_RATE_LIMITED"


class ReconciliationNotFound(NotFound):
    """No reconciliation run with this id."""

    reason = "RECONCILIATION_NOT_FOUND"


class DependencyUnavailable(Unavailable):
    """A service the admin views read from did not answer."""

    reason = "DEPENDENCY_UNAVAILABLE"


class RemoteError(DomainError):
    """A client error another service answered, passed on with its code, reason and fields."""

    def __init__(
        self,
        message: str,
        *,
        code: grpc.StatusCode,
        reason: str,
        violations: list[FieldViolation] | None = None,
    ) -> None:
        super().__init__(message, reason=reason, violations=violations)
        self.code = code
