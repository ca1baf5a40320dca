"""Errors of the payment service.

DomainError (services.common.errors)
├── PaymentNotFound, RefundNotFound              (NOT_FOUND)
├── PaymentStateInvalid                          (FAILED_PRECONDITION)
├── AmountTooLarge                               (FAILED_PRECONDITION)
├── IdempotencyKeyReused                         (FAILED_PRECONDITION)
└── IdempotencyKeyInUse                          (ABORTED)

ProcessorError                                    (inside the worker only)
└── ProcessorUnavailable                          (transient: retry)
"""

from services.common.errors import IDEMPOTENCY, Conflict, FailedPrecondition, NotFound


class PaymentNotFound(NotFound):
    """No payment with this id for this merchant and mode."""

    reason = "PAYMENT_NOT_FOUND"


class RefundNotFound(NotFound):
    """No refund with this id for this merchant and mode."""

    reason = "REFUND_NOT_FOUND"


class PaymentStateInvalid(FailedPrecondition):
    """The payment's status does not allow this call."""

    reason = "PAYMENT_STATE_INVALID"


class AmountTooLarge(FailedPrecondition):
    """More than can be captured or refunded."""

    reason = "AMOUNT_TOO_LARGE"


class IdempotencyKeyReused(FailedPrecondition):
    """The key was used before with a different request."""

    reason = "IDEMPOTENCY_KEY_REUSED"
    error_type = IDEMPOTENCY


class IdempotencyKeyInUse(Conflict):
    """The first request with this key is still running; retry shortly."""

    reason = "IDEMPOTENCY_KEY_IN_USE"
    error_type = IDEMPOTENCY


class ProcessorError(Exception):
    """The card processor could not answer; not a client-facing error."""


class ProcessorUnavailable(ProcessorError):
    """The processor is down or timed out; the same call may be retried."""
