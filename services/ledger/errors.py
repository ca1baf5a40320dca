"""Errors of the ledger service."""

from services.common.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound


class InvalidPosting(InvalidArgument):
    """A transaction to post is malformed or does not balance."""

    reason = "INVALID_LEDGER_TRANSACTION"


class ReferenceReused(AlreadyExists):
    """The external reference was posted before with different postings."""

    reason = "LEDGER_REFERENCE_REUSED"


class AccountNotFound(NotFound):
    """No ledger account with this id."""

    reason = "LEDGER_ACCOUNT_NOT_FOUND"


class ReconciliationRangeTooLarge(FailedPrecondition):
    """More items in the range than one reconciliation checks; reconcile a shorter range."""

    reason = "RECONCILIATION_RANGE_TOO_LARGE"
