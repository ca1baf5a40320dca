"""Errors of the webhook service."""

from services.common.errors import (
    INVALID_REQUEST,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
)


class EventNotFound(NotFound):
    """No event with this id for this merchant and mode."""

    reason = "EVENT_NOT_FOUND"


class EndpointNotFound(NotFound):
    """No webhook endpoint with this id for this merchant and mode."""

    reason = "WEBHOOK_ENDPOINT_NOT_FOUND"


class DeliveryNotFound(NotFound):
    """No delivery with this id (for this merchant and mode, on merchant calls)."""

    reason = "WEBHOOK_DELIVERY_NOT_FOUND"


class UrlRefused(InvalidArgument):
    """The endpoint URL is malformed, not http(s), or points at a non-public address."""

    reason = "WEBHOOK_URL_REFUSED"


class EventTooLarge(InvalidArgument):
    """The event's payload is over the size cap."""

    reason = "EVENT_TOO_LARGE"


class EndpointNotEnabled(FailedPrecondition):
    """The endpoint is disabled or deleted, so nothing can be sent to it."""

    reason = "WEBHOOK_ENDPOINT_NOT_ENABLED"


class DeliveryInProgress(FailedPrecondition):
    """The delivery is still pending or retrying; only finished deliveries are replayed."""

    reason = "WEBHOOK_DELIVERY_IN_PROGRESS"


class EndpointLimit(ResourceExhausted):
    """The merchant has as many webhook endpoints in this mode as it may."""

    reason = "WEBHOOK_ENDPOINT_LIMIT"
    error_type = INVALID_REQUEST  # a quota: waiting does not help, deleting an endpoint does


class EventNotStorable(InvalidArgument):
    """The database refused a published event as sent (an internal publisher's mistake)."""

    reason = "EVENT_NOT_STORABLE"
