"""Errors of the admin service."""

from services.common.errors import InvalidArgument, NotFound


class MerchantNotFound(NotFound):
    """No merchant with this id."""

    reason = "MERCHANT_NOT_FOUND"


class ApiKeyNotFound(NotFound):
    """No API key with this id."""

    reason = "API_KEY_NOT_FOUND"


class InvalidOperator(InvalidArgument):
    """An operator's email, password or role is unacceptable."""

    reason = "INVALID_OPERATOR"
