"""Errors of the payment service."""

from services.common.errors import NotFound


class PaymentNotFound(NotFound):
    """No payment with this id for this merchant and mode."""

    reason = "PAYMENT_NOT_FOUND"
