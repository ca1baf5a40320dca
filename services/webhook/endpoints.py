"""Webhook endpoints: registration, changes, deletion, and their signing secrets."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import select, tuple_, update
from sqlalchemy.orm import Session

from services.common.errors import FieldViolation, InvalidArgument
from services.common.ids import has_prefix, new_id
from services.common.pages import PageTokens, Scope
from services.common.rest_json import message_to_json
from services.webhook import catalog, events
from services.webhook.addresses import AddressRefused, check_registration
from services.webhook.crypto import SecretBox, new_secret
from services.webhook.dispatch import DueAttempt
from services.webhook.errors import EndpointLimit, EndpointNotFound, UrlRefused
from services.webhook.models import Delivery, Endpoint, EndpointSecret
from services.webhook.views import endpoint_to_proto

ENDPOINTS_PER_MERCHANT_MAX = 16
ENABLED_EVENTS_MAX = 64
DESCRIPTION_CHARS_MAX = 1000
# A catalog type (protos/paymesh/webhook/v1/event_types.proto); tests/unit checks it is one.
DISABLED_EVENT_TYPE = "webhook_endpoint.disabled"


@dataclass(frozen=True)
class Owner:
    """The merchant and mode an endpoint belongs to."""

    merchant_id: str
    livemode: bool


def normalize_events(values: list[str]) -> list[str]:
    """Distinct catalog event types in the given order, `["*"]` when `*` is among them."""
    if not values:
        raise InvalidArgument.field("enabled_events", "must list event types or '*'")
    if len(values) > ENABLED_EVENTS_MAX:
        raise InvalidArgument.field("enabled_events", f"at most {ENABLED_EVENTS_MAX} types")
    for value in values:
        if value != catalog.ALL_TYPES:
            catalog.check_known(value, field="enabled_events")
    if catalog.ALL_TYPES in values:
        return [catalog.ALL_TYPES]
    return list(dict.fromkeys(values))


def _check_url(url: str, *, allow_private: bool) -> str:
    if not url:
        raise InvalidArgument.field("url", "is required")
    try:
        check_registration(url, allow_private=allow_private)
    except AddressRefused as error:
        raise UrlRefused(f"url: {error}", violations=[FieldViolation("url", str(error))]) from error
    return url


def _check_description(description: str) -> str:
    if len(description) > DESCRIPTION_CHARS_MAX:
        raise InvalidArgument.field("description", f"at most {DESCRIPTION_CHARS_MAX} characters")
    return description


def _add_secret(session: Session, box: SecretBox, endpoint_id: str, now: datetime) -> str:
    secret = new_secret()
    session.add(
        EndpointSecret(
            endpoint_id=endpoint_id,
            ciphertext=box.encrypt(secret, endpoint_id=endpoint_id),
            create_time=now,
            expire_time=None,
        )
    )
    return secret


def create_endpoint(
    session: Session,
    *,
    owner: Owner,
    url: str,
    enabled_events: list[str],
    description: str,
    box: SecretBox,
    allow_private: bool,
) -> tuple[Endpoint, str]:
    """Registers an endpoint; returns it with its secret (the only time the secret is seen)."""
    _check_url(url, allow_private=allow_private)
    types = normalize_events(enabled_events)
    _check_description(description)
    count = len(
        session.scalars(
            select(Endpoint.id)
            .where(
                Endpoint.merchant_id == owner.merchant_id,
                Endpoint.livemode == owner.livemode,
                Endpoint.delete_time.is_(None),
            )
            .limit(ENDPOINTS_PER_MERCHANT_MAX)
        ).all()
    )
    if count >= ENDPOINTS_PER_MERCHANT_MAX:
        raise EndpointLimit(f"at most {ENDPOINTS_PER_MERCHANT_MAX} webhook endpoints per mode")
    now = datetime.now(UTC)
    endpoint = Endpoint(
        id=new_id("we"),
        merchant_id=owner.merchant_id,
        livemode=owner.livemode,
        url=url,
        enabled_events=types,
        description=description,
        status="enabled",
        disabled_reason="",
        create_time=now,
        update_time=now,
    )
    session.add(endpoint)
    session.flush()
    secret = _add_secret(session, box, endpoint.id, now)
    session.flush()
    return endpoint, secret


def get_endpoint_or_raise(session: Session, *, owner: Owner, endpoint_id: str) -> Endpoint:
    """The owner's endpoint (not deleted), or NOT_FOUND (also for another merchant's)."""
    endpoint = session.get(Endpoint, endpoint_id) if has_prefix(endpoint_id, "we") else None
    if (
        endpoint is None
        or endpoint.delete_time is not None
        or endpoint.merchant_id != owner.merchant_id
        or endpoint.livemode != owner.livemode
    ):
        raise EndpointNotFound(f"no such webhook endpoint: {endpoint_id[:80]}")
    return endpoint


def list_endpoints(
    session: Session, *, tokens: PageTokens, owner: Owner, page_size: int, page_token: str
) -> tuple[list[Endpoint], str]:
    """One page of the owner's endpoints, newest first, and the next page's token."""
    scope: Scope = {"merchant_id": owner.merchant_id, "livemode": owner.livemode}
    query = select(Endpoint).where(
        Endpoint.merchant_id == owner.merchant_id,
        Endpoint.livemode == owner.livemode,
        Endpoint.delete_time.is_(None),
    )
    after = tokens.open_after(page_token, list_name="webhook_endpoints", scope=scope)
    if after is not None:
        query = query.where(tuple_(Endpoint.create_time, Endpoint.id) < tuple_(*after))
    rows = list(
        session.scalars(
            query.order_by(Endpoint.create_time.desc(), Endpoint.id.desc()).limit(page_size + 1)
        )
    )
    if len(rows) <= page_size:
        return rows, ""
    rows = rows[:page_size]
    return rows, tokens.seal_after(
        rows[-1].create_time, rows[-1].id, list_name="webhook_endpoints", scope=scope
    )


def update_endpoint(
    session: Session,
    *,
    owner: Owner,
    endpoint_id: str,
    url: str | None,
    enabled_events: list[str],
    description: str | None,
    enabled: bool | None,
    allow_private: bool,
) -> Endpoint:
    """Changes the given fields; re-enabling clears the failure streak."""
    endpoint = get_endpoint_or_raise(session, owner=owner, endpoint_id=endpoint_id)
    if url is not None:
        endpoint.url = _check_url(url, allow_private=allow_private)
    if enabled_events:
        endpoint.enabled_events = normalize_events(enabled_events)
    if description is not None:
        endpoint.description = _check_description(description)
    if enabled is True:
        endpoint.status, endpoint.disabled_reason, endpoint.failing_since = "enabled", "", None
    elif enabled is False:
        endpoint.status, endpoint.disabled_reason = "disabled", "merchant"
    endpoint.update_time = datetime.now(UTC)
    session.flush()
    return endpoint


def delete_endpoint(session: Session, *, owner: Owner, endpoint_id: str) -> Endpoint:
    """Deletes an endpoint; its unfinished deliveries become dead at once."""
    endpoint = get_endpoint_or_raise(session, owner=owner, endpoint_id=endpoint_id)
    now = datetime.now(UTC)
    endpoint.delete_time = now
    endpoint.update_time = now
    session.execute(
        update(Delivery)
        .where(Delivery.endpoint_id == endpoint.id, Delivery.status.in_(("pending", "failing")))
        .values(
            status="dead",
            next_attempt_time=None,
            lease_expire_time=None,
            last_error="endpoint deleted",
            update_time=now,
        )
    )
    session.flush()
    return endpoint


def rotate_secret(
    session: Session, *, owner: Owner, endpoint_id: str, box: SecretBox, overlap_s: float
) -> tuple[Endpoint, str]:
    """A new current secret; the one it replaces keeps signing for `overlap_s`."""
    endpoint = get_endpoint_or_raise(session, owner=owner, endpoint_id=endpoint_id)
    now = datetime.now(UTC)
    active = session.scalars(
        select(EndpointSecret)
        .where(
            EndpointSecret.endpoint_id == endpoint.id,
            (EndpointSecret.expire_time.is_(None)) | (EndpointSecret.expire_time > now),
        )
        .order_by(EndpointSecret.create_time.desc(), EndpointSecret.id.desc())
        .with_for_update()
    ).all()
    # The replaced secret keeps signing for the overlap; any older one stops now, so at most
    # two secrets ever sign.
    for index, old in enumerate(active):
        old.expire_time = now + timedelta(seconds=overlap_s) if index == 0 else now
    session.flush()
    secret = _add_secret(session, box, endpoint.id, now)
    endpoint.update_time = now
    session.flush()
    return endpoint, secret


def active_secrets(session: Session, *, endpoint_id: str, box: SecretBox) -> list[str]:
    """The secrets that sign now, newest first."""
    now = datetime.now(UTC)
    rows = session.scalars(
        select(EndpointSecret)
        .where(
            EndpointSecret.endpoint_id == endpoint_id,
            (EndpointSecret.expire_time.is_(None)) | (EndpointSecret.expire_time > now),
        )
        .order_by(EndpointSecret.create_time.desc(), EndpointSecret.id.desc())
    ).all()
    return [box.decrypt(row.ciphertext, endpoint_id=endpoint_id) for row in rows]


def disable_endpoint(
    session: Session, *, endpoint: Endpoint, reason: str, bytes_max: int
) -> list[DueAttempt]:
    """Disables an endpoint and tells the merchant with an event; returns its first attempts."""
    if endpoint.status == "disabled":
        return []
    endpoint.status, endpoint.disabled_reason = "disabled", reason
    endpoint.update_time = datetime.now(UTC)
    session.flush()
    payload = message_to_json(endpoint_to_proto(endpoint))
    published = events.publish_event(
        session,
        event_id=new_id("evt"),
        merchant_id=endpoint.merchant_id,
        event_type=DISABLED_EVENT_TYPE,
        livemode=endpoint.livemode,
        obj={"object": "webhook_endpoint", **payload},
        create_time=None,
        bytes_max=bytes_max,
    )
    return published.first_attempts
