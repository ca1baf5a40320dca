"""Events: publishing (idempotent by id, fanned out to matching endpoints), reading, retention."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import delete, or_, select, tuple_
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from services.common.errors import InvalidArgument
from services.common.ids import has_prefix, new_id
from services.webhook.errors import EventNotFound, EventTooLarge
from services.webhook.models import Delivery, Endpoint, Event
from services.webhook.pages import decode_token, encode_token

EVENT_TYPE_PATTERN = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*){1,4}$")
EVENT_TYPE_CHARS_MAX = 100
MERCHANT_ID_CHARS_MAX = 40
OBJECT_ID_CHARS_MAX = 64
OBJECT_EVENTS_MAX = 1000


@dataclass(frozen=True)
class Published:
    """An event after publishing, and the deliveries this call created (empty on a repeat)."""

    event: Event
    delivery_ids: list[str]


def validate_event_type(value: str, *, field: str) -> None:
    """INVALID_ARGUMENT unless `value` looks like `payment.succeeded`."""
    if len(value) > EVENT_TYPE_CHARS_MAX or not EVENT_TYPE_PATTERN.match(value):
        raise InvalidArgument.field(field, "must be a dotted lower-case event type")


def publish_event(
    session: Session,
    *,
    event_id: str,
    merchant_id: str,
    event_type: str,
    livemode: bool,
    obj: dict[str, Any],
    create_time: datetime | None,
    bytes_max: int,
) -> Published:
    """Stores the event and one delivery per matching enabled endpoint; a repeat changes nothing."""
    if not has_prefix(event_id, "evt"):
        raise InvalidArgument.field("id", "must be an event id (evt_...)")
    if not merchant_id or len(merchant_id) > MERCHANT_ID_CHARS_MAX:
        raise InvalidArgument.field("merchant_id", "is required")
    validate_event_type(event_type, field="type")
    if not obj:
        raise InvalidArgument.field("object", "is required")
    object_id = obj.get("id", "")
    if not isinstance(object_id, str) or len(object_id) > OBJECT_ID_CHARS_MAX:
        raise InvalidArgument.field("object.id", "must be a string id")
    size = len(json.dumps(obj, separators=(",", ":")).encode())
    if size > bytes_max:
        raise EventTooLarge(
            f"the event's object is {size} bytes; the limit is {bytes_max}",
            metadata={"bytes_max": str(bytes_max)},
        )
    inserted = session.execute(
        insert(Event)
        .values(
            id=event_id,
            merchant_id=merchant_id,
            livemode=livemode,
            type=event_type,
            object_id=object_id,
            data=obj,
            create_time=create_time or datetime.now(UTC),
        )
        .on_conflict_do_nothing(index_elements=[Event.id])
        .returning(Event.id)
    ).scalar_one_or_none()
    event = session.get(Event, event_id)
    assert event is not None
    if inserted is None:
        return Published(event, [])
    return Published(event, fan_out(session, event))


def fan_out(session: Session, event: Event) -> list[str]:
    """Creates a pending delivery of `event` for each enabled endpoint subscribed to its type."""
    endpoints = session.scalars(
        select(Endpoint).where(
            Endpoint.merchant_id == event.merchant_id,
            Endpoint.livemode == event.livemode,
            Endpoint.status == "enabled",
            Endpoint.delete_time.is_(None),
            or_(
                Endpoint.enabled_events.contains(["*"]),
                Endpoint.enabled_events.contains([event.type]),
            ),
        )
    ).all()
    now = datetime.now(UTC)
    delivery_ids = []
    for endpoint in endpoints:
        delivery = Delivery(
            id=new_id("whd"),
            event_id=event.id,
            endpoint_id=endpoint.id,
            merchant_id=event.merchant_id,
            livemode=event.livemode,
            status="pending",
            attempt_count=0,
            round_attempts=0,
            next_attempt_time=now,
        )
        session.add(delivery)
        delivery_ids.append(delivery.id)
    session.flush()
    return delivery_ids


def get_event_or_raise(
    session: Session, *, merchant_id: str, livemode: bool, event_id: str
) -> Event:
    """The merchant's event in this mode, or NOT_FOUND (also for another merchant's)."""
    event = session.get(Event, event_id) if has_prefix(event_id, "evt") else None
    if event is None or event.merchant_id != merchant_id or event.livemode != livemode:
        raise EventNotFound(f"no such event: {event_id[:80]}")
    return event


def list_events(
    session: Session,
    *,
    merchant_id: str,
    livemode: bool,
    event_type: str,
    page_size: int,
    page_token: str,
) -> tuple[list[Event], str]:
    """One page of the merchant's events, newest first, and the next page's token."""
    if event_type:
        validate_event_type(event_type, field="type")
    query = select(Event).where(Event.merchant_id == merchant_id, Event.livemode == livemode)
    if event_type:
        query = query.where(Event.type == event_type)
    after = decode_token(page_token)
    if after is not None:
        query = query.where(tuple_(Event.create_time, Event.id) < tuple_(after[0], after[1]))
    rows = list(
        session.scalars(
            query.order_by(Event.create_time.desc(), Event.id.desc()).limit(page_size + 1)
        )
    )
    if len(rows) <= page_size:
        return rows, ""
    rows = rows[:page_size]
    return rows, encode_token(rows[-1].create_time, rows[-1].id)


def list_object_events(session: Session, *, object_id: str) -> list[Event]:
    """Every event about one object, of any merchant, oldest first (bounded)."""
    if not object_id or len(object_id) > OBJECT_ID_CHARS_MAX:
        raise InvalidArgument.field("object_id", "is required")
    return list(
        session.scalars(
            select(Event)
            .where(Event.object_id == object_id)
            .order_by(Event.create_time, Event.id)
            .limit(OBJECT_EVENTS_MAX)
        )
    )


def delete_expired_events(session: Session, *, retention_days: float, batch: int = 1000) -> int:
    """Deletes up to `batch` events older than the retention (deliveries go with them)."""
    cutoff = datetime.now(UTC) - timedelta(days=retention_days)
    expired = select(Event.id).where(Event.create_time < cutoff).limit(batch)
    result = session.execute(delete(Event).where(Event.id.in_(expired.scalar_subquery())))
    return int(result.rowcount or 0)  # type: ignore[attr-defined]
