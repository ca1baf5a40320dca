"""Events: publishing (idempotent by id, fanned out to matching endpoints), reading, retention."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import delete, select, text, tuple_
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.exc import DataError
from sqlalchemy.orm import Session

from services.common.errors import DomainError, InvalidArgument
from services.common.ids import has_prefix, new_id
from services.common.pages import ANY_TIME, CreatedRange, PageTokens, Scope
from services.webhook.dispatch import DueAttempt
from services.webhook.errors import EventNotFound, EventNotStorable, EventTooLarge
from services.webhook.models import Delivery, Endpoint, Event

logger = logging.getLogger(__name__)

EVENT_TYPE_PATTERN = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*){1,4}$")
EVENT_TYPE_CHARS_MAX = 100
MERCHANT_ID_CHARS_MAX = 40
OBJECT_ID_CHARS_MAX = 64
OBJECT_EVENTS_MAX = 1000
# The events table's id column is this wide.
EVENT_ID_CHARS_MAX = 64
# Events in one PublishEvents call: one transaction, bounded like every batch.
PUBLISH_BATCH_MAX = 500


@dataclass(frozen=True)
class Published:
    """An event after publishing, and the first attempts of the deliveries this call created.

    Empty on a repeat.
    """

    event: Event
    first_attempts: list[DueAttempt]


@dataclass(frozen=True)
class EventDraft:
    """An event as its publisher sends it, before it is checked and stored."""

    event_id: str
    merchant_id: str
    event_type: str
    livemode: bool
    obj: dict[str, Any]
    create_time: datetime | None
    # The trace its deliveries continue, when tracing is on.
    traceparent: str | None = None


def validate_event_type(value: str, *, field: str) -> None:
    """INVALID_ARGUMENT unless `value` looks like `payment.succeeded`."""
    if len(value) > EVENT_TYPE_CHARS_MAX or not EVENT_TYPE_PATTERN.match(value):
        raise InvalidArgument.field(field, "must be a dotted lower-case event type")


def _has_nul(value: Any) -> bool:
    """Whether a JSON value holds a NUL character anywhere, which PostgreSQL's jsonb refuses."""
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_has_nul(key) or _has_nul(item) for key, item in value.items())
    if isinstance(value, list):
        return any(_has_nul(item) for item in value)
    return False


def validate_event(draft: EventDraft, *, bytes_max: int) -> None:
    """INVALID_ARGUMENT (or EVENT_TOO_LARGE) unless the event can be stored as it is."""
    if not has_prefix(draft.event_id, "evt") or len(draft.event_id) > EVENT_ID_CHARS_MAX:
        raise InvalidArgument.field("id", "must be an event id (evt_...)")
    if not draft.merchant_id or len(draft.merchant_id) > MERCHANT_ID_CHARS_MAX:
        raise InvalidArgument.field("merchant_id", "is required")
    validate_event_type(draft.event_type, field="type")
    if not draft.obj:
        raise InvalidArgument.field("object", "is required")
    object_id = draft.obj.get("id", "")
    if not isinstance(object_id, str) or len(object_id) > OBJECT_ID_CHARS_MAX:
        raise InvalidArgument.field("object.id", "must be a string id")
    size = len(json.dumps(draft.obj, separators=(",", ":")).encode())
    if size > bytes_max:
        raise EventTooLarge(
            f"the event's object is {size} bytes; the limit is {bytes_max}",
            metadata={"bytes_max": str(bytes_max)},
        )
    if _has_nul(draft.obj):
        raise InvalidArgument.field("object", "must not contain NUL characters")


def publish_events(
    session: Session, drafts: Sequence[EventDraft], *, bytes_max: int
) -> list[Published | DomainError]:
    """Stores each event and its deliveries, or says why not; repeats change nothing.

    Every event is checked before anything is written, so a refused event (returned in its
    place) leaves the others alone. The valid ones are written together, a few statements for
    the whole batch; should PostgreSQL still refuse a value, the batch is written again one
    event per savepoint, and only that event is refused. An id repeated in `drafts` is stored
    once, as its first valid occurrence; the later ones are repeats.
    """
    if not 0 < len(drafts) <= PUBLISH_BATCH_MAX:
        raise InvalidArgument.field("events", f"must hold 1 to {PUBLISH_BATCH_MAX} events")
    refusals: dict[int, DomainError] = {}
    valid: dict[str, EventDraft] = {}
    for index, draft in enumerate(drafts):
        try:
            validate_event(draft, bytes_max=bytes_max)
        except DomainError as error:
            refusals[index] = error
            continue
        valid.setdefault(draft.event_id, draft)
    stored: dict[str, Published | DomainError] = {}
    if valid:
        try:
            with session.begin_nested():
                stored.update(_store(session, list(valid.values())))
        except DataError:
            logger.warning("an event of a batch was refused by the database; one at a time")
            for draft in valid.values():
                stored[draft.event_id] = _store_alone(session, draft)
    results: list[Published | DomainError] = []
    for index, draft in enumerate(drafts):
        if index in refusals:
            results.append(refusals[index])
            continue
        result = stored[draft.event_id]
        if isinstance(result, Published) and valid[draft.event_id] is not draft:
            result = Published(result.event, [])
        results.append(result)
    return results


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
    draft = EventDraft(event_id, merchant_id, event_type, livemode, obj, create_time)
    (result,) = publish_events(session, [draft], bytes_max=bytes_max)
    if isinstance(result, DomainError):
        raise result
    return result


def _store_alone(session: Session, draft: EventDraft) -> Published | DomainError:
    """Stores one checked event under a savepoint; the database's refusal becomes an error."""
    try:
        with session.begin_nested():
            return _store(session, [draft])[draft.event_id]
    except DataError:
        logger.warning("event %s refused by the database", draft.event_id, exc_info=True)
        return EventNotStorable(f"event {draft.event_id} cannot be stored as sent")


def _store(session: Session, drafts: list[EventDraft]) -> dict[str, Published]:
    """Inserts checked events (distinct ids) unless their id exists, and fans the new ones out."""
    now = datetime.now(UTC)
    inserted = list(
        session.scalars(
            insert(Event).on_conflict_do_nothing(index_elements=[Event.id]).returning(Event),
            [
                {
                    "id": draft.event_id,
                    "merchant_id": draft.merchant_id,
                    "livemode": draft.livemode,
                    "type": draft.event_type,
                    "object_id": draft.obj.get("id", ""),
                    "data": draft.obj,
                    "create_time": draft.create_time or now,
                    "traceparent": draft.traceparent,
                }
                for draft in drafts
            ],
        )
    )
    deliveries = fan_out(session, inserted)
    published = {event.id: Published(event, deliveries[event.id]) for event in inserted}
    repeats = [draft.event_id for draft in drafts if draft.event_id not in published]
    if repeats:
        for event in session.scalars(select(Event).where(Event.id.in_(repeats))):
            published[event.id] = Published(event, [])
    assert len(published) == len(drafts)
    return published


def fan_out(session: Session, events: Sequence[Event]) -> dict[str, list[DueAttempt]]:
    """Creates a pending delivery of each event for each enabled endpoint subscribed to its type.

    Returns the new deliveries' first attempts by event id; one query and one insert for all.
    """
    created: dict[str, list[DueAttempt]] = {event.id: [] for event in events}
    merchant_ids = {event.merchant_id for event in events}
    if not merchant_ids:
        return created
    endpoints = session.scalars(
        select(Endpoint).where(
            Endpoint.merchant_id.in_(merchant_ids),
            Endpoint.status == "enabled",
            Endpoint.delete_time.is_(None),
        )
    ).all()
    by_owner: dict[tuple[str, bool], list[Endpoint]] = {}
    for endpoint in endpoints:
        by_owner.setdefault((endpoint.merchant_id, endpoint.livemode), []).append(endpoint)
    now = datetime.now(UTC)
    for event in events:
        for endpoint in by_owner.get((event.merchant_id, event.livemode), []):
            if "*" not in endpoint.enabled_events and event.type not in endpoint.enabled_events:
                continue
            created[event.id].append(add_delivery(session, event=event, endpoint=endpoint, now=now))
    session.flush()
    return created


def add_delivery(
    session: Session, *, event: Event, endpoint: Endpoint, now: datetime
) -> DueAttempt:
    """Adds a pending delivery of the event to the endpoint, due now; returns its first attempt.

    The delivery belongs to the endpoint's merchant and mode (a test event, test-mode, may go
    to a live endpoint).
    """
    delivery = Delivery(
        id=new_id("whd"),
        event_id=event.id,
        endpoint_id=endpoint.id,
        merchant_id=endpoint.merchant_id,
        livemode=endpoint.livemode,
        status="pending",
        attempt_count=0,
        round_attempts=0,
        next_attempt_time=now,
        create_time=now,
        update_time=now,
    )
    session.add(delivery)
    return DueAttempt(delivery.id, 1, endpoint.id, event.traceparent)


def add_test_event(
    session: Session, *, endpoint: Endpoint, event_type: str, obj: dict[str, Any]
) -> tuple[Event, DueAttempt]:
    """Stores a test event (test mode, the merchant's) and its one delivery, to `endpoint`.

    It fans out to no other endpoint; the caller checked the type and the endpoint.
    """
    now = datetime.now(UTC)
    event = Event(
        id=new_id("evt"),
        merchant_id=endpoint.merchant_id,
        livemode=False,
        type=event_type,
        object_id=obj.get("id", ""),
        data=obj,
        create_time=now,
    )
    session.add(event)
    session.flush()
    attempt = add_delivery(session, event=event, endpoint=endpoint, now=now)
    session.flush()
    return event, attempt


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
    tokens: PageTokens,
    merchant_id: str,
    livemode: bool,
    event_type: str,
    page_size: int,
    page_token: str,
    created: CreatedRange = ANY_TIME,
) -> tuple[list[Event], str]:
    """One page of the merchant's events, newest first, and the next page's token."""
    scope: Scope = {
        "merchant_id": merchant_id,
        "livemode": livemode,
        "type": event_type,
        **created.scope(),
    }
    if event_type:
        validate_event_type(event_type, field="type")
    query = select(Event).where(Event.merchant_id == merchant_id, Event.livemode == livemode)
    if event_type:
        query = query.where(Event.type == event_type)
    query = query.where(*created.where(Event.create_time))
    after = tokens.open_after(page_token, list_name="events", scope=scope)
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
    return rows, tokens.seal_after(
        rows[-1].create_time, rows[-1].id, list_name="events", scope=scope
    )


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


# Events a stream reads in one query.
STREAM_BATCH_MAX = 100
STREAM_CURSOR_LIST = "event_stream"


@dataclass(frozen=True, order=True)
class StreamPosition:
    """A place in a merchant's event stream: after the event (txid, event_id) in that order.

    Events are read in the order of the transactions that stored them, and only below the
    oldest transaction still running: every event there is committed (or never will be), so
    the stream never passes an event that a slow transaction commits later. ("" sorts first:
    (txid, "") is before every event of transaction txid.)
    """

    txid: int
    event_id: str


def _stream_horizon(session: Session) -> int:
    """The oldest transaction id still running: every transaction before it has finished."""
    horizon = session.scalar(text("SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint"))
    assert isinstance(horizon, int), horizon
    return horizon


def open_stream(
    session: Session, *, tokens: PageTokens, merchant_id: str, livemode: bool, cursor: str
) -> StreamPosition:
    """Where a stream starts: after `cursor`, or now (after every finished transaction)."""
    scope: Scope = {"merchant_id": merchant_id, "livemode": livemode}
    try:
        position = tokens.open(cursor, list_name=STREAM_CURSOR_LIST, scope=scope)
    except InvalidArgument:
        raise InvalidArgument.field(
            "cursor", "is not a cursor of this merchant's event stream in this mode"
        ) from None
    if position is None:
        return StreamPosition(_stream_horizon(session), "")
    txid, event_id = position
    assert isinstance(txid, int) and isinstance(event_id, str), position
    return StreamPosition(txid, event_id)


def seal_stream_position(
    position: StreamPosition, *, tokens: PageTokens, merchant_id: str, livemode: bool
) -> str:
    """The cursor a client resumes from (sealed: transaction ids tell platform-wide activity)."""
    return tokens.seal(
        [position.txid, position.event_id],
        list_name=STREAM_CURSOR_LIST,
        scope={"merchant_id": merchant_id, "livemode": livemode},
    )


def read_stream(
    session: Session,
    *,
    merchant_id: str,
    livemode: bool,
    types: Sequence[str],
    after: StreamPosition,
    limit: int = STREAM_BATCH_MAX,
) -> tuple[list[Event], StreamPosition]:
    """The merchant's next events after `after` (of `types`, when given), and the new position.

    When fewer than `limit` come back, every event below the horizon has been read, so the
    position moves up to the horizon: a quiet stream's next read starts there.
    """
    horizon = _stream_horizon(session)
    query = select(Event).where(
        Event.merchant_id == merchant_id,
        Event.livemode == livemode,
        Event.txid < horizon,
        tuple_(Event.txid, Event.id) > tuple_(after.txid, after.event_id),
    )
    if types:
        query = query.where(Event.type.in_(list(types)))
    rows = list(session.scalars(query.order_by(Event.txid, Event.id).limit(limit)))
    if len(rows) == limit:
        return rows, StreamPosition(rows[-1].txid, rows[-1].id)
    return rows, max(after, StreamPosition(horizon, ""))
