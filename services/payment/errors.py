"""Errors of the payment service.

DomainError (services.common.errors)
├── PaymentNotFound, RefundNotFound              (NOT_FOUND)
├── CustomerNotFound, PaymentMethodNotFound      (NOT_FOUND)
├── DisputeNotFound, PayoutNotFound              (NOT_FOUND)
├── PaymentStateInvalid, DisputeStateInvalid     (FAILED_PRECONDITION)
├── ChargeDisputed, PayoutStateInvalid           (FAILED_PRECONDITION)
├── InsufficientAvailableBalance, NoBankAccount  (FAILED_PRECONDITION)
└── AmountTooLarge                               (FAILED_PRECONDITION)

(The idempotency key errors are services/common/idempotency.py's, for every service.)

ProcessorError                                    (inside the worker only)
└── ProcessorUnavailable                          (transient: retry)
BankError                                         (inside the worker only)
"""

from services.common.errors import FailedPrecondition, NotFound


class PaymentNotFound(NotFound):
    """No payment with this id for this merchant and mode."""

    reason = "PAYMENT_NOT_FOUND"


class RefundNotFound(NotFound):
    """No refund with this id for this merchant and mode."""

    reason = "REFUND_NOT_FOUND"


class CustomerNotFound(NotFound):
    """No customer with this id for this merchant and mode (or it was deleted)."""

    reason = "CUSTOMER_NOT_FOUND"


class PaymentMethodNotFound(NotFound):
    """No saved payment method with this id for this merchant and mode."""

    reason = "PAYMENT_METHOD_NOT_FOUND"


class PaymentStateInvalid(FailedPrecondition):
    """The payment's status does not allow this call."""

    reason = "PAYMENT_STATE_INVALID"


class AmountTooLarge(FailedPrecondition):
    """More than can be captured or refunded."""

    reason = "AMOUNT_TOO_LARGE"


class ProcessorError(Exception):
    """The card processor could not answer; not a client-facing error."""


class ProcessorUnavailable(ProcessorError):
    """The processor is down or timed out; the same call may be retried."""


class DisputeNotFound(NotFound):
    """No dispute with this id for this merchant and mode."""

    reason = "DISPUTE_NOT_FOUND"


class DisputeStateInvalid(FailedPrecondition):
    """The dispute's status (or its passed due_by) does not allow this call."""

    reason = "DISPUTE_STATE_INVALID"


class ChargeDisputed(FailedPrecondition):
    """The payment is under a chargeback: it cannot be refunded (the dispute settles the money)."""

    reason = "CHARGE_DISPUTED"


class PayoutNotFound(NotFound):
    """No payout with this id for this merchant and mode."""

    reason = "PAYOUT_NOT_FOUND"


class PayoutStateInvalid(FailedPrecondition):
    """The payout's status does not allow this call (only a pending payout can be canceled)."""

    reason = "PAYOUT_STATE_INVALID"


class InsufficientAvailableBalance(FailedPrecondition):
    """A payout of more than the available balance (less payouts not yet posted)."""

    reason = "INSUFFICIENT_AVAILABLE_BALANCE"


class NoBankAccount(FailedPrecondition):
    """A payout asked for before the merchant set a bank account."""

    reason = "NO_BANK_ACCOUNT"


class BankError(Exception):
    """The simulated bank could not answer; not a client-facing error (retried by a re-drive)."""
