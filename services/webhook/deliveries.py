"""Deliveries: claiming attempts, recording their outcomes, retries, dead letters, replay.

PostgreSQL is the source of truth for what is due. An attempt is claimed (committed) before the
HTTP request, with a lease; if the worker dies mid-request the lease runs out, the sweeper finds
the delivery due again, and the next attempt (a new job id) retries it. An outcome is recorded
only for the attempt that holds the delivery, so a stale or duplicate job changes nothing.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, or_, select, tuple_
from sqlalchemy.orm import Session

from services.common.errors import InvalidArgument
from services.common.pages import ANY_TIME, CreatedRange, PageTokens, Scope
from services.webhook import endpoints, events
from services.webhook.crypto import SecretBox
from services.webhook.dispatch import DueAttempt
from services.webhook.errors import DeliveryInProgress, DeliveryNotFound, EndpointNotEnabled
from services.webhook.job_ids import delivery_id_from
from services.webhook.models import DELIVERY_STATUSES, Delivery, DeliveryAttempt, Endpoint, Event
from services.webhook.sender import Outcome
from services.webhook.views import event_payload

LIVE_STATUSES = ("pending", "failing")
ERROR_CHARS_MAX = 500
LOST_ATTEMPT_ERROR = "worker lost during the attempt"
REPLAY_LIMIT_DEFAULT = 100
REPLAY_LIMIT_MAX = 1000


@dataclass(frozen=True)
class RetryPolicy:
    """The retry schedule and the limits around it, from the settings."""

    delays_s: tuple[float, ...]
    jitter_ratio: float
    retry_after_max_s: float
    disable_after_failing_s: float

    @property
    def attempts_max(self) -> int:
        """Attempts per round: the first plus one per delay."""
        return len(self.delays_s) + 1

    def delay_s(self, round_attempts: int, *, retry_after_s: float | None) -> float:
        """Seconds before the next attempt after `round_attempts` failed ones, with jitter.

        A receiver's `Retry-After` (capped) is honoured when it asks for longer.
        """
        base = self.delays_s[round_attempts - 1]
        jittered = base * (1 + random.uniform(-self.jitter_ratio, self.jitter_ratio))  # noqa: S311
        if retry_after_s is not None:
            jittered = max(jittered, min(retry_after_s, self.retry_after_max_s))
        return jittered


def parse_schedule(value: str) -> tuple[float, ...]:
    """`"5,300,1800"` as delays in seconds; ValueError when malformed or negative."""
    delays = tuple(float(part) for part in value.split(",") if part.strip())
    if not delays or any(delay < 0 for delay in delays):
        raise ValueError(f"not a retry schedule: {value!r}")
    return delays


@dataclass(frozen=True)
class Claim:
    """An attempt a worker now holds: what to send, where, signed with which secrets."""

    delivery_id: str
    attempt_number: int
    event_id: str
    url: str
    body: bytes
    secrets: list[str]
    # The trace the attempt belongs to (its event's), when tracing is on.
    traceparent: str | None = None


def _now() -> datetime:
    return datetime.now(UTC)


def _kill(delivery: Delivery, error: str, now: datetime) -> None:
    delivery.status = "dead"
    delivery.next_attempt_time = None
    delivery.lease_expire_time = None
    delivery.last_error = error[:ERROR_CHARS_MAX]
    delivery.update_time = now


def claim_attempts(
    session: Session,
    *,
    attempts: Sequence[tuple[str, int]],
    lease_s: float,
    policy: RetryPolicy,
    box: SecretBox,
) -> list[Claim]:
    """Takes each (delivery id, attempt number) that is due and unheld; skips the others.

    A batch's deliveries are read and locked in one statement (in id order, so two batches
    sharing deliveries cannot deadlock), their events in one, each endpoint's secrets once.
    """
    if not attempts:
        return []
    now = _now()
    wanted = dict(attempts)
    rows = session.scalars(
        select(Delivery).where(Delivery.id.in_(wanted)).order_by(Delivery.id).with_for_update()
    ).all()
    order = {delivery_id: index for index, (delivery_id, _) in enumerate(attempts)}
    due = [
        delivery
        # Sent in the order asked (oldest due first), though locked in id order.
        for delivery in sorted(rows, key=lambda d: order[d.id])
        if delivery.status in LIVE_STATUSES
        and delivery.attempt_count == wanted[delivery.id] - 1
        and delivery.next_attempt_time is not None
        and delivery.next_attempt_time <= now
        and (delivery.lease_expire_time is None or delivery.lease_expire_time <= now)
    ]
    lost_held = [d for d in due if d.lease_expire_time is not None]
    if lost_held:
        _declare_lost(session, lost_held, now=now)
    claimable: list[tuple[Delivery, Endpoint]] = []
    for delivery in due:
        if delivery.lease_expire_time is not None:
            # The previous attempt's worker vanished: that attempt failed without an answer.
            delivery.last_status_code, delivery.last_error = 0, LOST_ATTEMPT_ERROR
            delivery.lease_expire_time = None
            if delivery.round_attempts >= policy.attempts_max:
                _kill(delivery, LOST_ATTEMPT_ERROR, now)
                continue
        endpoint = session.get(Endpoint, delivery.endpoint_id)
        assert endpoint is not None
        if endpoint.delete_time is not None or endpoint.status != "enabled":
            _kill(
                delivery, "endpoint deleted" if endpoint.delete_time else "endpoint disabled", now
            )
            continue
        claimable.append((delivery, endpoint))
    events = {
        event.id: event
        for event in session.scalars(
            select(Event).where(Event.id.in_({d.event_id for d, _ in claimable}))
        )
    }
    # Before any change, so no autoflush splits the batch's updates and inserts.
    secrets = {
        endpoint_id: endpoints.active_secrets(session, endpoint_id=endpoint_id, box=box)
        for endpoint_id in {e.id for _, e in claimable}
    }
    claims = []
    for delivery, endpoint in claimable:
        attempt_number = wanted[delivery.id]
        delivery.attempt_count = attempt_number
        delivery.round_attempts += 1
        delivery.lease_expire_time = now + timedelta(seconds=lease_s)
        delivery.update_time = now
        session.add(
            DeliveryAttempt(
                delivery_id=delivery.id,
                attempt_number=attempt_number,
                start_time=now,
                duration_ms=None,
                status_code=0,
                response_body="",
                error="",
            )
        )
        event = events[delivery.event_id]
        claims.append(
            Claim(
                delivery_id=delivery.id,
                attempt_number=attempt_number,
                event_id=event.id,
                url=endpoint.url,
                body=json.dumps(event_payload(event), separators=(",", ":")).encode(),
                secrets=secrets[delivery.endpoint_id],
                traceparent=event.traceparent,
            )
        )
    session.flush()
    return claims


def _declare_lost(session: Session, held: list[Delivery], *, now: datetime) -> None:
    """Closes the open attempt of each delivery whose worker vanished mid-attempt."""
    lost = session.scalars(
        select(DeliveryAttempt).where(
            tuple_(DeliveryAttempt.delivery_id, DeliveryAttempt.attempt_number).in_(
                [(d.id, d.attempt_count) for d in held]
            )
        )
    ).all()
    for attempt in lost:
        if attempt.duration_ms is None:
            attempt.error = LOST_ATTEMPT_ERROR
            attempt.duration_ms = int((now - attempt.start_time).total_seconds() * 1000)


def release_claims(session: Session, *, claims: Sequence[Claim]) -> list[DueAttempt]:
    """Gives back claimed attempts that were never sent (the batch ran out of time).

    The attempt is forgotten as if never claimed, so it keeps its number and the retry
    schedule; returns those released, to be queued again.
    """
    if not claims:
        return []
    numbers = {claim.delivery_id: claim.attempt_number for claim in claims}
    rows = session.scalars(
        select(Delivery).where(Delivery.id.in_(numbers)).order_by(Delivery.id).with_for_update()
    ).all()
    held = [
        d
        for d in rows
        if d.status in LIVE_STATUSES
        and d.attempt_count == numbers[d.id]
        and d.lease_expire_time is not None
    ]
    if not held:
        return []
    session.execute(
        delete(DeliveryAttempt).where(
            tuple_(DeliveryAttempt.delivery_id, DeliveryAttempt.attempt_number).in_(
                [(d.id, d.attempt_count) for d in held]
            ),
            DeliveryAttempt.duration_ms.is_(None),
        )
    )
    for delivery in held:
        delivery.attempt_count -= 1
        delivery.round_attempts -= 1
        delivery.lease_expire_time = None
    session.flush()
    return [DueAttempt(d.id, d.attempt_count + 1, d.endpoint_id) for d in held]


def record_outcomes(
    session: Session,
    *,
    outcomes: Sequence[tuple[str, int, Outcome]],
    policy: RetryPolicy,
    event_bytes_max: int,
) -> list[DueAttempt]:
    """Logs each (delivery id, attempt number, outcome) and moves the delivery on.

    Returns the first attempts of any new event (an endpoint disabled on the way).
    """
    if not outcomes:
        return []
    now = _now()
    numbers = {delivery_id: number for delivery_id, number, _ in outcomes}
    rows = {
        d.id: d
        for d in session.scalars(
            select(Delivery).where(Delivery.id.in_(numbers)).order_by(Delivery.id).with_for_update()
        )
    }
    attempts = {
        (a.delivery_id, a.attempt_number): a
        for a in session.scalars(
            select(DeliveryAttempt).where(
                tuple_(DeliveryAttempt.delivery_id, DeliveryAttempt.attempt_number).in_(
                    list(numbers.items())
                )
            )
        )
    }
    # Held here: the session's identity map alone would let them go and load them again.
    endpoints_by_id = {
        e.id: e
        for e in session.scalars(
            select(Endpoint).where(Endpoint.id.in_({d.endpoint_id for d in rows.values()}))
        )
    }
    new: list[DueAttempt] = []
    locked: set[str] = set()
    for delivery_id, number, outcome in outcomes:
        delivery = rows.get(delivery_id)
        attempt = attempts.get((delivery_id, number))
        if delivery is None or attempt is None:
            continue
        new += _record(
            session,
            delivery=delivery,
            attempt=attempt,
            endpoint=endpoints_by_id[delivery.endpoint_id],
            outcome=outcome,
            policy=policy,
            event_bytes_max=event_bytes_max,
            now=now,
            locked=locked,
        )
    return new


def _lock(session: Session, endpoint: Endpoint, *, locked: set[str]) -> None:
    """Locks the endpoint for this transaction, reading it afresh (its failure streak changes)."""
    if endpoint.id not in locked:
        session.refresh(endpoint, with_for_update=True)
        locked.add(endpoint.id)


def _record(
    session: Session,
    *,
    delivery: Delivery,
    attempt: DeliveryAttempt,
    endpoint: Endpoint,
    outcome: Outcome,
    policy: RetryPolicy,
    event_bytes_max: int,
    now: datetime,
    locked: set[str],
) -> list[DueAttempt]:
    attempt.duration_ms = outcome.duration_ms
    attempt.status_code = outcome.status_code
    attempt.response_body = outcome.body
    attempt.error = outcome.error[:ERROR_CHARS_MAX]
    if delivery.attempt_count != attempt.attempt_number or delivery.status not in LIVE_STATUSES:
        return []  # declared lost and taken over, or finished meanwhile: history only
    delivery.last_status_code = outcome.status_code
    delivery.last_error = outcome.error[:ERROR_CHARS_MAX]
    delivery.lease_expire_time = None
    delivery.update_time = now
    # The endpoint was read without a lock: a success to a healthy endpoint changes nothing on
    # it, so batches to one endpoint do not queue on its row. It is locked (and read afresh)
    # before its failure streak changes.
    if outcome.delivered:
        delivery.status, delivery.next_attempt_time = "delivered", None
        if endpoint.failing_since is not None:
            _lock(session, endpoint, locked=locked)
            endpoint.failing_since = None
        return []
    _lock(session, endpoint, locked=locked)
    if outcome.status_code == 410:
        _kill(delivery, "410 Gone: endpoint disabled", now)
        return endpoints.disable_endpoint(
            session, endpoint=endpoint, reason="gone", bytes_max=event_bytes_max
        )
    if endpoint.failing_since is None:
        endpoint.failing_since = now
    if (now - endpoint.failing_since).total_seconds() >= policy.disable_after_failing_s:
        _kill(delivery, f"{outcome.error}; endpoint disabled after failing too long", now)
        return endpoints.disable_endpoint(
            session, endpoint=endpoint, reason="failing", bytes_max=event_bytes_max
        )
    if delivery.round_attempts >= policy.attempts_max:
        _kill(delivery, outcome.error, now)
        return []
    delivery.status = "failing"
    delivery.next_attempt_time = now + timedelta(
        seconds=policy.delay_s(delivery.round_attempts, retry_after_s=outcome.retry_after_s)
    )
    return []


def due_attempts(session: Session, *, limit: int) -> list[DueAttempt]:
    """The next attempt of each delivery due now that no worker holds."""
    now = _now()
    rows = session.execute(
        select(Delivery.id, Delivery.attempt_count, Delivery.endpoint_id)
        .where(
            Delivery.status.in_(LIVE_STATUSES),
            Delivery.next_attempt_time <= now,
            or_(Delivery.lease_expire_time.is_(None), Delivery.lease_expire_time <= now),
        )
        .order_by(Delivery.next_attempt_time)
        .limit(limit)
    ).all()
    return [
        DueAttempt(delivery_id, count + 1, endpoint_id) for delivery_id, count, endpoint_id in rows
    ]


def get_delivery_or_raise(
    session: Session, *, delivery_or_job_id: str, owner: endpoints.Owner | None
) -> Delivery:
    """The delivery by id or job id (the owner's only, when given), or NOT_FOUND."""
    delivery_id = delivery_id_from(delivery_or_job_id)
    delivery = session.get(Delivery, delivery_id) if delivery_id else None
    if delivery is None or (
        owner is not None
        and (delivery.merchant_id != owner.merchant_id or delivery.livemode != owner.livemode)
    ):
        raise DeliveryNotFound(f"no such webhook delivery: {delivery_or_job_id[:80]}")
    return delivery


def replay(session: Session, *, delivery: Delivery) -> DueAttempt:
    """Makes a finished delivery due again with a fresh schedule; returns its next attempt."""
    session.refresh(delivery, with_for_update=True)
    if delivery.status in LIVE_STATUSES:
        raise DeliveryInProgress("the delivery is still pending or retrying")
    endpoint = session.get(Endpoint, delivery.endpoint_id)
    assert endpoint is not None
    if endpoint.delete_time is not None or endpoint.status != "enabled":
        raise EndpointNotEnabled("enable the endpoint before replaying its deliveries")
    now = _now()
    delivery.status = "pending"
    delivery.round_attempts = 0
    delivery.next_attempt_time = now
    delivery.lease_expire_time = None
    delivery.update_time = now
    session.flush()
    return DueAttempt(delivery.id, delivery.attempt_count + 1, delivery.endpoint_id)


def replay_limit(value: int) -> int:
    """The requested bulk-replay limit, defaulted, or INVALID_ARGUMENT when out of range."""
    if value == 0:
        return REPLAY_LIMIT_DEFAULT
    if not 1 <= value <= REPLAY_LIMIT_MAX:
        raise InvalidArgument.field("limit", f"must be between 1 and {REPLAY_LIMIT_MAX}")
    return value


def replay_many(
    session: Session,
    *,
    endpoint_id: str,
    merchant_id: str,
    livemode: bool | None,
    since: datetime | None,
    include_delivered: bool,
    limit: int,
) -> list[DueAttempt]:
    """Replays finished deliveries matching the filter (enabled endpoints only), oldest first."""
    statuses = ("dead", "delivered") if include_delivered else ("dead",)
    query = (
        select(Delivery)
        .join(Endpoint, Endpoint.id == Delivery.endpoint_id)
        .where(
            Delivery.status.in_(statuses),
            Endpoint.status == "enabled",
            Endpoint.delete_time.is_(None),
        )
    )
    if endpoint_id:
        query = query.where(Delivery.endpoint_id == endpoint_id)
    if merchant_id:
        query = query.where(Delivery.merchant_id == merchant_id)
    if livemode is not None:
        query = query.where(Delivery.livemode == livemode)
    if since is not None:
        query = query.where(Delivery.create_time >= since)
    rows = session.scalars(
        query.order_by(Delivery.create_time, Delivery.id)
        .limit(limit)
        .with_for_update(of=Delivery, skip_locked=True)
    ).all()
    now = _now()
    replayed = []
    for delivery in rows:
        delivery.status = "pending"
        delivery.round_attempts = 0
        delivery.next_attempt_time = now
        delivery.lease_expire_time = None
        delivery.update_time = now
        replayed.append(DueAttempt(delivery.id, delivery.attempt_count + 1, delivery.endpoint_id))
    session.flush()
    return replayed


def check_status_filter(status: str) -> None:
    """INVALID_ARGUMENT unless `status` is empty or a delivery status."""
    if status and status not in DELIVERY_STATUSES:
        raise InvalidArgument.field("status", f"must be one of {', '.join(DELIVERY_STATUSES)}")


def list_for_endpoint(
    session: Session,
    *,
    tokens: PageTokens,
    endpoint_id: str,
    status: str,
    page_size: int,
    page_token: str,
    created: CreatedRange = ANY_TIME,
) -> tuple[list[Delivery], str]:
    """One page of an endpoint's deliveries, newest first."""
    check_status_filter(status)
    scope: Scope = {"endpoint_id": endpoint_id, "status": status, **created.scope()}
    query = select(Delivery).where(Delivery.endpoint_id == endpoint_id)
    if status:
        query = query.where(Delivery.status == status)
    query = query.where(*created.where(Delivery.create_time))
    after = tokens.open_after(page_token, list_name="endpoint_deliveries", scope=scope)
    if after is not None:
        query = query.where(tuple_(Delivery.create_time, Delivery.id) < tuple_(*after))
    rows = list(
        session.scalars(
            query.order_by(Delivery.create_time.desc(), Delivery.id.desc()).limit(page_size + 1)
        )
    )
    if len(rows) <= page_size:
        return rows, ""
    rows = rows[:page_size]
    return rows, tokens.seal_after(
        rows[-1].create_time, rows[-1].id, list_name="endpoint_deliveries", scope=scope
    )


def list_failed(
    session: Session,
    *,
    tokens: PageTokens,
    merchant_id: str,
    include_failing: bool,
    page_size: int,
    page_token: str,
) -> tuple[list[Delivery], str]:
    """One page of dead (and optionally failing) deliveries, most recently changed first."""
    scope: Scope = {"merchant_id": merchant_id, "include_failing": include_failing}
    statuses = ("dead", "failing") if include_failing else ("dead",)
    query = select(Delivery).where(Delivery.status.in_(statuses))
    if merchant_id:
        query = query.where(Delivery.merchant_id == merchant_id)
    after = tokens.open_after(page_token, list_name="failed_deliveries", scope=scope)
    if after is not None:
        query = query.where(tuple_(Delivery.update_time, Delivery.id) < tuple_(*after))
    rows = list(
        session.scalars(
            query.order_by(Delivery.update_time.desc(), Delivery.id.desc()).limit(page_size + 1)
        )
    )
    if len(rows) <= page_size:
        return rows, ""
    rows = rows[:page_size]
    return rows, tokens.seal_after(
        rows[-1].update_time, rows[-1].id, list_name="failed_deliveries", scope=scope
    )


def stats(
    session: Session,
    *,
    merchant_id: str,
    livemode: bool | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
) -> dict[str, int]:
    """Deliveries counted by status: of one merchant, one mode, created in [start, end)."""
    query = select(Delivery.status, func.count()).group_by(Delivery.status)
    if merchant_id:
        query = query.where(Delivery.merchant_id == merchant_id)
    if livemode is not None:
        query = query.where(Delivery.livemode == livemode)
    if start is not None:
        query = query.where(Delivery.create_time >= start)
    if end is not None:
        query = query.where(Delivery.create_time < end)
    counts = {status: 0 for status in DELIVERY_STATUSES}
    for status, count in session.execute(query).all():
        counts[status] = int(count)
    return counts


def list_attempts(session: Session, *, delivery_id: str) -> list[DeliveryAttempt]:
    """A delivery's attempts, oldest first."""
    return list(
        session.scalars(
            select(DeliveryAttempt)
            .where(DeliveryAttempt.delivery_id == delivery_id)
            .order_by(DeliveryAttempt.attempt_number)
        )
    )


def context_of(session: Session, deliveries: list[Delivery]) -> dict[str, tuple[str, str]]:
    """Event type and endpoint URL of each delivery, by delivery id, in two queries."""
    event_ids = {d.event_id for d in deliveries}
    endpoint_ids = {d.endpoint_id for d in deliveries}
    types = dict(
        session.execute(select(Event.id, Event.type).where(Event.id.in_(event_ids))).tuples().all()
    )
    urls = dict(
        session.execute(select(Endpoint.id, Endpoint.url).where(Endpoint.id.in_(endpoint_ids)))
        .tuples()
        .all()
    )
    return {d.id: (types.get(d.event_id, ""), urls.get(d.endpoint_id, "")) for d in deliveries}


def resend_event(
    session: Session, *, event_id: str, endpoint_id: str, owner: endpoints.Owner
) -> list[DueAttempt]:
    """Replays the owner's event's finished deliveries (to one endpoint, when given).

    Those in progress are left to finish; those to disabled or deleted endpoints are skipped
    (unless the one endpoint was asked for: EndpointNotEnabled). NOT_FOUND when the event is
    not the owner's, or was never delivered to the endpoint asked for.
    """
    query = select(Delivery).where(
        Delivery.event_id == event_id,
        Delivery.merchant_id == owner.merchant_id,
        Delivery.livemode == owner.livemode,
    )
    if endpoint_id:
        query = query.where(Delivery.endpoint_id == endpoint_id)
    rows = session.scalars(query.order_by(Delivery.create_time, Delivery.id)).all()
    if endpoint_id and not rows:
        raise DeliveryNotFound(
            f"event {event_id[:80]} was never delivered to endpoint {endpoint_id[:80]}"
        )
    due = []
    for delivery in rows:
        try:
            due.append(replay(session, delivery=delivery))
        except (DeliveryInProgress, EndpointNotEnabled):
            if endpoint_id:
                raise
    return due


def send_test_event(
    session: Session,
    *,
    owner: endpoints.Owner,
    endpoint_id: str,
    event_type: str,
    obj: dict[str, Any],
) -> tuple[Delivery, DueAttempt]:
    """A test event of `event_type` (a catalog type) to the owner's endpoint only, due now.

    NOT_FOUND for another merchant's (or mode's) endpoint; EndpointNotEnabled when disabled.
    """
    endpoint = endpoints.get_endpoint_or_raise(session, owner=owner, endpoint_id=endpoint_id)
    if endpoint.status != "enabled":
        raise EndpointNotEnabled("enable the endpoint before sending it a test event")
    _, attempt = events.add_test_event(session, endpoint=endpoint, event_type=event_type, obj=obj)
    delivery = session.get(Delivery, attempt.delivery_id)
    assert delivery is not None
    return delivery, attempt
